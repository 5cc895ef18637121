//! Hot standby members that stay on the balancer under its checks.
//!
//! A pool that leaves the traffic on a balancer that keeps standby members
//! stays there, taking nothing, while the balancer keeps checking it. A
//! rollback to it needs no re-check of its own when a fresh read of the
//! balancer shows every member passing checks that ran within the last
//! check interval: that is the fresh evidence invariant 2 asks for. A
//! member without it (checks stopped, failing, gone) leaves the balancer,
//! and its slot takes the ordinary path: checked directly, replaced if
//! dead, attached anew.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::id::{PoolId, ServerId};
use crate::model::{SlotState, Traffic};
use crate::ports::MemberState;

use super::error::StepError;
use super::guards::MemberIndex;
use super::run::Run;

impl Run {
    /// Of `slots`, the standby ones whose balancer member is fresh
    /// evidence of health (see [`Member::is_checked_standby`]): they need
    /// no re-check. The other standby slots leave the balancer here.
    ///
    /// [`Member::is_checked_standby`]: crate::ports::Member::is_checked_standby
    pub(crate) async fn trusted_standby(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
    ) -> Result<BTreeSet<u32>, StepError> {
        let pool = self.pool(pool_id)?;
        let standby: Vec<u32> = slots
            .iter()
            .filter_map(|i| pool.slot(*i))
            .filter(|s| s.standby && s.traffic == Traffic::Out)
            .map(|s| s.index)
            .collect();
        let mut trusted = BTreeSet::new();
        if standby.is_empty() {
            return Ok(trusted);
        }
        let caps = self.lb.capabilities();
        let interval = caps.check_interval.filter(|_| caps.keeps_standby);
        if let Some(interval) = interval {
            let members = self.members().await?;
            let index = MemberIndex::new(&members);
            let pool = self.pool(pool_id)?;
            for i in &standby {
                let Some(s) = pool.slot(*i) else { continue };
                let fresh = s.state == SlotState::Running
                    && s.verified
                    && index
                        .of_slot(s)
                        .is_some_and(|m| m.is_checked_standby(interval));
                if fresh {
                    trusted.insert(*i);
                }
            }
        }
        let untrusted: Vec<u32> = standby
            .into_iter()
            .filter(|i| !trusted.contains(i))
            .collect();
        self.leave_standby(pool_id, &untrusted).await?;
        Ok(trusted)
    }

    /// Takes the standby members of `slots` off the balancer (they carry
    /// no traffic: no drain) before their servers are stopped, terminated
    /// or checked anew. A member someone made active again is left alone:
    /// the removal guards refuse it.
    pub(crate) async fn leave_standby(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
    ) -> Result<(), StepError> {
        let pool = self.pool(pool_id)?;
        let wanted: Vec<(u32, ServerId)> = slots
            .iter()
            .filter_map(|i| pool.slot(*i))
            .filter(|s| s.standby)
            .filter_map(|s| Some((s.index, s.server.clone()?)))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let retry = self.plan.policy.retry.clone();
        let mut failures = 0;
        let cleared = loop {
            // A detach acts on a fresh read, like every detach: a member
            // someone made active since must not be taken out unseen.
            let read = self.guard_read().await?;
            let index = MemberIndex::new(&read.primary);
            let pool = self.pool(pool_id)?;
            let mut leaving = Vec::new();
            let mut cleared = Vec::new();
            for (i, server) in &wanted {
                let Some(s) = pool.slot(*i) else { continue };
                match index.of_slot(s) {
                    Some(m) if m.state == MemberState::Active => {}
                    Some(_) => {
                        leaving.push(server.clone());
                        cleared.push(*i);
                    }
                    None => cleared.push(*i),
                }
            }
            if leaving.is_empty() {
                break cleared;
            }
            let batch = self.lb.capabilities().max_batch.max(1);
            let more = leaving.len() > batch;
            leaving.truncate(batch);
            let lb = self.lb.clone();
            let call = lb.detach(&leaving, Duration::ZERO);
            match self
                .calls
                .once_fresh(
                    &format!(
                        "taking {} standby member(s) of {pool_id} off the balancer",
                        leaving.len()
                    ),
                    read.taken_at,
                    self.plan.policy.calls.fresh_read,
                    call,
                )
                .await?
            {
                // The rest go after a new read.
                Some(Ok(())) if more => continue,
                Some(Ok(())) => break cleared,
                None => continue,
                Some(Err(e)) if e.is_retryable() && failures < retry.max_retries => {
                    failures += 1;
                    let wait = retry.delay_after(failures, &e);
                    self.sleep(wait).await?;
                }
                Some(Err(e)) => {
                    return Err(StepError::port(
                        format!("taking standby members of {pool_id} off the balancer"),
                        e,
                    ))
                }
            }
        };
        let pool = self.pool_mut(pool_id)?;
        for i in cleared {
            if let Some(s) = pool.slot_mut(i) {
                s.standby = false;
            }
        }
        self.save(&[pool_id]).await?;
        Ok(())
    }
}
