//! Steps on pools and servers: create, add slots, change state, smoke
//! test, stop, start, terminate (behind invariant 1), clean up, delete,
//! the replacement budget, and reconcile's repairs.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{self, StreamExt};

use crate::events::{EventKind, Invariant};
use crate::id::{ImageId, PoolId, ReleaseLabel, RoleName, ServerId};
use crate::labels::{keys, LabelSelector};
use crate::model::{Pool, PoolState, ServerStatus, Slot, SlotState, Traffic};
use crate::plan::NewSlot;
use crate::ports::{Check, ProbeTarget};
use crate::time::elapsed_between;

use super::error::StepError;
use super::guards;
use super::run::{new_stored, Deadline, Run};

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
        self.emit(EventKind::PoolStateChanged {
            pool: pool_id.clone(),
            from,
            to,
        });
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
        let probe = self.env.ports.probe.clone();
        let retry = self.plan.policy.retry.clone();
        let concurrency = self.plan.policy.provision.concurrency.max(1);
        let outcomes: Vec<_> = stream::iter(targets)
            .map(|(idx, target)| {
                let probe = probe.clone();
                let retry = retry.clone();
                async move {
                    let outcome = retry.run(|| probe.check(&target, Check::Smoke)).await;
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
                Err(e) => {
                    failure.get_or_insert(StepError::port(format!("smoke-testing {server}"), e));
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

    /// Waits until a fresh balancer read shows none of `servers` serving;
    /// refuses at once if one is an active member (waiting will not help)
    /// and after the drain time if one still drains.
    async fn ensure_not_serving(&mut self, servers: &[ServerId]) -> Result<(), StepError> {
        let deadline = Deadline::after(
            self.plan.policy.rollout.drain + self.plan.policy.provision.poll_interval * 2,
        );
        loop {
            let members = self.members_for_guard().await?;
            match guards::not_serving(servers, &members) {
                Ok(()) => return Ok(()),
                Err(refusal) if guards::any_active(servers, &members) || deadline.passed() => {
                    return Err(self.refused(refusal))
                }
                Err(_) => self.pause().await?,
            }
        }
    }

    /// Finds the servers of requested slots whose launch answer was lost,
    /// so that nothing is left behind.
    async fn servers_by_token(
        &mut self,
        pool_id: &PoolId,
    ) -> Result<BTreeMap<String, ServerId>, StepError> {
        let selector =
            LabelSelector::deployment(&self.plan.deployment).with(keys::POOL, pool_id.as_str());
        let compute = self.env.ports.compute.clone();
        let found = self
            .call(&format!("listing servers of pool {pool_id}"), || {
                compute.list(&selector)
            })
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|s| Some((s.labels.token()?.to_string(), s.id)))
            .collect())
    }

    pub(crate) async fn terminate(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
    ) -> Result<(), StepError> {
        let pool = self.pool(pool_id)?;
        let lost_answers = slots.iter().any(|i| {
            pool.slot(*i)
                .is_some_and(|s| s.state == SlotState::Requested && s.server.is_none())
        });
        let by_token = if lost_answers {
            self.servers_by_token(pool_id).await?
        } else {
            BTreeMap::new()
        };
        let pool = self.pool(pool_id)?;
        let mut targets: Vec<(u32, ServerId)> = Vec::new();
        for i in slots {
            if pool.was_pruned(*i) {
                // Terminated before (a resumed step): nothing left to do.
                continue;
            }
            let s = pool.slot(*i).ok_or_else(|| {
                StepError::Inconsistent(format!("slot {i} of pool {pool_id} does not exist"))
            })?;
            if !s.state.is_in_service() {
                continue;
            }
            let server = s
                .server
                .clone()
                .or_else(|| by_token.get(s.token.as_str()).cloned());
            if let Some(server) = server {
                targets.push((*i, server));
            }
        }
        let servers: Vec<ServerId> = targets.iter().map(|(_, s)| s.clone()).collect();
        let targeted: Vec<u32> = targets.iter().map(|(i, _)| *i).collect();
        if !servers.is_empty() {
            // Invariant 1, against a fresh read.
            self.ensure_not_serving(&servers).await?;
            // Servers terminated without a detach first (a standby being
            // reaped) still hand their state over.
            self.run_hooks(crate::events::HookKind::Drain, pool_id, &targeted)
                .await?;
        }
        let compute = self.env.ports.compute.clone();
        let retry = self.plan.policy.retry.clone();
        let concurrency = self.plan.policy.provision.concurrency.max(1);
        let results: Vec<_> = stream::iter(targets)
            .map(|(idx, server)| {
                let compute = compute.clone();
                let retry = retry.clone();
                async move {
                    let r = retry.run(|| compute.terminate(&server)).await;
                    (idx, server, r)
                }
            })
            .buffered(concurrency)
            .collect()
            .await;
        let mut failure = None;
        let mut events = Vec::new();
        let pool = self.pool_mut(pool_id)?;
        let terminated: BTreeMap<u32, ServerId> = results
            .into_iter()
            .filter_map(|(idx, server, r)| match r {
                Ok(()) => Some((idx, server)),
                Err(e) => {
                    failure.get_or_insert(StepError::port(format!("terminating {server}"), e));
                    None
                }
            })
            .collect();
        for i in slots {
            let Some(s) = pool.slot_mut(*i) else { continue };
            if !s.state.is_in_service() {
                continue;
            }
            match terminated.get(i) {
                Some(server) => {
                    s.server = Some(server.clone());
                    events.push(EventKind::ServerTerminated {
                        pool: Some(pool_id.clone()),
                        slot: Some(*i),
                        server: server.clone(),
                    });
                }
                // Its termination failed: it stays recorded as it is.
                None if targeted.contains(i) => continue,
                // Never launched, or its launch left no server: nothing to end.
                None => {}
            }
            s.state = SlotState::Terminated;
            s.traffic = Traffic::Out;
            s.healthy = false;
            s.baked_at = None;
        }
        pool.prune_terminated();
        for e in events {
            self.emit(e);
        }
        self.save(&[pool_id]).await?;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(crate) async fn clean_up_discarded(&mut self, pool_id: &PoolId) -> Result<(), StepError> {
        self.terminate_discarded(pool_id).await?;
        let left: Vec<String> = self
            .pool(pool_id)?
            .discarded
            .iter()
            .filter(|d| !d.terminated)
            .map(|d| d.server.to_string())
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(StepError::Inconsistent(format!(
                "discarded servers of {pool_id} could not be terminated: {}",
                left.join(", ")
            )))
        }
    }

    async fn wait_status(
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

    fn running_servers(
        &self,
        pool_id: &PoolId,
        slots: &[u32],
        state: SlotState,
    ) -> Result<Vec<(u32, ServerId)>, StepError> {
        let pool = self.pool(pool_id)?;
        let mut out = Vec::new();
        for i in slots {
            if pool.was_pruned(*i) {
                continue;
            }
            let s = pool.slot(*i).ok_or_else(|| {
                StepError::Inconsistent(format!("slot {i} of pool {pool_id} does not exist"))
            })?;
            if s.state == state {
                if let Some(server) = &s.server {
                    out.push((*i, server.clone()));
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn stop(&mut self, pool_id: &PoolId, slots: &[u32]) -> Result<(), StepError> {
        if !self.env.ports.compute.capabilities().stop_start {
            return Err(StepError::Inconsistent(
                "this compute back end cannot stop servers".into(),
            ));
        }
        let targets = self.running_servers(pool_id, slots, SlotState::Running)?;
        let servers: Vec<ServerId> = targets.iter().map(|(_, s)| s.clone()).collect();
        if servers.is_empty() {
            return Ok(());
        }
        self.ensure_not_serving(&servers).await?;
        for server in &servers {
            let compute = self.env.ports.compute.clone();
            self.call(&format!("stopping {server}"), || compute.stop(server))
                .await?;
        }
        self.wait_status(
            pool_id,
            &servers,
            |s| matches!(s, ServerStatus::Stopped),
            "stopped",
        )
        .await?;
        let pool = self.pool_mut(pool_id)?;
        let mut events = Vec::new();
        for (i, server) in targets {
            if let Some(s) = pool.slot_mut(i) {
                s.state = SlotState::Stopped;
                s.healthy = false;
                s.verified = false;
                s.traffic = Traffic::Out;
                events.push(EventKind::ServerStopped {
                    pool: pool_id.clone(),
                    slot: i,
                    server,
                });
            }
        }
        for e in events {
            self.emit(e);
        }
        self.save(&[pool_id]).await?;
        Ok(())
    }

    pub(crate) async fn start(&mut self, pool_id: &PoolId, slots: &[u32]) -> Result<(), StepError> {
        let targets = self.running_servers(pool_id, slots, SlotState::Stopped)?;
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

    pub(crate) async fn await_replacement_budget(&mut self, count: usize) -> Result<(), StepError> {
        let budget = self.plan.policy.refresh.clone();
        if count > budget.max_replacements {
            return Err(StepError::Inconsistent(format!(
                "{count} replacements exceed the budget of {} per {}",
                budget.max_replacements,
                crate::time::human(budget.window)
            )));
        }
        loop {
            let now = self.now();
            let recent: Vec<crate::time::Timestamp> = self
                .snap
                .record
                .value
                .replacements
                .iter()
                .copied()
                .filter(|t| elapsed_between(*t, now) < budget.window)
                .collect();
            if recent.len() + count <= budget.max_replacements {
                let header = &mut self.snap.record.value;
                header.replacements = recent;
                header.replacements.extend(std::iter::repeat_n(now, count));
                self.save(&[]).await?;
                return Ok(());
            }
            // The oldest entries free up first.
            let mut sorted = recent.clone();
            sorted.sort();
            let must_expire = recent.len() + count - budget.max_replacements;
            let frees_at = sorted[must_expire - 1];
            let wait = budget
                .window
                .saturating_sub(elapsed_between(frees_at, now))
                .max(Duration::from_millis(1));
            self.emit(EventKind::RateLimited {
                wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            });
            self.save(&[]).await?;
            let mut left = wait;
            let chunk = (self.env.lease_ttl / 3).max(Duration::from_millis(1));
            while !left.is_zero() {
                let step = left.min(chunk);
                tokio::time::sleep(step).await;
                self.keep_alive().await?;
                left -= step;
            }
        }
    }

    pub(crate) async fn mark_missing(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
    ) -> Result<(), StepError> {
        let targets = {
            let pool = self.pool(pool_id)?;
            slots
                .iter()
                .filter_map(|i| pool.slot(*i))
                .filter(|s| s.state.is_in_service())
                .filter_map(|s| Some((s.index, s.server.clone()?)))
                .collect::<Vec<_>>()
        };
        let ids: Vec<ServerId> = targets.iter().map(|(_, s)| s.clone()).collect();
        let compute = self.env.ports.compute.clone();
        let seen = self
            .call("describing servers recorded as missing", || {
                compute.describe(&ids)
            })
            .await?;
        let pool = self.pool_mut(pool_id)?;
        let mut events = Vec::new();
        for (i, server) in targets {
            let present = seen
                .iter()
                .any(|s| s.id == server && s.status != ServerStatus::Deleted);
            if present {
                continue;
            }
            if let Some(s) = pool.slot_mut(i) {
                s.state = SlotState::Terminated;
                s.traffic = Traffic::Out;
                s.healthy = false;
                s.last_failure = Some("missing from the cloud".into());
                events.push(EventKind::ServerMissing {
                    pool: pool_id.clone(),
                    slot: i,
                    server,
                });
            }
        }
        for e in events {
            self.emit(e);
        }
        self.save(&[pool_id]).await?;
        Ok(())
    }

    pub(crate) async fn terminate_orphans(
        &mut self,
        servers: &[ServerId],
    ) -> Result<(), StepError> {
        let members = self.members_for_guard().await?;
        let mut refused = Vec::new();
        let mut events = Vec::new();
        for server in servers {
            // Still an orphan? We hold the lease, so the records are current.
            if self.snap.owner_of(server).is_some() {
                continue;
            }
            if let Err(refusal) = guards::not_serving(std::slice::from_ref(server), &members) {
                events.push(EventKind::GuardRefused {
                    invariant: Invariant::NoServingTermination,
                    detail: refusal.detail.clone(),
                });
                refused.push(refusal.detail);
                continue;
            }
            let compute = self.env.ports.compute.clone();
            self.call(&format!("terminating orphan {server}"), || {
                compute.terminate(server)
            })
            .await?;
            events.push(EventKind::ServerTerminated {
                pool: None,
                slot: None,
                server: server.clone(),
            });
        }
        for e in events {
            self.emit(e);
        }
        self.save(&[]).await?;
        if refused.is_empty() {
            Ok(())
        } else {
            Err(StepError::guard(
                Invariant::NoServingTermination,
                format!(
                    "orphans left running because they serve: {}",
                    refused.join("; ")
                ),
            ))
        }
    }
}
