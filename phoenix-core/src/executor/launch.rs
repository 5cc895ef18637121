//! The launch step: get every listed slot a running, healthy server,
//! replacing failed, stuck or vanished launches within the step's budget,
//! with idempotency tokens so that a retried or resumed launch never makes
//! a second server.
//!
//! A launch whose answer was lost is found by its token. Once the
//! provider's consistency window has passed without it, a provider that
//! de-duplicates by token gets the same token again with the very payload
//! it was first sent (rendered once per attempt; a payload rendered anew
//! after a crash is compared by fingerprint), and any other provider gets
//! a new attempt with a new token: the old token is remembered, so that a
//! server appearing later still is adopted or terminated, never left
//! running unowned.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt};

use crate::events::EventKind;
use crate::id::{IdempotencyToken, PoolId, ServerId};
use crate::labels::{keys, LabelSelector, Labels};
use crate::model::{DiscardedServer, LostLaunch, ServerStatus, SlotState, Traffic};
use crate::ports::{BootContext, Check, ErrorKind, LaunchRequest, PortError, ProbeTarget};
use crate::time::elapsed_between;

use super::error::StepError;
use super::run::{Deadline, Run};

struct PoolIdentity {
    deployment: crate::id::DeploymentId,
    environment: crate::id::EnvironmentName,
    role: crate::id::RoleName,
    release: crate::id::ReleaseLabel,
    image: crate::id::ImageId,
    id: PoolId,
}

/// Most launch requests rendered and in flight at once.
const LAUNCH_WINDOW: usize = 512;

/// A launch attempt given up.
struct Failure {
    slot: u32,
    server: Option<ServerId>,
    reason: String,
}

/// Grows whenever a slot gets further (a server created, running,
/// healthy) or starts a new attempt; a relaunch of the same attempt after
/// a lost answer does not count, so it cannot extend the deadline forever.
fn progress_score(pool: &crate::model::Pool, slots: &[u32]) -> u64 {
    slots
        .iter()
        .filter_map(|i| pool.slot(*i))
        .map(|s| {
            let stage = match s.state {
                SlotState::Booting => 1,
                SlotState::Running if s.healthy => 3,
                SlotState::Running => 2,
                _ => 0,
            };
            u64::from(s.attempt.saturating_sub(s.relaunches)) * 4 + stage
        })
        .sum()
}

/// What one window of pending slots needs to render.
struct Pending {
    index: u32,
    attempt: u32,
    token: IdempotencyToken,
    /// The fingerprint recorded for this token, if it was sent before.
    sent: Option<String>,
}

impl Run {
    pub(crate) async fn launch(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
    ) -> Result<(), StepError> {
        for idx in slots {
            if self.pool(pool_id)?.slot(*idx).is_none() {
                return Err(StepError::Inconsistent(format!(
                    "slot {idx} of pool {pool_id} does not exist"
                )));
            }
        }
        self.revalidate(pool_id, slots).await?;
        let result = self.launch_until_running(pool_id, slots).await;
        // Payloads hold secrets: none outlives the step.
        self.payloads.clear();
        // A token given up after it went out may still bring a server: the
        // step ends, however it ends, once none can (a step that failed
        // would otherwise leave it to a compensation that may never get
        // that far). A run that lost its lease or was pre-empted stops at
        // once; the next holder's steps settle it.
        if matches!(result, Err(StepError::Interrupted(_))) {
            return result;
        }
        let settled = self.settle_lost(pool_id).await;
        result.and(settled)
    }

    async fn launch_until_running(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
    ) -> Result<(), StepError> {
        let started = self.now();
        // The deadline is on progress (as Kubernetes' progressDeadlineSeconds):
        // replacing a stuck server takes its own deadline each time. The
        // step stays bounded because its replacements are bounded.
        let limit = self.plan.policy.rollout.progress_deadline;
        let mut deadline = Deadline::after(limit);
        let mut progress = progress_score(self.pool(pool_id)?, slots);
        loop {
            // What the step gave up on goes before its replacement is asked
            // for (a run that died between the two leaves it recorded but
            // running): each still counts against `max_surge`.
            if self.pool(pool_id)?.discarded.iter().any(|d| !d.terminated) {
                self.terminate_discarded(pool_id).await?;
            }
            let mut failures = Vec::new();
            self.request_pending(pool_id, slots, &mut failures).await?;
            self.settle_requested(pool_id, slots).await?;
            self.poll_booting(pool_id, slots, &mut failures).await?;
            self.probe_health(pool_id, slots, started, &mut failures)
                .await?;
            self.record_failures(pool_id, failures).await?;

            let pool = self.pool(pool_id)?;
            let done = slots.iter().all(|i| {
                pool.slot(*i)
                    .is_some_and(|s| s.state == SlotState::Running && s.healthy)
            });
            if done {
                break Ok(());
            }
            let now_score = progress_score(pool, slots);
            if now_score != progress {
                progress = now_score;
                deadline = Deadline::after(limit);
            }
            if deadline.passed() {
                let waiting: Vec<String> = slots
                    .iter()
                    .filter_map(|i| pool.slot(*i))
                    .filter(|s| !(s.state == SlotState::Running && s.healthy))
                    .map(|s| format!("slot {} {:?}", s.index, s.state))
                    .collect();
                break Err(deadline.timeout(format!(
                    "pool {pool_id} launch: still waiting for {}",
                    waiting.join(", ")
                )));
            }
            self.pause().await?;
        }
    }

    /// Renders and launches every pending slot, recording the intent
    /// (token, time, payload fingerprint) before the call. Slots go in
    /// windows so that rendered payloads (which hold secrets) of a
    /// ten-thousand-server pool are never all in memory at once.
    async fn request_pending(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
        failures: &mut Vec<Failure>,
    ) -> Result<(), StepError> {
        let pool = self.pool(pool_id)?;
        let pending: Vec<u32> = slots
            .iter()
            .copied()
            .filter(|i| pool.slot(*i).is_some_and(|s| s.state == SlotState::Pending))
            .collect();
        let window = (self.plan.policy.provision.concurrency.max(1)
            * self
                .env
                .ports
                .compute
                .capabilities()
                .max_launch_batch
                .max(1))
        .clamp(1, LAUNCH_WINDOW);
        for chunk in pending.chunks(window) {
            self.request_window(pool_id, chunk, failures).await?;
        }
        Ok(())
    }

    fn server_name(pool_id: &PoolId, index: u32, attempt: u32) -> String {
        if attempt == 0 {
            format!("{pool_id}-{index}")
        } else {
            format!("{pool_id}-{index}-r{attempt}")
        }
    }

    async fn request_window(
        &mut self,
        pool_id: &PoolId,
        pending: &[u32],
        failures: &mut Vec<Failure>,
    ) -> Result<(), StepError> {
        let pool = self.pool(pool_id)?;
        let caps = self.env.ports.compute.capabilities();
        let role = self.role()?.clone();
        // Only what rendering needs, not a copy of the whole pool.
        let wanted: Vec<Pending> = pending
            .iter()
            .filter_map(|i| {
                pool.slot(*i).map(|s| Pending {
                    index: *i,
                    attempt: s.attempt,
                    token: s.token.clone(),
                    sent: s.payload.clone(),
                })
            })
            .collect();
        let pool = PoolIdentity {
            deployment: pool.deployment.clone(),
            environment: pool.environment.clone(),
            role: pool.role.clone(),
            release: pool.release.clone(),
            image: pool.image.clone(),
            id: pool.id.clone(),
        };
        let mut requests = Vec::with_capacity(wanted.len());
        let mut fingerprints = BTreeMap::new();
        let mut changed = Vec::new();
        for w in &wanted {
            let name = Self::server_name(pool_id, w.index, w.attempt);
            let payload = match self.payloads.remove(w.token.as_str()) {
                Some(p) => p,
                None => {
                    let context = BootContext {
                        deployment: pool.deployment.clone(),
                        environment: pool.environment.clone(),
                        role: pool.role.clone(),
                        release: pool.release.clone(),
                        image: pool.image.clone(),
                        pool: pool.id.clone(),
                        server_name: name.clone(),
                        index: w.index,
                    };
                    let boot = self.env.ports.boot.clone();
                    self.call(&format!("rendering boot configuration for {name}"), || {
                        boot.render(&context, caps.boot_format)
                    })
                    .await?
                }
            };
            let fingerprint = payload.fingerprint();
            if w.sent.as_ref().is_some_and(|sent| sent != &fingerprint) {
                // The token went out with another payload (a secret rotated
                // since): a provider that de-duplicates would refuse it, one
                // that does not would make a second server.
                changed.push(w.index);
                continue;
            }
            fingerprints.insert(w.index, fingerprint);
            requests.push((
                w.index,
                LaunchRequest {
                    name,
                    image: pool.image.clone(),
                    flavor: role.flavor.clone(),
                    boot: payload,
                    labels: Labels::for_server(
                        &pool.deployment,
                        &pool.environment,
                        &pool.role,
                        &pool.release,
                        &pool.id,
                        w.index,
                        &w.token,
                    ),
                    token: w.token.clone(),
                },
            ));
        }
        for index in changed {
            self.give_up_token(
                pool_id,
                index,
                "its payload changed since its launch was sent".into(),
            )?;
        }
        let now = self.now();
        {
            let pool = self.pool_mut(pool_id)?;
            let mut events = Vec::new();
            for (idx, _) in &requests {
                if let Some(slot) = pool.slot_mut(*idx) {
                    slot.state = SlotState::Requested;
                    slot.requested_at = Some(now);
                    slot.payload = fingerprints.remove(idx);
                    events.push(EventKind::LaunchRequested {
                        pool: pool_id.clone(),
                        slot: *idx,
                        attempt: slot.attempt,
                        token: slot.token.clone(),
                    });
                }
            }
            for e in events {
                self.emit(e);
            }
        }
        self.save(&[pool_id]).await?;

        let compute = self.env.ports.compute.clone();
        let batch = caps.max_launch_batch.max(1);
        let concurrency = self.plan.policy.provision.concurrency.max(1);
        // Owned chunks: futures borrowing them would not be `Send` for
        // every lifetime, and callers spawn operations on multi-threaded
        // runtimes.
        let mut chunks: Vec<(Vec<u32>, Vec<LaunchRequest>)> = Vec::new();
        let mut rest = requests.into_iter().peekable();
        while rest.peek().is_some() {
            chunks.push(rest.by_ref().take(batch).unzip());
        }
        let calls = self.calls.clone();
        type Answer = Result<
            Result<Vec<Result<crate::model::Server, PortError>>, PortError>,
            super::error::Interruption,
        >;
        let answered: Vec<(Vec<u32>, Vec<LaunchRequest>, Answer)> = stream::iter(chunks)
            .map(|(indices, requests)| {
                let compute = compute.clone();
                let calls = calls.clone();
                async move {
                    let call = async { Ok(compute.launch(&requests).await) };
                    let r = calls.once("launching servers", call).await;
                    (indices, requests, r)
                }
            })
            .buffered(concurrency)
            .collect()
            .await;
        let mut longest_throttle = None;
        {
            let mut events = Vec::new();
            let mut keep = Vec::new();
            let pool = self.pool_mut(pool_id)?;
            for (indices, requests, answer) in answered {
                let n = indices.len();
                let results: Vec<Result<crate::model::Server, PortError>> = match answer {
                    Err(i) => return Err(StepError::Interrupted(i)),
                    // The call outlived its deadline: the outcome is unknown.
                    Ok(Err(e)) => (0..n)
                        .map(|_| Err(PortError::new(e.operation.clone(), e.kind.clone())))
                        .collect(),
                    Ok(Ok(results)) if results.len() == n => results,
                    // One answer per request is the contract; anything else
                    // cannot be matched to slots: the outcome is unknown,
                    // and tokens will tell.
                    Ok(Ok(results)) => (0..n)
                        .map(|_| {
                            Err(PortError::temporary(
                                "launching servers",
                                format!("{} answers to {n} requests", results.len()),
                            ))
                        })
                        .collect(),
                };
                for ((idx, request), result) in indices.into_iter().zip(requests).zip(results) {
                    let Some(slot) = pool.slot_mut(idx) else {
                        continue;
                    };
                    match result {
                        Ok(server) => {
                            events.push(EventKind::ServerLaunched {
                                pool: pool_id.clone(),
                                slot: idx,
                                server: server.id.clone(),
                            });
                            slot.server = Some(server.id);
                            slot.state = SlotState::Booting;
                        }
                        Err(e) => match &e.kind {
                            // Throttled: nothing was created; ask again
                            // later with the same token and payload.
                            ErrorKind::Throttled { retry_after } => {
                                slot.state = SlotState::Pending;
                                longest_throttle = longest_throttle.max(*retry_after);
                                keep.push(request);
                            }
                            // Unknown outcome: stays requested; found by its
                            // token, or sent again after the window.
                            ErrorKind::Temporary(_) => keep.push(request),
                            _ => failures.push(Failure {
                                slot: idx,
                                server: None,
                                reason: format!("launch refused: {}", e.chain()),
                            }),
                        },
                    }
                }
            }
            for r in keep {
                self.payloads.insert(r.token.to_string(), r.boot);
            }
            for e in events {
                self.emit(e);
            }
        }
        self.save(&[pool_id]).await?;
        if let Some(wait) = longest_throttle {
            self.sleep(wait).await?;
        }
        Ok(())
    }

    /// How long after a launch request went out its server may still
    /// appear: the call may take effect as late as its timeout (a slow
    /// answer, an answer lost, a crash mid-call), and the provider lists a
    /// server within its consistency window of making it. Measured from
    /// the request alone, a slow call's server would show after the
    /// launch was given up as never made.
    pub(crate) fn lost_window(&self) -> std::time::Duration {
        self.env.ports.compute.capabilities().consistency_window + self.plan.policy.calls.timeout
    }

    /// Moves a slot whose token cannot be sent again to a new attempt with
    /// a new token, remembering the old one (its server may still appear).
    /// Nothing failed, so the replacement budget is not charged; the step
    /// stays bounded because such relaunches do not count as progress.
    fn give_up_token(
        &mut self,
        pool_id: &PoolId,
        index: u32,
        reason: String,
    ) -> Result<(), StepError> {
        let op = self.plan.id.clone();
        let Some(slot) = self.pool(pool_id)?.slot(index) else {
            return Ok(());
        };
        let lost = LostLaunch {
            slot: index,
            attempt: slot.attempt,
            token: slot.token.clone(),
            requested_at: slot.requested_at,
        };
        self.payloads.remove(lost.token.as_str());
        self.emit(EventKind::LaunchFailed {
            pool: pool_id.clone(),
            slot: index,
            attempt: lost.attempt,
            server: None,
            reason: format!("{reason}; launching again under a new token"),
        });
        let pool = self.pool_mut(pool_id)?;
        pool.lost.push(lost);
        if let Some(slot) = pool.slot_mut(index) {
            slot.next_attempt(&op, pool_id, reason);
            slot.relaunches += 1;
        }
        Ok(())
    }

    /// Settles requested slots whose launch answer was lost (a crash, a
    /// timeout) by their token labels, and servers that appear for tokens
    /// given up on: adopted when their slot still waits for a server,
    /// terminated otherwise.
    async fn settle_requested(&mut self, pool_id: &PoolId, slots: &[u32]) -> Result<(), StepError> {
        let pool = self.pool(pool_id)?;
        let requested: Vec<u32> = slots
            .iter()
            .copied()
            .filter(|i| {
                pool.slot(*i)
                    .is_some_and(|s| s.state == SlotState::Requested && s.server.is_none())
            })
            .collect();
        if requested.is_empty() && pool.lost.is_empty() {
            return Ok(());
        }
        let caps = self.env.ports.compute.capabilities();
        let lost_window = self.lost_window();
        let selector =
            LabelSelector::deployment(&self.plan.deployment).with(keys::POOL, pool_id.as_str());
        let compute = self.env.ports.compute.clone();
        let found = self
            .call(&format!("listing servers of pool {pool_id}"), || {
                compute.list(&selector)
            })
            .await?;
        let by_token: BTreeMap<String, ServerId> = found
            .into_iter()
            .filter(|s| s.status != ServerStatus::Deleted)
            .filter_map(|s| Some((s.labels.token()?.to_string(), s.id)))
            .collect();
        let now = self.now();
        let mut changed = false;
        let mut events = Vec::new();
        let mut give_up = Vec::new();
        let mut late_discarded = false;
        {
            let pool = self.pool_mut(pool_id)?;
            for idx in requested {
                let Some(slot) = pool.slot_mut(idx) else {
                    continue;
                };
                if let Some(server) = by_token.get(slot.token.as_str()) {
                    slot.server = Some(server.clone());
                    slot.state = SlotState::Booting;
                    events.push(EventKind::ServerLaunched {
                        pool: pool_id.clone(),
                        slot: idx,
                        server: server.clone(),
                    });
                    changed = true;
                    continue;
                }
                let waited = slot
                    .requested_at
                    .map_or(lost_window, |t| elapsed_between(t, now));
                if caps.idempotent_launch {
                    // The provider de-duplicates: the same token (with the
                    // same payload) is safe to send again.
                    slot.state = SlotState::Pending;
                    changed = true;
                } else if waited > lost_window {
                    give_up.push(idx);
                }
            }
            // Servers for tokens given up on, appearing late.
            let mut late = Vec::new();
            pool.lost.retain(|l| match by_token.get(l.token.as_str()) {
                Some(server) => {
                    late.push((l.clone(), server.clone()));
                    false
                }
                None => true,
            });
            for (lost, server) in late {
                changed = true;
                // Only a slot whose own token never went out takes it: a
                // token sent may still bring its server, which would then
                // belong to nobody.
                let adoptable = pool.slot(lost.slot).is_some_and(|s| {
                    s.state == SlotState::Pending
                        && s.server.is_none()
                        && s.traffic == Traffic::Out
                        && s.requested_at.is_none()
                });
                if adoptable && slots.contains(&lost.slot) {
                    if let Some(slot) = pool.slot_mut(lost.slot) {
                        slot.token = lost.token.clone();
                        slot.payload = None;
                        slot.server = Some(server.clone());
                        slot.state = SlotState::Booting;
                        slot.requested_at = lost.requested_at.or(Some(now));
                        events.push(EventKind::ServerLaunched {
                            pool: pool_id.clone(),
                            slot: lost.slot,
                            server,
                        });
                    }
                } else if pool.owns(&server) {
                    // Already known (adopted earlier under its token).
                } else {
                    pool.discarded.push(DiscardedServer {
                        server,
                        slot: lost.slot,
                        attempt: lost.attempt,
                        reason: "appeared after its launch was given up".into(),
                        terminated: false,
                        endpoint: None,
                    });
                    late_discarded = true;
                }
            }
        }
        if !give_up.is_empty() {
            changed = true;
        }
        for idx in give_up {
            self.give_up_token(
                pool_id,
                idx,
                format!(
                    "not visible {} after its launch (answer lost)",
                    crate::time::human(lost_window)
                ),
            )?;
        }
        for e in events {
            self.emit(e);
        }
        if changed {
            self.save(&[pool_id]).await?;
        }
        if late_discarded {
            self.terminate_discarded(pool_id).await?;
        }
        Ok(())
    }

    /// One describe call (per `max_describe_batch` ids) for every booting
    /// slot; moves them to running or records their failure.
    async fn poll_booting(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
        failures: &mut Vec<Failure>,
    ) -> Result<(), StepError> {
        let pool = self.pool(pool_id)?;
        let booting: Vec<(u32, ServerId)> = slots
            .iter()
            .filter_map(|i| pool.slot(*i))
            .filter(|s| s.state == SlotState::Booting)
            .filter_map(|s| Some((s.index, s.server.clone()?)))
            .collect();
        if booting.is_empty() {
            return Ok(());
        }
        let caps = self.env.ports.compute.capabilities();
        let ids: Vec<ServerId> = booting.iter().map(|(_, id)| id.clone()).collect();
        let mut seen = BTreeMap::new();
        for chunk in ids.chunks(caps.max_describe_batch.max(1)) {
            let compute = self.env.ports.compute.clone();
            let found = self
                .call("describing booting servers", || compute.describe(chunk))
                .await?;
            for s in found {
                seen.insert(s.id.clone(), s);
            }
        }
        let port = self.role()?.port;
        let policy = self.plan.policy.provision.clone();
        let now = self.now();
        let mut events = Vec::new();
        let mut changed = false;
        let pool = self.pool_mut(pool_id)?;
        for (idx, id) in booting {
            let Some(slot) = pool.slot_mut(idx) else {
                continue;
            };
            let waited = slot
                .requested_at
                .map_or(std::time::Duration::ZERO, |t| elapsed_between(t, now));
            match seen.get(&id) {
                Some(server) => match &server.status {
                    ServerStatus::Active => {
                        if let Some(endpoint) = server.endpoint(port) {
                            slot.state = SlotState::Running;
                            slot.endpoint = Some(endpoint);
                            // Age counts from when the server was first
                            // seen; a provider that reports a start as a
                            // new launch never makes a server younger.
                            let reported = server.launched_at.unwrap_or(now).min(now);
                            slot.launched_at =
                                Some(slot.launched_at.map_or(reported, |t| t.min(reported)));
                            events.push(EventKind::ServerActive {
                                pool: pool_id.clone(),
                                slot: idx,
                                server: id.clone(),
                            });
                            changed = true;
                        } else if waited > policy.server_deadline {
                            failures.push(Failure {
                                slot: idx,
                                server: Some(id),
                                reason: "active but without an address".into(),
                            });
                        }
                    }
                    ServerStatus::Building => {
                        if waited > policy.server_deadline {
                            failures.push(Failure {
                                slot: idx,
                                server: Some(id),
                                reason: format!(
                                    "stuck in BUILD for {}",
                                    crate::time::human(waited)
                                ),
                            });
                        }
                    }
                    ServerStatus::Error { message } => failures.push(Failure {
                        slot: idx,
                        server: Some(id),
                        reason: format!("went to ERROR: {message}"),
                    }),
                    other => failures.push(Failure {
                        slot: idx,
                        server: Some(id),
                        reason: format!("became {other} while booting"),
                    }),
                },
                // Missing right after launch is eventual consistency, not
                // absence.
                None if waited <= caps.consistency_window => {}
                None => failures.push(Failure {
                    slot: idx,
                    server: Some(id),
                    reason: format!("not visible {} after launch", crate::time::human(waited)),
                }),
            }
        }
        for e in events {
            self.emit(e);
        }
        if changed {
            self.save(&[pool_id]).await?;
        }
        Ok(())
    }

    /// Servers that run but serve no traffic (a standby about to be reused,
    /// a pool being restored) may have died while waiting: they are
    /// described and health-checked afresh like a new launch, and replaced
    /// within the budget when they are gone. Serving servers are left to
    /// heal, which replaces them behind the balancer.
    ///
    /// A standby that the balancer kept under its checks is not checked
    /// again when the balancer's fresh read is evidence enough.
    async fn revalidate(&mut self, pool_id: &PoolId, slots: &[u32]) -> Result<(), StepError> {
        let trusted = self.trusted_standby(pool_id, slots).await?;
        let pool = self.pool_mut(pool_id)?;
        let mut changed = false;
        for i in slots {
            if trusted.contains(i) {
                continue;
            }
            if let Some(s) = pool.slot_mut(*i) {
                if s.state == SlotState::Running && s.traffic == Traffic::Out {
                    s.state = SlotState::Booting;
                    s.healthy = false;
                    changed = true;
                }
            }
        }
        if changed {
            self.save(&[pool_id]).await?;
        }
        Ok(())
    }

    /// Health-checks running servers directly; one that does not pass
    /// within the health timeout (counted from its launch, or from the start
    /// of this step for a revalidated one) is replaced.
    async fn probe_health(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
        started: crate::time::Timestamp,
        failures: &mut Vec<Failure>,
    ) -> Result<(), StepError> {
        let pool = self.pool(pool_id)?;
        let targets: Vec<(u32, ProbeTarget, Option<crate::time::Timestamp>)> = slots
            .iter()
            .filter_map(|i| pool.slot(*i))
            .filter(|s| s.state == SlotState::Running && !s.healthy)
            .filter(|s| !failures.iter().any(|f| f.slot == s.index))
            .filter_map(|s| {
                Some((
                    s.index,
                    ProbeTarget {
                        server: s.server.clone()?,
                        endpoint: s.endpoint?,
                        release: pool.release.clone(),
                        role: pool.role.clone(),
                    },
                    s.requested_at,
                ))
            })
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let probe = self.env.ports.probe.clone();
        let calls = self.calls.clone();
        let concurrency = self.plan.policy.provision.concurrency.max(1);
        let outcomes: Vec<_> = stream::iter(targets)
            .map(|(idx, target, requested_at)| {
                let probe = probe.clone();
                let calls = calls.clone();
                async move {
                    let outcome = calls
                        .once("health-checking", probe.check(&target, Check::Health))
                        .await;
                    (idx, target.server, requested_at, outcome)
                }
            })
            .buffered(concurrency)
            .collect()
            .await;
        let policy = self.plan.policy.provision.clone();
        let limit = policy.server_deadline + policy.health_timeout;
        let now = self.now();
        let mut changed = false;
        let pool = self.pool_mut(pool_id)?;
        for (idx, server, requested_at, outcome) in outcomes {
            let detail = match outcome.map_err(StepError::Interrupted)? {
                Ok(o) if o.passed => {
                    if let Some(slot) = pool.slot_mut(idx) {
                        slot.healthy = true;
                        changed = true;
                    }
                    continue;
                }
                Ok(o) => o.detail,
                Err(e) => e.chain(),
            };
            let waited = requested_at.map_or(limit, |t| elapsed_between(t, now));
            let this_step = elapsed_between(started, now);
            if waited > limit && this_step > policy.health_timeout {
                failures.push(Failure {
                    slot: idx,
                    server: Some(server),
                    reason: format!("failed its health check: {detail}"),
                });
            }
        }
        if changed {
            self.save(&[pool_id]).await?;
        }
        Ok(())
    }

    /// Records failed attempts: the server is kept as discarded (and
    /// terminated), the slot gets a new attempt and token while the step's
    /// replacement budget lasts, or is abandoned, which fails the step.
    async fn record_failures(
        &mut self,
        pool_id: &PoolId,
        failures: Vec<Failure>,
    ) -> Result<(), StepError> {
        if failures.is_empty() {
            return Ok(());
        }
        let budget = u32::try_from(self.plan.policy.provision.replace_budget).unwrap_or(u32::MAX);
        let op = self.plan.id.clone();
        let mut exhausted = None;
        let mut events = Vec::new();
        let mut used = self.step_replacements();
        let started = self.progress.value.started_at;
        for f in failures {
            let pool = self.pool_mut(pool_id)?;
            let Some(slot) = pool.slot_mut(f.slot) else {
                continue;
            };
            // A server an earlier operation launched and left stuck or in
            // ERROR is not this step's failure: it is replaced once without
            // charging the budget (the new attempt is this operation's, so
            // this happens at most once per slot). Otherwise a pool holding
            // such a server could never be reused under a zero budget.
            let inherited = slot.requested_at.is_some_and(|t| t < started);
            events.push(EventKind::LaunchFailed {
                pool: pool_id.clone(),
                slot: f.slot,
                attempt: slot.attempt,
                server: f.server.clone(),
                reason: f.reason.clone(),
            });
            let attempt = slot.attempt;
            let endpoint = slot.endpoint;
            if inherited {
                slot.next_attempt(&op, pool_id, f.reason.clone());
            } else if used >= budget {
                slot.state = SlotState::Abandoned;
                slot.last_failure = Some(f.reason.clone());
                slot.healthy = false;
                exhausted.get_or_insert(StepError::LaunchBudget {
                    pool: pool_id.clone(),
                    slot: f.slot,
                    attempts: used,
                    last: f.reason.clone(),
                });
            } else {
                used += 1;
                slot.next_attempt(&op, pool_id, f.reason.clone());
            }
            if let Some(server) = f.server {
                pool.discarded.push(DiscardedServer {
                    server,
                    slot: f.slot,
                    attempt,
                    reason: f.reason,
                    terminated: false,
                    endpoint,
                });
            }
        }
        self.set_step_replacements(used);
        for e in events {
            self.emit(e);
        }
        self.save(&[pool_id]).await?;
        self.terminate_discarded(pool_id).await?;
        match exhausted {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
