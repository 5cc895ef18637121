//! Steps that move traffic: attach, wait healthy, bake, detach with the
//! capacity guard, wait drained, and the final "done means done" check.
//! Each acts on a fresh read of the balancer, never on the records' view:
//! a member present but draining, disabled or in maintenance is not
//! attached, and is attached again.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::events::EventKind;
use crate::id::{PoolId, ReleaseLabel, RoleName, ServerId};
use crate::labels::keys;
use crate::model::{Slot, Traffic};
use crate::plan::SlotRef;
use crate::ports::{MemberHealth, MemberState, Target};

use super::error::StepError;
use super::guards::{self, Attribution, MemberIndex, Owner, Refusal, Subject};
use super::run::{Deadline, Run};

fn subjects(slots: &[Slot]) -> Vec<Subject> {
    slots.iter().filter_map(Subject::of).collect()
}

impl Run {
    /// The listed slots; pruned ones (terminated earlier, seen again by a
    /// resumed step) are skipped, unknown ones are an error.
    pub(crate) fn slots_of(&self, pool_id: &PoolId, slots: &[u32]) -> Result<Vec<Slot>, StepError> {
        let pool = self.pool(pool_id)?;
        slots
            .iter()
            .filter(|i| !pool.was_pruned(**i))
            .map(|i| {
                pool.slot(*i).cloned().ok_or_else(|| {
                    StepError::Inconsistent(format!("slot {i} of pool {pool_id} does not exist"))
                })
            })
            .collect()
    }

    pub(crate) fn refused(&mut self, refusal: Refusal) -> StepError {
        self.emit(EventKind::GuardRefused {
            invariant: refusal.invariant,
            detail: refusal.detail.clone(),
        });
        StepError::guard(refusal.invariant, refusal.detail)
    }

    pub(crate) async fn attach(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
    ) -> Result<(), StepError> {
        let wanted = self.slots_of(pool_id, slots)?;
        let targets = Self::targets_of(pool_id, &wanted)?;
        // Warm up before any traffic arrives; servers already members keep
        // what they have.
        self.run_hooks(crate::events::HookKind::WarmUp, pool_id, slots)
            .await?;
        // Recorded before the call: a crash in between leaves at worst a
        // recorded member that is not attached, which a detach tolerates
        // and the next attach (or reconcile) repairs.
        {
            let pool = self.pool_mut(pool_id)?;
            for i in slots {
                if let Some(s) = pool.slot_mut(*i) {
                    if s.traffic != Traffic::Attached {
                        s.baked_at = None;
                    }
                    s.traffic = Traffic::Attached;
                    s.drained = false;
                    s.standby = false;
                }
            }
        }
        self.save(&[pool_id]).await?;
        // The balancer's view decides: absent members are added, members
        // present but not active (left draining by a detach that failed
        // part-way, disabled, in maintenance) are activated again.
        let members = self.members().await?;
        let index = MemberIndex::new(&members);
        let needed: Vec<(u32, Target)> = targets
            .into_iter()
            .filter(|(_, t)| {
                index
                    .find(&t.server, Some(t.endpoint))
                    .is_none_or(|m| m.state != MemberState::Active)
            })
            .collect();
        let batch = self.lb.capabilities().max_batch.max(1);
        for chunk in needed.chunks(batch) {
            let lb = self.lb.clone();
            let chunk: Vec<Target> = chunk.iter().map(|(_, t)| t.clone()).collect();
            self.call(
                &format!("attaching {} member(s) of {pool_id}", chunk.len()),
                || lb.attach(&chunk),
            )
            .await?;
        }
        for (slot, t) in &needed {
            self.emit(EventKind::ServerAttached {
                pool: pool_id.clone(),
                slot: *slot,
                server: t.server.clone(),
            });
        }
        self.save(&[pool_id]).await?;
        Ok(())
    }

    pub(crate) async fn await_healthy(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
    ) -> Result<(), StepError> {
        let wanted = self.slots_of(pool_id, slots)?;
        let deadline = Deadline::after(self.plan.policy.provision.health_timeout);
        loop {
            let members = self.members().await?;
            let index = MemberIndex::new(&members);
            let not_ready: Vec<String> = wanted
                .iter()
                .filter_map(|s| {
                    let Some(server) = &s.server else {
                        return Some(format!("slot {} has no server", s.index));
                    };
                    match index.of_slot(s) {
                        Some(m) if m.is_serving_healthy() => None,
                        Some(m) => Some(format!("{server} is {:?}/{:?}", m.state, m.health)),
                        None => Some(format!("{server} is not a member")),
                    }
                })
                .collect();
            if not_ready.is_empty() {
                for s in &wanted {
                    if let Some(server) = &s.server {
                        self.emit(EventKind::ServerHealthy {
                            pool: pool_id.clone(),
                            slot: s.index,
                            server: server.clone(),
                        });
                    }
                }
                self.save(&[]).await?;
                return Ok(());
            }
            if deadline.passed() {
                return Err(deadline.timeout(format!(
                    "members of {pool_id} healthy behind the balancer: {}",
                    not_ready.join("; ")
                )));
            }
            self.pause().await?;
        }
    }

    pub(crate) async fn bake(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
        duration: Duration,
    ) -> Result<(), StepError> {
        let wanted = self.slots_of(pool_id, slots)?;
        if wanted.iter().any(|s| s.server.is_none()) {
            return Err(StepError::Inconsistent(format!(
                "some slots of {pool_id} to bake have no server"
            )));
        }
        let end = tokio::time::Instant::now() + duration;
        loop {
            let members = self.members_trusted().await?;
            let index = MemberIndex::new(&members);
            for s in &wanted {
                if let Some(server) = &s.server {
                    // A slot not yet serving bakes staged (an atomic
                    // cutover): present, not draining, passing the
                    // balancer's checks while it takes no traffic.
                    let ok = index.of_slot(s).is_some_and(|m| {
                        if s.traffic == Traffic::Attached {
                            m.is_serving_healthy()
                        } else {
                            m.health == MemberHealth::Healthy && m.state != MemberState::Draining
                        }
                    });
                    if !ok {
                        return Err(StepError::CheckFailed {
                            server: server.clone(),
                            check: crate::ports::Check::Health,
                            detail: format!("left healthy service during the bake of {pool_id}"),
                        });
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if now >= end {
                break;
            }
            self.sleep(self.poll_interval().min(end - now)).await?;
        }
        let at = self.now();
        let pool = self.pool_mut(pool_id)?;
        for i in slots {
            if let Some(s) = pool.slot_mut(*i) {
                s.baked_at = Some(at);
            }
        }
        self.save(&[pool_id]).await?;
        Ok(())
    }

    /// Takes members out once the capacity guard allows it. The guard runs
    /// on a fresh read immediately before every detach call (after the
    /// drain hooks, which may take minutes, and after every backoff); a
    /// transient refusal (a replacement flapping) is asked again for a
    /// while before it is final. With `standby`, the members leave the
    /// traffic but stay on the balancer under its checks.
    pub(crate) async fn detach(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
        replacements: &[SlotRef],
        standby: bool,
    ) -> Result<(), StepError> {
        if standby && !self.lb.capabilities().keeps_standby {
            return Err(StepError::Inconsistent(format!(
                "the balancer of {} keeps no standby members; plan a detach",
                self.plan.role
            )));
        }
        let leaving = self.slots_of(pool_id, slots)?;
        let servers = subjects(&leaving);
        let desired = self.role()?.desired;
        let floor = self.plan.policy.rollout.min_healthy.resolve(desired);
        let role = self.plan.role.clone();
        let patience = Deadline::after(self.plan.policy.provision.health_timeout);
        let drain = self.plan.policy.rollout.drain;
        let batch = self.lb.capabilities().max_batch.max(1);
        let retry = self.plan.policy.retry.clone();
        let mut failures = 0;
        let present: Vec<ServerId> = loop {
            let mut replacement_slots = Vec::with_capacity(replacements.len());
            for r in replacements {
                let slot = self.pool(&r.pool)?.slot(r.slot).cloned().ok_or_else(|| {
                    StepError::Inconsistent(format!(
                        "replacement slot {} of {} does not exist",
                        r.slot, r.pool
                    ))
                })?;
                replacement_slots.push(slot);
            }
            let replacement_refs: Vec<&Slot> = replacement_slots.iter().collect();
            let read = self.guard_read().await?;
            let roster = self.roster();
            if let Err(refusal) = guards::may_detach(
                &servers,
                &replacement_refs,
                &read.primary,
                floor,
                &roster,
                &role,
            ) {
                if patience.passed() {
                    return Err(self.refused(refusal));
                }
                self.pause().await?;
                continue;
            }
            // The state moves out before the server leaves; a blocking
            // failure keeps it serving. Hooks take time: read again after.
            if self.hooks_due(crate::events::HookKind::Drain, pool_id, slots)? {
                self.run_hooks(crate::events::HookKind::Drain, pool_id, slots)
                    .await?;
                continue;
            }
            let present: Vec<ServerId> = servers
                .iter()
                .filter(|s| read.primary.iter().any(|m| s.is(m)))
                .map(|s| s.server.clone())
                .collect();
            let mut failed = None;
            let mut aged = false;
            for chunk in present.chunks(batch) {
                let lb = self.lb.clone();
                let call = async move {
                    if standby {
                        lb.standby(chunk, drain).await
                    } else {
                        lb.detach(chunk, drain).await
                    }
                };
                match self
                    .calls
                    .once_fresh(
                        &format!("detaching {} member(s) of {pool_id}", chunk.len()),
                        read.taken_at,
                        self.plan.policy.calls.fresh_read,
                        call,
                    )
                    .await?
                {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                    None => {
                        aged = true;
                        break;
                    }
                }
            }
            if aged {
                // Earlier chunks took long: the floor is checked again on
                // a new read before the rest leave.
                continue;
            }
            match failed {
                None => break present,
                Some(e) if e.is_retryable() && failures < retry.max_retries => {
                    failures += 1;
                    let wait = retry.delay_after(failures, &e);
                    self.sleep(wait).await?;
                }
                Some(e) => {
                    return Err(StepError::port(
                        format!("detaching members of {pool_id}"),
                        e,
                    ))
                }
            }
        };
        let pool = self.pool_mut(pool_id)?;
        let mut events = Vec::new();
        for i in slots {
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
        for e in events {
            self.emit(e);
        }
        self.save(&[pool_id]).await?;
        Ok(())
    }

    pub(crate) async fn await_drained(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
    ) -> Result<(), StepError> {
        let wanted = self.slots_of(pool_id, slots)?;
        let servers = subjects(&wanted);
        let policy = &self.plan.policy;
        let deadline = Deadline::after(policy.rollout.drain * 2 + policy.rollout.progress_deadline);
        loop {
            let members = self.members_trusted().await?;
            let still: Vec<String> = members
                .iter()
                .filter(|m| servers.iter().any(|s| s.is(m)) && m.carries_traffic())
                .map(|m| m.to_string())
                .collect();
            if still.is_empty() {
                break;
            }
            if guards::any_active(&servers, &members) {
                return Err(StepError::Inconsistent(format!(
                    "members of {pool_id} are active again while draining: {}",
                    still.join("; ")
                )));
            }
            if deadline.passed() {
                return Err(deadline.timeout(format!("draining {}", still.join("; "))));
            }
            self.pause().await?;
        }
        let pool = self.pool_mut(pool_id)?;
        let mut events = Vec::new();
        for i in slots {
            if let Some(s) = pool.slot_mut(*i) {
                if s.traffic != Traffic::Out {
                    if let Some(server) = &s.server {
                        events.push(EventKind::ServerDrained {
                            pool: pool_id.clone(),
                            slot: s.index,
                            server: server.clone(),
                        });
                    }
                }
                s.traffic = Traffic::Out;
            }
        }
        for e in events {
            self.emit(e);
        }
        self.save(&[pool_id]).await?;
        Ok(())
    }

    pub(crate) async fn verify_serving(
        &mut self,
        role: &RoleName,
        release: &ReleaseLabel,
    ) -> Result<(), StepError> {
        if role != &self.plan.role {
            return Err(StepError::Inconsistent(format!(
                "plan for role {} cannot verify role {role}",
                self.plan.role
            )));
        }
        let members = self.members_trusted().await?;
        let roster = self.roster();
        // Members the records do not know: the cloud's labels tell a server
        // of another deployment sharing the balancer from one of ours that
        // nobody recorded.
        let unknown: Vec<ServerId> = members
            .iter()
            .filter(|m| m.state == MemberState::Active)
            .filter(|m| roster.attribute(m) == Attribution::Unknown)
            .map(|m| m.server.clone())
            .collect();
        let mut labels: BTreeMap<ServerId, crate::labels::Labels> = BTreeMap::new();
        let max = self
            .env
            .ports
            .compute
            .capabilities()
            .max_describe_batch
            .max(1);
        for chunk in unknown.chunks(max) {
            let compute = self.env.ports.compute.clone();
            for s in self
                .call("describing unrecorded balancer members", || {
                    compute.describe(chunk)
                })
                .await?
            {
                labels.insert(s.id.clone(), s.labels);
            }
        }
        let deployment = self.plan.deployment.clone();
        let verdict = guards::serving_release(&members, release, |m| match roster.attribute(m) {
            Attribution::Recorded(r) if &r.role == role => Owner::Release(r.release.clone()),
            Attribution::Recorded(r) => {
                Owner::Unattributed(format!("{} serves role {}", r.server, r.role))
            }
            Attribution::Conflict(why) => Owner::Unattributed(why),
            Attribution::Unknown => match labels.get(&m.server) {
                Some(l) if l.get(keys::DEPLOYMENT) == Some(deployment.as_str()) => {
                    Owner::Unattributed(format!(
                        "{} carries {deployment}'s labels but belongs to no recorded pool",
                        m.server
                    ))
                }
                Some(l) if l.get(keys::DEPLOYMENT).is_some() => Owner::Foreign,
                _ => Owner::Unattributed("belongs to no recorded pool".into()),
            },
        });
        match verdict {
            Ok(count) => {
                self.emit(EventKind::ServingVerified {
                    release: release.clone(),
                    members: count,
                });
                self.save(&[]).await?;
                Ok(())
            }
            Err(refusal) => Err(self.refused(refusal)),
        }
    }
}
