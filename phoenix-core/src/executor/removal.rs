//! Stopping and terminating servers behind invariant 1, and the steps that
//! do it: terminate slots, clean up discarded servers, terminate orphans.
//!
//! Every stop or terminate call is made right after a fresh read of every
//! balancer the deployment knows shows the server detached and drained; a
//! retried call reads again first (the read before a backoff is stale by
//! the time the call goes out).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::events::{EventKind, HookKind, Invariant};
use crate::id::{PoolId, ServerId};
use crate::labels::{keys, LabelSelector};
use crate::model::{DiscardedServer, LostLaunch, ServerStatus, SlotState, Traffic};
use crate::ports::{ErrorKind, PortError};
use crate::time::elapsed_between;

use super::error::{Interruption, StepError};
use super::guards::{self, Refusal, Subject};
use super::run::{Deadline, Run};

/// One server's removal: not sent (its read aged first), or its answer.
type Attempted = Option<Result<(), PortError>>;

/// Spreads the answer of one call over the servers it was for: a call
/// that failed as a whole failed for each of them, and a server the
/// answer leaves out is a bad answer, never a success.
fn spread(
    group: Vec<Subject>,
    answer: Option<Result<Vec<Result<(), PortError>>, PortError>>,
) -> Vec<(Subject, Attempted)> {
    match answer {
        None => group.into_iter().map(|s| (s, None)).collect(),
        Some(Err(e)) => group
            .into_iter()
            .map(|s| (s, Some(Err(e.for_another()))))
            .collect(),
        Some(Ok(results)) => {
            let mut results = results.into_iter();
            group
                .into_iter()
                .map(|s| {
                    let r = results.next().unwrap_or_else(|| {
                        Err(PortError::new(
                            format!("terminating {}", s.server),
                            ErrorKind::BadResponse("the batch answer left this server out".into()),
                        ))
                    });
                    (s, Some(r))
                })
                .collect()
        }
    }
}

/// What to do to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    Stop,
    Terminate,
}

impl Removal {
    fn verb(self) -> &'static str {
        match self {
            Self::Stop => "stopping",
            Self::Terminate => "terminating",
        }
    }
}

/// How a guarded removal went, server by server.
#[derive(Debug, Default)]
pub(crate) struct Removed {
    pub(crate) done: Vec<ServerId>,
    pub(crate) refused: Vec<(ServerId, Refusal)>,
    pub(crate) failed: Vec<(ServerId, PortError)>,
}

impl Run {
    /// Stops or terminates `targets`, each call right after a fresh read
    /// of every balancer shows its server not serving. A server still
    /// draining is waited for (up to the drain time); an active member is
    /// refused at once; a failed call is retried after a backoff and a new
    /// read.
    pub(crate) async fn remove_guarded(
        &mut self,
        action: Removal,
        targets: &[Subject],
    ) -> Result<Removed, StepError> {
        let mut out = Removed::default();
        let policy = self.plan.policy.clone();
        let deadline = Deadline::after(policy.rollout.drain + policy.provision.poll_interval * 2);
        let concurrency = policy.provision.concurrency.max(1);
        let mut attempts: BTreeMap<ServerId, usize> = BTreeMap::new();
        let mut pending: Vec<Subject> = self.located(targets).await?;
        while !pending.is_empty() {
            let guard_read = self.guard_read().await?;
            let (read, read_at) = (guard_read.all(), guard_read.taken_at);
            let fresh = policy.calls.fresh_read;
            let mut ready = Vec::new();
            let mut waiting = Vec::new();
            for s in pending.drain(..) {
                match guards::not_serving(std::slice::from_ref(&s), &read) {
                    Ok(()) => ready.push(s),
                    Err(refusal)
                        if guards::any_active(std::slice::from_ref(&s), &read)
                            || deadline.passed() =>
                    {
                        out.refused.push((s.server.clone(), refusal));
                    }
                    Err(_) => waiting.push(s),
                }
            }
            let compute = self.env.ports.compute.clone();
            let calls = self.calls.clone();
            // Terminations go out in batches where the provider takes them
            // (one EC2 call for many instances); a batch is one call, so
            // it goes out only while the read is fresh, like a single one.
            let batch = match action {
                Removal::Terminate => compute.capabilities().max_terminate_batch.max(1),
                Removal::Stop => 1,
            };
            let groups: Vec<Vec<Subject>> = ready.chunks(batch).map(<[Subject]>::to_vec).collect();
            let results: Vec<Vec<(Subject, Attempted)>> = stream::iter(groups)
                .map(|group| {
                    let compute = compute.clone();
                    let calls = calls.clone();
                    async move {
                        let ids: Vec<ServerId> = group.iter().map(|s| s.server.clone()).collect();
                        let context = match ids.as_slice() {
                            [one] => format!("{} {one}", action.verb()),
                            many => format!("{} {} servers", action.verb(), many.len()),
                        };
                        let call = async {
                            Ok::<_, PortError>(match (action, ids.as_slice()) {
                                (Removal::Stop, [one]) => vec![compute.stop(one).await],
                                (Removal::Terminate, [one]) => vec![compute.terminate(one).await],
                                (Removal::Stop, many) => {
                                    let mut out = Vec::with_capacity(many.len());
                                    for id in many {
                                        out.push(compute.stop(id).await);
                                    }
                                    out
                                }
                                (Removal::Terminate, many) => compute.terminate_many(many).await,
                            })
                        };
                        let r = calls.once_fresh(&context, read_at, fresh, call).await?;
                        Ok::<_, Interruption>(spread(group, r))
                    }
                })
                .buffered(concurrency)
                .try_collect()
                .await?;
            let results = results.into_iter().flatten();
            let mut wait = if waiting.is_empty() {
                Duration::ZERO
            } else {
                policy.provision.poll_interval
            };
            for (s, r) in results {
                match r {
                    // The read aged before this call could go out: it waits
                    // for the next read, which comes at once.
                    None => waiting.push(s),
                    Some(Ok(())) => out.done.push(s.server),
                    Some(Err(e)) => {
                        let n = attempts.entry(s.server.clone()).or_default();
                        if e.is_retryable() && *n < policy.retry.max_retries {
                            *n += 1;
                            wait = wait.max(policy.retry.delay_after(*n, &e));
                            waiting.push(s);
                        } else {
                            out.failed.push((s.server, e));
                        }
                    }
                }
            }
            pending = waiting;
            if !pending.is_empty() {
                self.sleep(wait).await?;
            }
        }
        Ok(out)
    }

    /// Reports refusals as events and turns the first into the step's
    /// error (`None` when nothing was refused).
    fn refusals(&mut self, refused: Vec<(ServerId, Refusal)>) -> Option<StepError> {
        let mut first = None;
        for (_, refusal) in refused {
            let e = self.refused(refusal);
            first.get_or_insert(e);
        }
        first
    }

    /// Finds the servers of slots whose launch answer was lost. "Not
    /// found" inside the provider's consistency window is unknown, not
    /// absent: the listing is repeated until the window has passed.
    /// Returns the server by token, and the slots still without one.
    async fn find_lost(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
    ) -> Result<BTreeMap<u32, ServerId>, StepError> {
        let window = self.lost_window();
        let mut found = BTreeMap::new();
        loop {
            let pool = self.pool(pool_id)?;
            let lost: Vec<(u32, String, Option<crate::time::Timestamp>)> = slots
                .iter()
                .filter_map(|i| pool.slot(*i))
                .filter(|s| s.server.is_none() && s.may_have_launched())
                .filter(|s| !found.contains_key(&s.index))
                .map(|s| (s.index, s.token.to_string(), s.requested_at))
                .collect();
            if lost.is_empty() {
                return Ok(found);
            }
            let selector =
                LabelSelector::deployment(&self.plan.deployment).with(keys::POOL, pool_id.as_str());
            let compute = self.env.ports.compute.clone();
            let listed = self
                .call(&format!("listing servers of pool {pool_id}"), || {
                    compute.list(&selector)
                })
                .await?;
            let by_token: BTreeMap<String, ServerId> = listed
                .into_iter()
                .filter(|s| s.status != ServerStatus::Deleted)
                .filter_map(|s| Some((s.labels.token()?.to_string(), s.id)))
                .collect();
            let now = self.now();
            let mut unsure = false;
            for (i, token, requested_at) in lost {
                if let Some(id) = by_token.get(&token) {
                    found.insert(i, id.clone());
                } else if requested_at.is_none_or(|t| elapsed_between(t, now) <= window) {
                    unsure = true;
                }
            }
            if !unsure {
                return Ok(found);
            }
            self.pause().await?;
        }
    }

    /// Waits out the consistency window of launches given up on after
    /// their token may have gone out (a payload that changed since it was
    /// sent): a server that shows up for one is discarded and terminated,
    /// so that no step ends while a server nobody holds may still appear.
    ///
    /// The pool is listed at least once after a token's window has
    /// passed: a server may have appeared after the last listing inside
    /// the window (or none was made, the step having ended first). A token
    /// that such a listing does not show was never made, as far as the
    /// provider's promise goes, and is forgotten.
    pub(crate) async fn settle_lost(&mut self, pool_id: &PoolId) -> Result<(), StepError> {
        let window = self.lost_window();
        loop {
            if self.pool(pool_id)?.lost.is_empty() {
                return Ok(());
            }
            let listed_at = self.now();
            let selector =
                LabelSelector::deployment(&self.plan.deployment).with(keys::POOL, pool_id.as_str());
            let compute = self.env.ports.compute.clone();
            let listed = self
                .call(&format!("listing servers of pool {pool_id}"), || {
                    compute.list(&selector)
                })
                .await?;
            let by_token: BTreeMap<String, ServerId> = listed
                .into_iter()
                .filter(|s| s.status != ServerStatus::Deleted)
                .filter_map(|s| Some((s.labels.token()?.to_string(), s.id)))
                .collect();
            // Open: the listing began inside the token's window (or when
            // it went out is unknown), so "not listed" proves nothing yet.
            let open = |l: &LostLaunch| {
                l.requested_at
                    .is_none_or(|t| elapsed_between(t, listed_at) <= window)
            };
            let pool = self.pool_mut(pool_id)?;
            let before = pool.lost.len();
            let mut late = Vec::new();
            pool.lost.retain(|l| match by_token.get(l.token.as_str()) {
                Some(server) => {
                    late.push((l.clone(), server.clone()));
                    false
                }
                None => open(l),
            });
            let changed = pool.lost.len() != before;
            let found = !late.is_empty();
            for (lost, server) in late {
                if !pool.owns(&server) {
                    pool.discarded.push(DiscardedServer {
                        server,
                        slot: lost.slot,
                        attempt: lost.attempt,
                        reason: "appeared after its launch was given up".into(),
                        terminated: false,
                        endpoint: None,
                    });
                }
            }
            let still_open = !pool.lost.is_empty();
            if changed {
                self.save(&[pool_id]).await?;
            }
            if found {
                self.terminate_discarded(pool_id).await?;
                continue;
            }
            if !still_open {
                return Ok(());
            }
            self.pause().await?;
        }
    }

    pub(crate) async fn terminate(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
    ) -> Result<(), StepError> {
        self.leave_standby(pool_id, slots).await?;
        self.settle_lost(pool_id).await?;
        let by_slot = self.find_lost(pool_id, slots).await?;
        let pool = self.pool(pool_id)?;
        let mut targets: Vec<(u32, Subject)> = Vec::new();
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
            let subject = Subject::of(s).or_else(|| {
                by_slot.get(i).map(|server| Subject {
                    server: server.clone(),
                    endpoint: None,
                })
            });
            if let Some(subject) = subject {
                targets.push((*i, subject));
            }
        }
        let targeted: Vec<u32> = targets.iter().map(|(i, _)| *i).collect();
        let subjects: Vec<Subject> = targets.iter().map(|(_, s)| s.clone()).collect();
        let mut removed = Removed::default();
        if !subjects.is_empty() {
            // Servers terminated without a detach first (a standby being
            // reaped) still hand their state over; the guard then reads
            // afresh, after the hooks.
            self.run_hooks(HookKind::Drain, pool_id, &targeted).await?;
            removed = self.remove_guarded(Removal::Terminate, &subjects).await?;
        }
        let mut events = Vec::new();
        let now = self.now();
        let pool = self.pool_mut(pool_id)?;
        for i in slots {
            let Some(s) = pool.slot_mut(*i) else { continue };
            if !s.state.is_in_service() {
                continue;
            }
            let target = targets.iter().find(|(t, _)| t == i).map(|(_, s)| &s.server);
            match target {
                Some(server) if removed.done.contains(server) => {
                    s.server = Some(server.clone());
                    events.push(EventKind::ServerTerminated {
                        pool: Some(pool_id.clone()),
                        slot: Some(*i),
                        server: server.clone(),
                    });
                }
                // Refused or failed: it stays recorded as it is.
                Some(_) => continue,
                None => {
                    if s.may_have_launched() {
                        // Not found once the window passed: if the provider
                        // breaks its window, the server still has a token
                        // the pool remembers.
                        let lost = LostLaunch {
                            slot: s.index,
                            attempt: s.attempt,
                            token: s.token.clone(),
                            requested_at: s.requested_at.or(Some(now)),
                        };
                        pool.lost.push(lost);
                        let Some(s) = pool.slot_mut(*i) else { continue };
                        s.state = SlotState::Terminated;
                        s.traffic = Traffic::Out;
                        s.healthy = false;
                        s.baked_at = None;
                        continue;
                    }
                }
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
        if let Some(e) = self.refusals(removed.refused) {
            return Err(e);
        }
        match removed.failed.into_iter().next() {
            Some((server, e)) => Err(StepError::port(format!("terminating {server}"), e)),
            None => Ok(()),
        }
    }

    /// Where the cloud says each server is now (those it lists with an
    /// address on the role's port), in batches the provider takes.
    async fn endpoints_of(
        &mut self,
        ids: &[ServerId],
    ) -> Result<BTreeMap<ServerId, std::net::SocketAddr>, StepError> {
        let port = self.role()?.port;
        let max = self
            .env
            .ports
            .compute
            .capabilities()
            .max_describe_batch
            .max(1);
        let mut endpoints = BTreeMap::new();
        for chunk in ids.chunks(max) {
            let compute = self.env.ports.compute.clone();
            for s in self
                .call("describing servers to remove", || compute.describe(chunk))
                .await?
            {
                if let Some(e) = s.endpoint(port) {
                    endpoints.insert(s.id.clone(), e);
                }
            }
        }
        Ok(endpoints)
    }

    /// The subjects with an endpoint each wherever the cloud knows one.
    /// A slot whose launch was cut short (a pre-empted or crashed launch
    /// step) never learned where its server runs, and a balancer may
    /// report that server under a stand-in id (a floating IP pointed at it
    /// by hand): without the endpoint the guard could not tell it serves.
    async fn located(&mut self, targets: &[Subject]) -> Result<Vec<Subject>, StepError> {
        let unknown: Vec<ServerId> = targets
            .iter()
            .filter(|s| s.endpoint.is_none())
            .map(|s| s.server.clone())
            .collect();
        if unknown.is_empty() {
            return Ok(targets.to_vec());
        }
        let endpoints = self.endpoints_of(&unknown).await?;
        Ok(targets
            .iter()
            .map(|s| Subject {
                server: s.server.clone(),
                endpoint: s.endpoint.or_else(|| endpoints.get(&s.server).copied()),
            })
            .collect())
    }

    /// Terminates the pool's discarded servers that are not serving (a
    /// fresh read of every balancer); those that cannot be terminated now
    /// stay recorded for a later clean-up.
    pub(crate) async fn terminate_discarded(&mut self, pool_id: &PoolId) -> Result<(), StepError> {
        let recorded: BTreeMap<ServerId, Option<std::net::SocketAddr>> = self
            .pool(pool_id)?
            .discarded
            .iter()
            .filter(|d| !d.terminated)
            .map(|d| (d.server.clone(), d.endpoint))
            .collect();
        let ids: Vec<ServerId> = recorded.keys().cloned().collect();
        if ids.is_empty() {
            return Ok(());
        }
        // A server given up on may have served before (an earlier
        // operation's server that failed since) and a balancer may still
        // point at it under another id (a floating IP moved by hand, a
        // stand-in id): the guard matches by endpoint too, so the cloud
        // is asked where each one is.
        let endpoints = self.endpoints_of(&ids).await?;
        let targets: Vec<Subject> = ids
            .into_iter()
            .map(|server| Subject {
                // Where the cloud says it is now, else where it ran (a
                // server the cloud no longer lists may still be pointed at).
                endpoint: endpoints
                    .get(&server)
                    .copied()
                    .or_else(|| recorded.get(&server).copied().flatten()),
                server,
            })
            .collect();
        let removed = self.remove_guarded(Removal::Terminate, &targets).await?;
        for (_, refusal) in removed.refused {
            self.emit(EventKind::GuardRefused {
                invariant: refusal.invariant,
                detail: refusal.detail,
            });
        }
        let pool = self.pool_mut(pool_id)?;
        let mut events = Vec::new();
        for d in pool.discarded.iter_mut() {
            if !d.terminated && removed.done.contains(&d.server) {
                d.terminated = true;
                events.push(EventKind::ServerTerminated {
                    pool: Some(pool_id.clone()),
                    slot: Some(d.slot),
                    server: d.server.clone(),
                });
            }
        }
        for e in events {
            self.emit(e);
        }
        self.save(&[pool_id]).await?;
        Ok(())
    }

    pub(crate) async fn clean_up_discarded(&mut self, pool_id: &PoolId) -> Result<(), StepError> {
        // A token given up on may still bring a server to discard.
        self.settle_lost(pool_id).await?;
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

    pub(crate) async fn terminate_orphans(
        &mut self,
        servers: &[ServerId],
    ) -> Result<(), StepError> {
        // Still orphans? We hold the lease, so the records are current.
        let orphans: Vec<Subject> = servers
            .iter()
            .filter(|s| self.snap.owner_of(s).is_none())
            .map(|s| Subject {
                server: s.clone(),
                endpoint: None,
            })
            .collect();
        let removed = self.remove_guarded(Removal::Terminate, &orphans).await?;
        let mut events = Vec::new();
        for server in &removed.done {
            events.push(EventKind::ServerTerminated {
                pool: None,
                slot: None,
                server: server.clone(),
            });
        }
        let mut refused = Vec::new();
        for (_, refusal) in removed.refused {
            events.push(EventKind::GuardRefused {
                invariant: Invariant::NoServingTermination,
                detail: refusal.detail.clone(),
            });
            refused.push(refusal.detail);
        }
        for e in events {
            self.emit(e);
        }
        self.save(&[]).await?;
        if let Some((server, e)) = removed.failed.into_iter().next() {
            return Err(StepError::port(format!("terminating orphan {server}"), e));
        }
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

    pub(crate) async fn stop(&mut self, pool_id: &PoolId, slots: &[u32]) -> Result<(), StepError> {
        if !self.env.ports.compute.capabilities().stop_start {
            return Err(StepError::Inconsistent(
                "this compute back end cannot stop servers".into(),
            ));
        }
        self.leave_standby(pool_id, slots).await?;
        let targets = self.running_servers(pool_id, slots, SlotState::Running)?;
        if targets.is_empty() {
            return Ok(());
        }
        let subjects: Vec<Subject> = targets.iter().map(|(_, s)| s.clone()).collect();
        let removed = self.remove_guarded(Removal::Stop, &subjects).await?;
        if let Some(e) = self.refusals(removed.refused) {
            return Err(e);
        }
        if let Some((server, e)) = removed.failed.into_iter().next() {
            return Err(StepError::port(format!("stopping {server}"), e));
        }
        let servers: Vec<ServerId> = subjects.iter().map(|s| s.server.clone()).collect();
        self.wait_status(
            pool_id,
            &servers,
            |s| matches!(s, ServerStatus::Stopped),
            "stopped",
        )
        .await?;
        let pool = self.pool_mut(pool_id)?;
        let mut events = Vec::new();
        for (i, subject) in targets {
            if let Some(s) = pool.slot_mut(i) {
                s.state = SlotState::Stopped;
                s.healthy = false;
                s.verified = false;
                s.traffic = Traffic::Out;
                events.push(EventKind::ServerStopped {
                    pool: pool_id.clone(),
                    slot: i,
                    server: subject.server,
                });
            }
        }
        for e in events {
            self.emit(e);
        }
        self.save(&[pool_id]).await?;
        Ok(())
    }

    /// The listed slots in `state` with a server.
    pub(crate) fn running_servers(
        &self,
        pool_id: &PoolId,
        slots: &[u32],
        state: SlotState,
    ) -> Result<Vec<(u32, Subject)>, StepError> {
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
                if let Some(subject) = Subject::of(s) {
                    out.push((*i, subject));
                }
            }
        }
        Ok(out)
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
        let max = self
            .env
            .ports
            .compute
            .capabilities()
            .max_describe_batch
            .max(1);
        let mut seen = Vec::new();
        for chunk in ids.chunks(max) {
            let compute = self.env.ports.compute.clone();
            seen.extend(
                self.call("describing servers recorded as missing", || {
                    compute.describe(chunk)
                })
                .await?,
            );
        }
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
}
