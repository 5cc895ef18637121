//! Steps on pools and servers: create, add slots, change state, smoke
//! test, start, delete, and the replacement budget. Stopping and
//! terminating live in `removal`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{self, StreamExt};

use crate::events::EventKind;
use crate::id::{ImageId, PoolId, ReleaseLabel, RoleName, ServerId};
use crate::model::{Pool, PoolState, ServerStatus, Slot, SlotState};
use crate::plan::NewSlot;
use crate::ports::{Check, ProbeTarget};
use crate::time::elapsed_between;

use super::error::StepError;
use super::guards;
use super::run::{new_stored, Deadline, Run};
use crate::records::BudgetCharge;

impl Run {
    pub(crate) async fn create_pool(
        &mut self,
        pool_id: &PoolId,
        role: &RoleName,
        release: &ReleaseLabel,
        image: &ImageId,
        size: usize,
        slots: u32,
    ) -> Result<(), StepError> {
        if let Some(existing) = self.snap.pool(pool_id) {
            if &existing.release == release && &existing.role == role {
                return Ok(());
            }
            return Err(StepError::Inconsistent(format!(
                "pool {pool_id} exists for release {} of role {}",
                existing.release, existing.role
            )));
        }
        let now = self.now();
        let op = self.plan.id.clone();
        let pool = Pool {
            id: pool_id.clone(),
            deployment: self.plan.deployment.clone(),
            environment: self.snap.deployment().environment.name.clone(),
            role: role.clone(),
            release: release.clone(),
            image: image.clone(),
            state: PoolState::Provisioning,
            size,
            created_at: now,
            created_by: op.clone(),
            slots: (0..slots)
                .map(|i| Slot::pending(&op, pool_id, i, None))
                .collect(),
            next_slot: slots,
            pruned_slots: 0,
            discarded: Vec::new(),
            lost: Vec::new(),
            last_live: None,
            left_live: None,
            history: Vec::new(),
        };
        self.snap.pools.insert(pool_id.clone(), new_stored(pool));
        let header = &mut self.snap.record.value;
        header.pools.push(pool_id.clone());
        header.next_pool_seq += 1;
        self.save(&[pool_id]).await?;
        Ok(())
    }

    pub(crate) async fn add_slots(
        &mut self,
        pool_id: &PoolId,
        slots: &[NewSlot],
    ) -> Result<(), StepError> {
        let op = self.plan.id.clone();
        let pool = self.pool_mut(pool_id)?;
        let mut changed = false;
        for new in slots {
            if pool.slot(new.index).is_some() || pool.was_pruned(new.index) {
                continue;
            }
            if new.index < pool.next_index() {
                return Err(StepError::Inconsistent(format!(
                    "slot {} of {pool_id} would reuse an index",
                    new.index
                )));
            }
            pool.slots
                .push(Slot::pending(&op, pool_id, new.index, new.replaces));
            changed = true;
        }
        if changed {
            self.save(&[pool_id]).await?;
        }
        Ok(())
    }

    pub(crate) async fn set_pool_state(
        &mut self,
        pool_id: &PoolId,
        to: PoolState,
    ) -> Result<(), StepError> {
        let now = self.now();
        if to == PoolState::Deleted && self.forgotten(pool_id) {
            return Ok(());
        }
        let current = self.pool(pool_id)?;
        if current.state == to {
            return Ok(());
        }
        if to == PoolState::Retired && current.state.is_rollback_candidate() {
            // Invariant 9, on the records we hold the lease over.
            let role = current.role.clone();
            let others = self
                .snap
                .pools_of(&role)
                .filter(|p| &p.id != pool_id && p.state.is_rollback_candidate())
                .count();
            if let Err(refusal) = guards::retention(others + 1, 1, self.plan.policy.retention.keep)
            {
                return Err(self.refused(refusal));
            }
        }
        let pool = self.pool_mut(pool_id)?;
        let from = pool.state;
        pool.transition(to, now)?;
        let remembers_launches = !pool.lost.is_empty();
        self.emit(EventKind::PoolStateChanged {
            pool: pool_id.clone(),
            from,
            to,
        });
        if to == PoolState::Deleted {
            // A deleted pool leaves the deployment's header (its history is
            // in the event log), and its record goes too unless it still
            // remembers launches whose servers may appear late.
            self.snap.record.value.pools.retain(|p| p != pool_id);
            if !remembers_launches {
                self.forget(pool_id);
                self.save(&[]).await?;
                return Ok(());
            }
        }
        self.save(&[pool_id]).await?;
        Ok(())
    }

    /// Smoke-tests the slots' servers directly. A failure means the release
    /// does not work: the step fails (no replacement).
    pub(crate) async fn verify(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
    ) -> Result<(), StepError> {
        let pool = self.pool(pool_id)?;
        let mut targets = Vec::new();
        for i in slots {
            let s = pool.slot(*i).ok_or_else(|| {
                StepError::Inconsistent(format!("slot {i} of pool {pool_id} does not exist"))
            })?;
            if s.verified {
                continue;
            }
            let (Some(server), Some(endpoint)) = (&s.server, s.endpoint) else {
                return Err(StepError::Inconsistent(format!(
                    "slot {i} of {pool_id} has no running server to smoke-test"
                )));
            };
            targets.push((
                *i,
                ProbeTarget {
                    server: server.clone(),
                    endpoint,
                    release: pool.release.clone(),
                    role: pool.role.clone(),
                },
            ));
        }
        if targets.is_empty() {
            // All verified before (a standby rolled back to): no change.
            return Ok(());
        }
        let probe = self.env.ports.probe.clone();
        let calls = self.calls.clone();
        let concurrency = self.plan.policy.provision.concurrency.max(1);
        let outcomes: Vec<_> = stream::iter(targets)
            .map(|(idx, target)| {
                let probe = probe.clone();
                let calls = calls.clone();
                async move {
                    let context = format!("smoke-testing {}", target.server);
                    let outcome = calls
                        .call(&context, || probe.check(&target, Check::Smoke))
                        .await;
                    (idx, target.server, outcome)
                }
            })
            .buffered(concurrency)
            .collect()
            .await;
        let mut failure = None;
        let mut events = Vec::new();
        let pool = self.pool_mut(pool_id)?;
        for (idx, server, outcome) in outcomes {
            match outcome {
                Ok(o) if o.passed => {
                    if let Some(s) = pool.slot_mut(idx) {
                        s.verified = true;
                    }
                    events.push(EventKind::ServerVerified {
                        pool: pool_id.clone(),
                        slot: idx,
                        server,
                    });
                }
                Ok(o) => {
                    failure.get_or_insert(StepError::CheckFailed {
                        server,
                        check: Check::Smoke,
                        detail: o.detail,
                    });
                }
                Err(StepError::Interrupted(i)) => return Err(StepError::Interrupted(i)),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        for e in events {
            self.emit(e);
        }
        self.save(&[pool_id]).await?;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(crate) async fn wait_status(
        &mut self,
        pool_id: &PoolId,
        servers: &[ServerId],
        want: fn(&ServerStatus) -> bool,
        what: &str,
    ) -> Result<BTreeMap<ServerId, crate::model::Server>, StepError> {
        let deadline = Deadline::after(self.plan.policy.provision.server_deadline);
        let max = self
            .env
            .ports
            .compute
            .capabilities()
            .max_describe_batch
            .max(1);
        loop {
            let mut seen = BTreeMap::new();
            for chunk in servers.chunks(max) {
                let compute = self.env.ports.compute.clone();
                for s in self
                    .call(&format!("describing servers of {pool_id}"), || {
                        compute.describe(chunk)
                    })
                    .await?
                {
                    seen.insert(s.id.clone(), s);
                }
            }
            let waiting: Vec<String> = servers
                .iter()
                .filter(|id| !seen.get(*id).is_some_and(|s| want(&s.status)))
                .map(|id| match seen.get(id) {
                    Some(s) => format!("{id} is {}", s.status),
                    None => format!("{id} is not visible"),
                })
                .collect();
            if waiting.is_empty() {
                return Ok(seen);
            }
            if let Some(err) = servers
                .iter()
                .filter_map(|id| seen.get(id))
                .find(|s| matches!(s.status, ServerStatus::Error { .. } | ServerStatus::Deleted))
            {
                return Err(StepError::Inconsistent(format!(
                    "{} is {} while waiting until {what}",
                    err.id, err.status
                )));
            }
            if deadline.passed() {
                return Err(deadline.timeout(format!("servers {what}: {}", waiting.join("; "))));
            }
            self.pause().await?;
        }
    }

    pub(crate) async fn start(&mut self, pool_id: &PoolId, slots: &[u32]) -> Result<(), StepError> {
        let targets: Vec<(u32, ServerId)> = self
            .running_servers(pool_id, slots, SlotState::Stopped)?
            .into_iter()
            .map(|(i, s)| (i, s.server))
            .collect();
        let servers: Vec<ServerId> = targets.iter().map(|(_, s)| s.clone()).collect();
        for server in &servers {
            let compute = self.env.ports.compute.clone();
            self.call(&format!("starting {server}"), || compute.start(server))
                .await?;
        }
        let seen = self
            .wait_status(pool_id, &servers, ServerStatus::is_active, "running")
            .await?;
        let port = self.role()?.port;
        {
            let pool = self.pool_mut(pool_id)?;
            let mut events = Vec::new();
            for (i, server) in &targets {
                if let Some(s) = pool.slot_mut(*i) {
                    s.state = SlotState::Running;
                    s.healthy = false;
                    if let Some(endpoint) = seen.get(server).and_then(|d| d.endpoint(port)) {
                        s.endpoint = Some(endpoint);
                    }
                    events.push(EventKind::ServerStarted {
                        pool: pool_id.clone(),
                        slot: *i,
                        server: server.clone(),
                    });
                }
            }
            for e in events {
                self.emit(e);
            }
        }
        self.save(&[pool_id]).await?;
        // Health, as after a launch; a server that does not come back is
        // replaced within the budget.
        let indices: Vec<u32> = slots.to_vec();
        self.launch(pool_id, &indices).await
    }

    pub(crate) async fn delete_pool(&mut self, pool_id: &PoolId) -> Result<(), StepError> {
        if self.forgotten(pool_id) {
            // Deleted before (a resumed step).
            return Ok(());
        }
        let pool = self.pool(pool_id)?;
        if pool.state == PoolState::Deleted {
            return Ok(());
        }
        let remaining: Vec<String> = pool
            .slots
            .iter()
            .filter(|s| {
                s.state.is_in_service() && !(s.state == SlotState::Pending && s.server.is_none())
            })
            .map(|s| format!("slot {} ({:?})", s.index, s.state))
            .chain(
                pool.discarded
                    .iter()
                    .filter(|d| !d.terminated)
                    .map(|d| format!("discarded {}", d.server)),
            )
            .collect();
        if !remaining.is_empty() {
            return Err(StepError::Inconsistent(format!(
                "pool {pool_id} still has servers: {}",
                remaining.join(", ")
            )));
        }
        self.set_pool_state(pool_id, PoolState::Deleted).await
    }

    /// Waits until the replacement-rate budget allows `count` more
    /// replacements, and charges them. The budget is the stricter of the
    /// plan's and the orchestrator's own (a plan made with a looser policy
    /// cannot bypass it); the charge is keyed by operation and step, so a
    /// step resumed after a crash does not charge twice. The wait is a
    /// safe point: an emergency pre-empts it.
    pub(crate) async fn await_replacement_budget(&mut self, count: usize) -> Result<(), StepError> {
        let plan = &self.plan.policy.refresh;
        let own = &self.env.budget;
        let max = plan.max_replacements.min(own.max_replacements);
        let window = plan.window.max(own.window);
        if count > max {
            return Err(StepError::Inconsistent(format!(
                "{count} replacements exceed the budget of {max} per {}",
                crate::time::human(window)
            )));
        }
        let step = self.current.map_or(0, |(i, _)| i);
        let operation = self.plan.id.clone();
        loop {
            let now = self.now();
            let header = &self.snap.record.value;
            if header
                .budget
                .iter()
                .any(|c| c.operation == operation && c.step == step)
            {
                return Ok(());
            }
            let recent: Vec<BudgetCharge> = header
                .budget
                .iter()
                .filter(|c| elapsed_between(c.at, now) < window)
                .cloned()
                .collect();
            let old: Vec<crate::time::Timestamp> = header
                .replacements
                .iter()
                .copied()
                .filter(|t| elapsed_between(*t, now) < window)
                .collect();
            let used = recent.iter().map(|c| c.count).sum::<usize>() + old.len();
            if used + count <= max {
                let header = &mut self.snap.record.value;
                header.budget = recent;
                header.replacements = old;
                header.budget.push(BudgetCharge {
                    at: now,
                    operation,
                    step,
                    count,
                });
                self.save(&[]).await?;
                return Ok(());
            }
            // The oldest charges free up first.
            let mut spent: Vec<(crate::time::Timestamp, usize)> = recent
                .iter()
                .map(|c| (c.at, c.count))
                .chain(old.iter().map(|t| (*t, 1)))
                .collect();
            spent.sort();
            let mut freed = 0;
            let mut frees_at = now;
            for (at, n) in spent {
                freed += n;
                frees_at = at;
                if used - freed + count <= max {
                    break;
                }
            }
            let wait = window
                .saturating_sub(elapsed_between(frees_at, now))
                .max(Duration::from_millis(1));
            self.emit(EventKind::RateLimited {
                wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            });
            self.save(&[]).await?;
            self.sleep(wait).await?;
        }
    }
}
