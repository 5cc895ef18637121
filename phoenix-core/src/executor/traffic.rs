//! Steps that move traffic: attach, wait healthy, bake, detach with the
//! capacity guard, wait drained, and the final "done means done" check.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::events::EventKind;
use crate::id::{PoolId, ReleaseLabel, RoleName, ServerId};
use crate::model::{Slot, SlotState, Traffic};
use crate::plan::SlotRef;
use crate::ports::{Member, Target};

use super::error::StepError;
use super::guards::{self, Refusal};
use super::run::{Deadline, Run};

fn servers_of(slots: &[&Slot]) -> Vec<ServerId> {
    slots.iter().filter_map(|s| s.server.clone()).collect()
}

impl Run {
    /// The listed slots; pruned ones (terminated earlier, seen again by a
    /// resumed step) are skipped, unknown ones are an error.
    fn slots_of(&self, pool_id: &PoolId, slots: &[u32]) -> Result<Vec<Slot>, StepError> {
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
        let mut targets = Vec::new();
        for s in &wanted {
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
            targets.push(Target {
                server: server.clone(),
                endpoint,
            });
        }
        // Warm up before any traffic arrives; servers already members keep
        // what they have.
        self.run_hooks(crate::events::HookKind::WarmUp, pool_id, slots)
            .await?;
        // Recorded before the call: a crash in between leaves at worst a
        // recorded member that is not attached, which a detach tolerates.
        {
            let pool = self.pool_mut(pool_id)?;
            for i in slots {
                if let Some(s) = pool.slot_mut(*i) {
                    s.traffic = Traffic::Attached;
                    s.baked_at = None;
                    s.drained = false;
                }
            }
        }
        self.save(&[pool_id]).await?;
        let members = self.members().await?;
        let missing: Vec<Target> = targets
            .into_iter()
            .filter(|t| !members.iter().any(|m| m.server == t.server))
            .collect();
        let batch = self.lb.capabilities().max_batch.max(1);
        for chunk in missing.chunks(batch) {
            let lb = self.lb.clone();
            self.call(
                &format!("attaching {} member(s) of {pool_id}", chunk.len()),
                || lb.attach(chunk),
            )
            .await?;
        }
        for s in &wanted {
            if let Some(server) = &s.server {
                self.emit(EventKind::ServerAttached {
                    pool: pool_id.clone(),
                    slot: s.index,
                    server: server.clone(),
                });
            }
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
        let refs: Vec<&Slot> = wanted.iter().collect();
        let servers = servers_of(&refs);
        let deadline = Deadline::after(self.plan.policy.provision.health_timeout);
        loop {
            let members = self.members().await?;
            let by_server: BTreeMap<&ServerId, &Member> =
                members.iter().map(|m| (&m.server, m)).collect();
            let not_ready: Vec<String> = servers
                .iter()
                .filter(|s| !by_server.get(s).is_some_and(|m| m.is_serving_healthy()))
                .map(|s| match by_server.get(s) {
                    Some(m) => format!("{s} is {:?}/{:?}", m.state, m.health),
                    None => format!("{s} is not a member"),
                })
                .collect();
            if not_ready.is_empty() && servers.len() == wanted.len() {
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
        let refs: Vec<&Slot> = wanted.iter().collect();
        let servers = servers_of(&refs);
        if servers.len() != wanted.len() {
            return Err(StepError::Inconsistent(format!(
                "some slots of {pool_id} to bake have no server"
            )));
        }
        let end = tokio::time::Instant::now() + duration;
        loop {
            let members = self.members().await?;
            for s in &servers {
                let healthy = members
                    .iter()
                    .any(|m| &m.server == s && m.is_serving_healthy());
                if !healthy {
                    return Err(StepError::CheckFailed {
                        server: s.clone(),
                        check: crate::ports::Check::Health,
                        detail: format!("left healthy service during the bake of {pool_id}"),
                    });
                }
            }
            let now = tokio::time::Instant::now();
            if now >= end {
                break;
            }
            tokio::time::sleep(self.poll_interval().min(end - now)).await;
            self.keep_alive().await?;
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

    pub(crate) async fn detach(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
        replacements: &[SlotRef],
    ) -> Result<(), StepError> {
        let leaving = self.slots_of(pool_id, slots)?;
        let leaving_refs: Vec<&Slot> = leaving.iter().collect();
        let servers = servers_of(&leaving_refs);
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
        let desired = self.role()?.desired;
        let floor = self.plan.policy.rollout.min_healthy.resolve(desired);
        // A transient flap should not fail a rollout: the guard is asked
        // again for a while, and refuses for good after that.
        let patience = Deadline::after(self.plan.policy.provision.health_timeout);
        let members = loop {
            let members = self.members_for_guard().await?;
            match guards::may_detach(&servers, &replacement_refs, &members, floor) {
                Ok(()) => break members,
                Err(refusal) if patience.passed() => return Err(self.refused(refusal)),
                Err(_) => self.pause().await?,
            }
        };
        // The state moves out before the server leaves; a blocking failure
        // keeps it serving.
        self.run_hooks(crate::events::HookKind::Drain, pool_id, slots)
            .await?;
        let present: Vec<ServerId> = servers
            .iter()
            .filter(|s| members.iter().any(|m| &m.server == *s))
            .cloned()
            .collect();
        let drain = self.plan.policy.rollout.drain;
        let batch = self.lb.capabilities().max_batch.max(1);
        for chunk in present.chunks(batch) {
            let lb = self.lb.clone();
            self.call(
                &format!("detaching {} member(s) of {pool_id}", chunk.len()),
                || lb.detach(chunk, drain),
            )
            .await?;
        }
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
                s.baked_at = None;
                if let Some(server) = &s.server {
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
        let refs: Vec<&Slot> = wanted.iter().collect();
        let servers = servers_of(&refs);
        let policy = &self.plan.policy;
        let deadline = Deadline::after(policy.rollout.drain * 2 + policy.rollout.progress_deadline);
        loop {
            let members = self.members().await?;
            let still: Vec<String> = members
                .iter()
                .filter(|m| servers.contains(&m.server) && m.carries_traffic())
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
        let members = self.members().await?;
        let snap = &self.snap;
        let verdict = guards::serving_release(&members, release, |server| {
            snap.owner_of(server).map(|(pool, _)| pool.release.clone())
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
