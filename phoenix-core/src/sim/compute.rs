use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::id::ServerId;
use crate::labels::LabelSelector;
use crate::model::Server;
use crate::ports::{Compute, ComputeCapabilities, ErrorKind, LaunchRequest, PortError};

use super::world::{Death, Fate, SimServer, World};

/// The simulated compute back end.
#[derive(Debug, Clone)]
pub struct SimCompute {
    pub(crate) world: Arc<Mutex<World>>,
    /// The orchestrator these calls come from, for the lease referee.
    pub(crate) holder: Option<String>,
}

pub(crate) fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|p| p.into_inner())
}

/// Rolls the API faults shared by every call: throttling and 5xx.
pub(crate) fn api_fault(w: &mut World, operation: &str) -> Result<(), PortError> {
    let p = w.faults.throttle;
    if w.chance(p) {
        let after = w.between(Duration::from_secs(1), Duration::from_secs(10));
        return Err(PortError::throttled(operation, Some(after)));
    }
    let p = w.faults.server_error;
    if w.chance(p) {
        return Err(PortError::temporary(
            operation,
            "HTTP 503 Service Unavailable",
        ));
    }
    Ok(())
}

/// Waits as a call does before it takes effect: a hang (if this call
/// hangs), then the API latency. A caller that gives up drops the call
/// before it has any effect.
/// Waits out a call's latency and any injected hang; returns when the call
/// was issued (what freshness is judged at: a slow answer is the
/// provider's doing, not a stale decision).
pub(crate) async fn call_delay(world: &Mutex<World>, extra: Duration) -> Instant {
    let issued = Instant::now();
    let (hang, latency) = {
        let mut w = lock(world);
        (w.hang(), w.config.api_latency + extra)
    };
    if let Some(h) = hang {
        tokio::time::sleep(h).await;
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    issued
}

impl SimCompute {
    fn launch_one(w: &mut World, r: &LaunchRequest, now: Instant) -> Result<Server, PortError> {
        let op = format!("sim: launch {}", r.name);
        let payload = r.boot.fingerprint();
        let existing = w
            .tokens
            .get(r.token.as_str())
            .cloned()
            .filter(|id| w.servers.get(id).is_some_and(|s| s.status(now).is_some()));
        if let Some(existing) = existing {
            if w.config.idempotent_launch {
                let same = w
                    .servers
                    .get(&existing)
                    .is_some_and(|s| *s.payload == *payload);
                if !same {
                    // Sending a token again with other parameters is the
                    // executor's mistake: EC2 refuses it and the first
                    // server is left without a slot.
                    if w.strict.is_some() {
                        let t = w.elapsed_ms(now);
                        w.violations.push(format!(
                            "invariant 6: token {} was sent again with a different payload (t={t}ms)",
                            r.token
                        ));
                    }
                    // EC2's IdempotentParameterMismatch.
                    return Err(PortError::new(
                        op,
                        ErrorKind::Conflict(format!(
                            "token {} was used with different parameters",
                            r.token
                        )),
                    ));
                }
                if let Some(s) = w.servers.get(&existing).and_then(|s| s.to_server(now)) {
                    return Ok(s);
                }
            } else {
                let t = w.elapsed_ms(now);
                w.violations.push(format!(
                    "invariant 6: token {} launched a second server while {existing} exists (t={t}ms)",
                    r.token
                ));
            }
        }
        let p = w.faults.launch_failure;
        if w.chance(p) {
            return Err(PortError::new(
                op,
                ErrorKind::Conflict("quota exceeded for instances".into()),
            ));
        }
        if r.boot.format() != w.config.boot_format {
            return Err(PortError::new(
                op,
                ErrorKind::Invalid(format!("boot payload in format {:?}", r.boot.format())),
            ));
        }
        w.check_certified(&r.image, &r.labels, now);
        let id = w.new_server_id();
        let n = w.next_server;
        let boot = w.between(w.config.boot_time.0, w.config.boot_time.1);
        let fate = {
            let (stuck, error) = (w.faults.stuck_in_build, w.faults.boot_error);
            if w.chance(stuck) {
                Fate::StuckInBuild
            } else if w.chance(error) {
                Fate::BootsToError
            } else {
                Fate::Boots
            }
        };
        let window = w.config.consistency_window;
        let (invisible, beyond) = (w.faults.not_found_after_launch, w.faults.lag_beyond_window);
        let (visible_at, misreported) = if w.chance(beyond) {
            (
                now + w.between(window + Duration::from_millis(1), window * 3),
                true,
            )
        } else if w.chance(invisible) {
            (now + w.between(Duration::from_millis(1), window), false)
        } else {
            (now, false)
        };
        let death_p = w.faults.member_death;
        let death = if fate == Fate::Boots && w.chance(death_p) {
            let after = w.between(Duration::ZERO, w.config.death_horizon);
            let kind = match w.pick(5) {
                0 | 1 => Death::Host,
                2 | 3 => Death::App,
                _ => Death::Reclaimed,
            };
            let mut at = now + boot + after;
            if kind == Death::Reclaimed {
                // Spot reclaims come in waves: every reclaim of a
                // half-hour lands at its end, so several servers vanish at
                // once.
                let wave = Duration::from_secs(1800);
                let since = at.saturating_duration_since(w.start).as_secs();
                let waves = since.div_ceil(wave.as_secs());
                at = w.start + wave * u32::try_from(waves).unwrap_or(u32::MAX);
            }
            Some((at, kind))
        } else {
            None
        };
        let created = w.timestamp();
        let server = SimServer {
            id: id.clone(),
            name: r.name.clone(),
            labels: r.labels.clone(),
            image: r.image.clone(),
            release: r.labels.release(),
            address: World::address(n),
            launched_at: created,
            created_at: created,
            visible_at,
            ready_at: now + boot,
            fate,
            stopped_at: None,
            death,
            terminated_at: None,
            misreported,
            payload: w.payload(payload),
        };
        let view = building_view(&server);
        w.tokens.insert(r.token.to_string(), id.clone());
        w.servers.insert(id, server);
        w.stats.servers_launched += 1;
        w.check_surge(now);
        Ok(view)
    }
}

fn building_view(s: &SimServer) -> Server {
    Server {
        id: s.id.clone(),
        name: s.name.clone(),
        addresses: vec![s.address],
        service_port: None,
        status: crate::model::ServerStatus::Building,
        launched_at: Some(s.launched_at),
        image: Some(s.image.clone()),
        labels: s.labels.clone(),
    }
}

impl World {
    /// A number below `n`, evenly.
    pub(crate) fn pick(&mut self, n: u32) -> u32 {
        use rand::Rng;
        self.rng.random_range(0..n.max(1))
    }
}

#[async_trait]
impl Compute for SimCompute {
    fn capabilities(&self) -> ComputeCapabilities {
        let w = lock(&self.world);
        ComputeCapabilities {
            max_launch_batch: w.config.max_launch_batch,
            max_describe_batch: w.config.max_describe_batch,
            max_terminate_batch: w.config.max_terminate_batch,
            stop_start: w.config.stop_start,
            idempotent_launch: w.config.idempotent_launch,
            consistency_window: w.config.consistency_window,
            boot_format: w.config.boot_format,
        }
    }

    async fn launch(&self, requests: &[LaunchRequest]) -> Vec<Result<Server, PortError>> {
        call_delay(&self.world, Duration::ZERO).await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.launch_calls += 1;
        w.check_lease(self.holder.as_deref(), "launched servers", now);
        if let Err(e) = api_fault(&mut w, "sim: launch") {
            return requests
                .iter()
                .map(|_| Err(PortError::new(e.operation.clone(), e.kind.clone())))
                .collect();
        }
        let lost = w.faults.lost_response;
        let lose = w.chance(lost);
        let results: Vec<Result<Server, PortError>> = requests
            .iter()
            .map(|r| Self::launch_one(&mut w, r, now))
            .collect();
        if lose {
            // The servers exist, but the answer never arrived.
            return requests
                .iter()
                .map(|_| {
                    Err(PortError::temporary(
                        "sim: launch",
                        "connection reset before the response",
                    ))
                })
                .collect();
        }
        results
    }

    async fn describe(&self, ids: &[ServerId]) -> Result<Vec<Server>, PortError> {
        call_delay(&self.world, Duration::ZERO).await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.describe_calls += 1;
        let at = w.elapsed_ms(now);
        *w.stats.describe_rounds.entry(at).or_default() += 1;
        if ids.len() > w.config.max_describe_batch {
            // The provider declared its limit: a caller that exceeds it
            // breaks the contract (and a real API answers 400 or 414).
            if w.strict.is_some() {
                let limit = w.config.max_describe_batch;
                w.violations.push(format!(
                    "capabilities: described {} servers in one call, above the declared {limit} (t={at}ms)",
                    ids.len()
                ));
            }
            return Err(PortError::new(
                "sim: describe servers",
                ErrorKind::Invalid(format!(
                    "{} ids in one call; at most {} are accepted",
                    ids.len(),
                    w.config.max_describe_batch
                )),
            ));
        }
        api_fault(&mut w, "sim: describe servers")?;
        let wanted: BTreeSet<&ServerId> = ids.iter().collect();
        Ok(w.servers
            .values()
            .filter(|s| wanted.contains(&s.id) && now >= s.visible_at)
            .filter_map(|s| s.to_server(now))
            .collect())
    }

    async fn list(&self, selector: &LabelSelector) -> Result<Vec<Server>, PortError> {
        call_delay(&self.world, Duration::ZERO).await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.list_calls += 1;
        api_fault(&mut w, "sim: list servers")?;
        Ok(w.servers
            .values()
            .filter(|s| now >= s.visible_at && s.labels.matches(selector))
            .filter_map(|s| s.to_server(now))
            .collect())
    }

    async fn stop(&self, id: &ServerId) -> Result<(), PortError> {
        let issued = call_delay(&self.world, Duration::ZERO).await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.stop_calls += 1;
        w.check_lease(self.holder.as_deref(), &format!("stopped {id}"), now);
        api_fault(&mut w, "sim: stop server")?;
        if !w.config.stop_start {
            return Err(PortError::new(
                "sim: stop server",
                ErrorKind::Unsupported("stop".into()),
            ));
        }
        if w.servers.get(id).is_none_or(|s| s.status(now).is_none()) {
            return Err(PortError::not_found("sim: stop server", id.to_string()));
        }
        w.check_fresh(
            self.holder.as_deref(),
            None,
            &format!("stopped {id}"),
            issued,
        );
        w.check_not_serving(id, "stopped", now);
        if let Some(s) = w.servers.get_mut(id) {
            s.stopped_at.get_or_insert(now);
        }
        Ok(())
    }

    async fn start(&self, id: &ServerId) -> Result<(), PortError> {
        call_delay(&self.world, Duration::ZERO).await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.start_calls += 1;
        w.check_lease(self.holder.as_deref(), &format!("started {id}"), now);
        api_fault(&mut w, "sim: start server")?;
        let restart = w.config.boot_time.0 / 2;
        let resets = w.faults.start_resets_launch_time;
        let stamp = w.timestamp();
        match w.servers.get_mut(id) {
            Some(s) if s.status(now).is_some() => {
                if s.stopped_at.take().is_some() {
                    s.ready_at = now + restart;
                    // A restarted server comes back from whatever killed it.
                    s.death = None;
                    if resets {
                        s.launched_at = stamp;
                    }
                }
                Ok(())
            }
            _ => Err(PortError::not_found("sim: start server", id.to_string())),
        }
    }

    async fn terminate(&self, id: &ServerId) -> Result<(), PortError> {
        let issued = call_delay(&self.world, Duration::ZERO).await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.terminate_calls += 1;
        w.check_lease(self.holder.as_deref(), &format!("terminated {id}"), now);
        api_fault(&mut w, "sim: terminate server")?;
        self.terminate_in(&mut w, id, issued, now);
        Ok(())
    }

    /// One call for the whole batch, as EC2's `TerminateInstances`: a
    /// throttled or failed call fails for every server in it.
    async fn terminate_many(&self, ids: &[ServerId]) -> Vec<Result<(), PortError>> {
        let issued = call_delay(&self.world, Duration::ZERO).await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.terminate_calls += 1;
        w.check_lease(
            self.holder.as_deref(),
            &format!("terminated {} servers", ids.len()),
            now,
        );
        if ids.len() > w.config.max_terminate_batch {
            let e = PortError::new(
                "sim: terminate servers",
                ErrorKind::Invalid(format!(
                    "{} ids in one call, at most {}",
                    ids.len(),
                    w.config.max_terminate_batch
                )),
            );
            return ids.iter().map(|_| Err(e.for_another())).collect();
        }
        if let Err(e) = api_fault(&mut w, "sim: terminate servers") {
            return ids.iter().map(|_| Err(e.for_another())).collect();
        }
        for id in ids {
            self.terminate_in(&mut w, id, issued, now);
        }
        ids.iter().map(|_| Ok(())).collect()
    }
}

impl SimCompute {
    fn terminate_in(&self, w: &mut World, id: &ServerId, issued: Instant, now: Instant) {
        let unseen = w.servers.get(id).is_some_and(|s| now < s.visible_at);
        let p = w.faults.terminate_unseen_lost;
        if unseen && w.chance(p) {
            // The provider does not list it yet, answers "not found", and
            // the adapter reports that as done: the server lives on.
            if let Some(s) = w.servers.get_mut(id) {
                s.misreported = true;
            }
            return;
        }
        if w.servers.contains_key(id) {
            w.check_fresh(
                self.holder.as_deref(),
                None,
                &format!("terminated {id}"),
                issued,
            );
            w.check_not_serving(id, "terminated", now);
            // Gone for good, as in a cloud: nothing keeps its memory.
            w.servers.remove(id);
        }
    }
}
