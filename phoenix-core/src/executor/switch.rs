//! The atomic cutover: stage the new pool on the balancer (checked by it,
//! taking no traffic), then move all traffic in one call once a fresh read
//! shows the staged members healthy and enough for the capacity floor.
//! The bake in between is the ordinary [`Step::Bake`](crate::plan::Step)
//! on staged members.

use std::collections::BTreeMap;

use crate::events::{EventKind, HookKind};
use crate::id::{PoolId, ServerId};
use crate::model::{Slot, SlotState, Traffic};
use crate::plan::SlotRef;
use crate::ports::{MemberHealth, MemberState, Target};

use super::error::StepError;
use super::guards::{self, MemberIndex, Subject};
use super::run::{Deadline, Run};

impl Run {
    /// The balancer targets of slots about to take traffic: each must run,
    /// be healthy and smoke-tested.
    pub(crate) fn targets_of(
        pool_id: &PoolId,
        slots: &[Slot],
    ) -> Result<Vec<(u32, Target)>, StepError> {
        slots
            .iter()
            .map(|s| {
                let (Some(server), Some(endpoint)) = (&s.server, s.endpoint) else {
                    return Err(StepError::Inconsistent(format!(
                        "slot {} of pool {pool_id} has no running server to attach",
                        s.index
                    )));
                };
                if s.state != SlotState::Running || !s.healthy || !s.verified {
                    return Err(StepError::Inconsistent(format!(
                        "refusing to attach {server} (slot {} of {pool_id}): it is not running, \
                         healthy and smoke-tested",
                        s.index
                    )));
                }
                Ok((
                    s.index,
                    Target {
                        server: server.clone(),
                        endpoint,
                    },
                ))
            })
            .collect()
    }

    /// Stages the slots' servers and waits until the balancer's checks
    /// pass (within the health timeout). A member that vanished from the
    /// staging area (a lost registration) is staged again.
    pub(crate) async fn stage(&mut self, pool_id: &PoolId, slots: &[u32]) -> Result<(), StepError> {
        if !self.lb.capabilities().stages {
            return Err(StepError::Inconsistent(format!(
                "the balancer of {} cannot stage members; plan a batched cutover",
                self.plan.role
            )));
        }
        let wanted = self.slots_of(pool_id, slots)?;
        let targets = Self::targets_of(pool_id, &wanted)?;
        let caps = self.lb.capabilities();
        let batch = caps.max_batch.max(1);
        // A member still draining from an earlier switch (a rollback soon
        // after a deploy) cannot be staged again on a balancer that drains
        // to the end: it is waited out, for as long as a drain may take.
        let policy = &self.plan.policy;
        let deadline = Deadline::after(if caps.reactivates_draining {
            policy.provision.health_timeout
        } else {
            policy.provision.health_timeout + policy.rollout.drain
        });
        loop {
            let members = self.members().await?;
            let index = MemberIndex::new(&members);
            let mut absent = Vec::new();
            let mut not_ready = Vec::new();
            for (slot, t) in &targets {
                match index.find(&t.server, Some(t.endpoint)) {
                    None => absent.push(t.clone()),
                    Some(m) if m.state == MemberState::Draining => {
                        if caps.reactivates_draining {
                            absent.push(t.clone());
                        }
                        not_ready.push(format!("{} (slot {slot}) is draining", t.server));
                    }
                    Some(m) if !m.checked_recently(caps.check_interval) => {
                        // Its checks stopped: staged again, they start over.
                        absent.push(t.clone());
                        not_ready.push(format!(
                            "{} was last checked {:?} ago",
                            t.server,
                            m.checked_ago.unwrap_or_default()
                        ));
                    }
                    Some(m) if m.health != MemberHealth::Healthy => {
                        not_ready.push(format!("{} is {:?}/{:?}", t.server, m.state, m.health));
                    }
                    Some(_) => {}
                }
            }
            for chunk in absent.chunks(batch) {
                let lb = self.lb.clone();
                let chunk = chunk.to_vec();
                self.call(
                    &format!("staging {} member(s) of {pool_id}", chunk.len()),
                    || lb.stage(&chunk),
                )
                .await?;
            }
            if absent.is_empty() && not_ready.is_empty() {
                return Ok(());
            }
            if deadline.passed() {
                let mut why = not_ready;
                why.extend(absent.iter().map(|t| format!("{} is not staged", t.server)));
                return Err(deadline.timeout(format!(
                    "staged members of {pool_id} healthy by the balancer's checks: {}",
                    why.join("; ")
                )));
            }
            self.pause().await?;
        }
    }

    /// Moves all traffic to the slots' servers and starts draining `away`
    /// in one balancer call, once the switch guard allows it on a fresh
    /// read taken after the hooks; a transient refusal (a staged member
    /// flapping) is asked again until the health timeout.
    pub(crate) async fn switch(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
        away: &[SlotRef],
        standby: bool,
    ) -> Result<(), StepError> {
        if standby && !self.lb.capabilities().keeps_standby {
            return Err(StepError::Inconsistent(format!(
                "the balancer of {} keeps no standby members; plan a switch that detaches",
                self.plan.role
            )));
        }
        let wanted = self.slots_of(pool_id, slots)?;
        let targets: Vec<Target> = Self::targets_of(pool_id, &wanted)?
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        let mut leaving: BTreeMap<PoolId, Vec<u32>> = BTreeMap::new();
        for r in away {
            leaving.entry(r.pool.clone()).or_default().push(r.slot);
        }
        let mut subjects = Vec::new();
        for (pool, idx) in &leaving {
            subjects.extend(self.slots_of(pool, idx)?.iter().filter_map(Subject::of));
        }
        self.run_hooks(HookKind::WarmUp, pool_id, slots).await?;
        let desired = self.role()?.desired;
        let floor = self.plan.policy.rollout.min_healthy.resolve(desired);
        let patience = Deadline::after(self.plan.policy.provision.health_timeout);
        let drain = self.plan.policy.rollout.drain;
        let retry = self.plan.policy.retry.clone();
        let interval = self.lb.capabilities().check_interval;
        let mut failures = 0;
        let present: Vec<ServerId> = 'attempt: loop {
            let read = self.guard_read().await?;
            let incoming = self.slots_of(pool_id, slots)?;
            let incoming: Vec<&Slot> = incoming.iter().collect();
            if let Err(refusal) =
                guards::may_switch(&incoming, &subjects, &read.primary, floor, interval)
            {
                if patience.passed() {
                    return Err(self.refused(refusal));
                }
                self.pause().await?;
                continue;
            }
            // The old pools' state moves out before they lose the traffic;
            // hooks take time, so the guard reads again after them.
            for (pool, idx) in &leaving {
                if self.hooks_due(HookKind::Drain, pool, idx)? {
                    self.run_hooks(HookKind::Drain, pool, idx).await?;
                    continue 'attempt;
                }
            }
            // Recorded before the call, as for an attach: a crash in
            // between leaves members recorded as serving that are staged,
            // which the resumed switch moves.
            {
                let pool = self.pool_mut(pool_id)?;
                for i in slots {
                    if let Some(s) = pool.slot_mut(*i) {
                        s.traffic = Traffic::Attached;
                        s.drained = false;
                        s.standby = false;
                    }
                }
            }
            self.save(&[pool_id]).await?;
            let present: Vec<ServerId> = subjects
                .iter()
                .filter(|s| read.primary.iter().any(|m| s.is(m)))
                .map(|s| s.server.clone())
                .collect();
            let lb = self.lb.clone();
            let (t, p) = (&targets, &present);
            let call = async move {
                if standby {
                    lb.swap_standby(t, p, drain).await
                } else {
                    lb.swap(t, p, drain).await
                }
            };
            match self
                .calls
                .once_fresh(
                    &format!(
                        "switching the traffic to {pool_id} ({} member(s) in, {} out)",
                        targets.len(),
                        present.len()
                    ),
                    read.taken_at,
                    self.plan.policy.calls.fresh_read,
                    call,
                )
                .await?
            {
                Some(Ok(())) => break present,
                None => continue,
                Some(Err(e)) if e.is_retryable() && failures < retry.max_retries => {
                    failures += 1;
                    let wait = retry.delay_after(failures, &e);
                    self.sleep(wait).await?;
                }
                Some(Err(e)) => {
                    return Err(StepError::port(
                        format!("switching the traffic to {pool_id}"),
                        e,
                    ))
                }
            }
        };
        let mut events = Vec::new();
        for s in &wanted {
            if let Some(server) = &s.server {
                events.push(EventKind::ServerAttached {
                    pool: pool_id.clone(),
                    slot: s.index,
                    server: server.clone(),
                });
            }
        }
        let pools: Vec<PoolId> = leaving.keys().cloned().collect();
        for (pool_id, idx) in &leaving {
            let pool = self.pool_mut(pool_id)?;
            for i in idx {
                if let Some(s) = pool.slot_mut(*i) {
                    let member = s.server.as_ref().is_some_and(|id| present.contains(id));
                    s.traffic = if member {
                        Traffic::Draining
                    } else {
                        Traffic::Out
                    };
                    s.standby = member && standby;
                    s.baked_at = None;
                    if let (Some(server), true) = (&s.server, member) {
                        events.push(EventKind::ServerDetached {
                            pool: pool_id.clone(),
                            slot: s.index,
                            server: server.clone(),
                        });
                    }
                }
            }
        }
        for e in events {
            self.emit(e);
        }
        let mut saved: Vec<&PoolId> = pools.iter().collect();
        saved.push(pool_id);
        self.save(&saved).await?;
        Ok(())
    }
}
