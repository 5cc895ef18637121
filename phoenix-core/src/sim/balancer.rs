use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::id::ServerId;
use crate::labels::keys;
use crate::ports::{
    LbCapabilities, LoadBalancer, Member, MemberHealth, MemberState, PortError, Target,
};

use super::compute::{call_delay, lock};
use super::world::{FloorWatch, SimMember, World};

/// A simulated balancer: tracks members, their health over time, draining,
/// and checks the capacity floor on every detach against the health it
/// last reported.
#[derive(Debug, Clone)]
pub struct SimBalancer {
    pub(crate) world: Arc<Mutex<World>>,
    pub(crate) name: String,
    /// The orchestrator these calls come from, for the lease referee.
    pub(crate) holder: Option<String>,
}

pub(crate) fn lb_fault(w: &mut World, operation: &str) -> Result<(), PortError> {
    let p = w.faults.lb_failure;
    if w.chance(p) {
        return Err(PortError::temporary(
            operation,
            "HTTP 500 from the balancer API",
        ));
    }
    Ok(())
}

/// How many of `n` members a partly applied change reaches (at least one,
/// fewer than all), or `None` when the change applies whole.
pub(crate) fn partial(w: &mut World, n: usize) -> Option<usize> {
    use rand::Rng;
    let p = w.faults.lb_partial;
    if n < 2 || !w.chance(p) {
        return None;
    }
    Some(w.rng.random_range(1..n))
}

impl SimBalancer {
    /// Waits out the call; returns when it was issued.
    pub(crate) async fn delay(&self) -> Instant {
        let slow = lock(&self.world).faults.lb_slow;
        call_delay(&self.world, slow).await
    }

    /// Records violations of the capacity floor: Phoenix promised to keep
    /// at least `floor` healthy members (of any server).
    pub fn watch_floor(&self, floor: usize) {
        self.watch_floor_of(floor, None, None);
    }

    /// Records violations of the capacity floor counting only the members
    /// whose servers carry this deployment's (and role's) labels: members
    /// of other deployments sharing the balancer are not its capacity.
    pub fn watch_floor_of(&self, floor: usize, deployment: Option<&str>, role: Option<&str>) {
        let mut w = lock(&self.world);
        w.balancers.entry(self.name.clone()).or_default().floor = Some(FloorWatch {
            floor,
            deployment: deployment.map(str::to_owned),
            role: role.map(str::to_owned),
        });
    }

    /// A hand on the balancer puts a member in drain (maintenance someone
    /// forgot): it takes no new connections, its open ones finish within
    /// the drain time, and it stays listed, draining, for `linger`, unless
    /// attached again. Phoenix's records still say it serves.
    pub fn sideline(&self, server: &ServerId, linger: Duration) {
        let now = Instant::now();
        let mut w = lock(&self.world);
        let drain = w.config.drain_time;
        // A balancer that drains to the end (ELBv2) lets it go then.
        let linger = if w.config.reactivates_draining {
            linger
        } else {
            Duration::ZERO
        };
        let b = w.balancers.entry(self.name.clone()).or_default();
        if let Some(m) = b.members.get_mut(server) {
            if m.draining.is_none() {
                m.draining = Some((now, now + drain));
                m.leaves_at = Some(now + drain + linger);
            }
        }
    }

    /// Ground truth: the members now, under their true server ids.
    pub fn members_now(&self) -> Vec<Member> {
        let w = lock(&self.world);
        w.true_members_at(&self.name, Instant::now())
    }

    /// True when some active member is a server of the deployment the
    /// balancer's floor watches.
    fn holds_ours(w: &World, name: &str, now: Instant) -> bool {
        let Some(b) = w.balancers.get(name) else {
            return false;
        };
        let Some(watch) = &b.floor else {
            return false;
        };
        b.members.iter().any(|(id, m)| {
            m.listed(now)
                && m.draining.is_none()
                && !m.staged
                && w.servers.get(id).is_some_and(|s| {
                    watch
                        .deployment
                        .as_deref()
                        .is_none_or(|d| s.labels.get(keys::DEPLOYMENT) == Some(d))
                })
        })
    }

    /// The floor, judged on the health the balancer last reported (what
    /// Phoenix could know), counting only the watched deployment's members.
    pub(crate) fn check_floor(w: &mut World, name: &str, servers: &[ServerId], now: Instant) {
        Self::check_floor_with(w, name, &[], servers, now);
    }

    /// The floor across a change that also gives `incoming` the traffic
    /// (an atomic swap): they count afterwards if the balancer last
    /// reported them healthy and not draining, staged or serving.
    pub(crate) fn check_floor_with(
        w: &mut World,
        name: &str,
        incoming: &[ServerId],
        servers: &[ServerId],
        now: Instant,
    ) {
        let (watch, read_at) = {
            let b = w.balancers.entry(name.to_owned()).or_default();
            (b.floor.clone(), b.last_read.unwrap_or(now))
        };
        let Some(watch) = watch else { return };
        let ours = |w: &World, id: &ServerId| {
            w.servers.get(id).is_some_and(|s| {
                watch
                    .deployment
                    .as_deref()
                    .is_none_or(|d| s.labels.get(keys::DEPLOYMENT) == Some(d))
                    && watch
                        .role
                        .as_deref()
                        .is_none_or(|r| s.labels.get(keys::ROLE) == Some(r))
            })
        };
        let leaving: BTreeSet<&ServerId> = servers.iter().collect();
        let members = w.true_members_at(name, read_at);
        let healthy: Vec<&Member> = members
            .iter()
            .filter(|m| m.is_serving_healthy() && ours(w, &m.server))
            .collect();
        let before = healthy.len();
        let gained = members
            .iter()
            .filter(|m| incoming.contains(&m.server) && !leaving.contains(&m.server))
            .filter(|m| m.state == MemberState::Disabled && m.health == MemberHealth::Healthy)
            .filter(|m| ours(w, &m.server))
            .count();
        let after = healthy
            .iter()
            .filter(|m| !leaving.contains(&m.server))
            .count()
            + gained;
        if after < before && (after < watch.floor || after == 0) {
            let t = w.elapsed_ms(now);
            w.violations.push(format!(
                "invariant 2: detaching {} left {after} healthy member(s) of {before}, floor {} (t={t}ms)",
                servers.len(),
                watch.floor
            ));
        }
    }
}

#[async_trait]
impl LoadBalancer for SimBalancer {
    fn capabilities(&self) -> LbCapabilities {
        let w = lock(&self.world);
        LbCapabilities {
            atomic_swap: w.config.stages,
            drain: true,
            reports_connections: true,
            max_batch: usize::MAX,
            reactivates_draining: w.config.reactivates_draining,
            stages: w.config.stages,
            keeps_standby: w.config.keeps_standby,
            check_interval: Some(w.config.check_interval),
        }
    }

    async fn members(&self) -> Result<Vec<Member>, PortError> {
        self.delay().await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.lb_calls += 1;
        lb_fault(&mut w, "sim: read members")?;
        // A balancer that restarted empty answers no member while the
        // watched deployment's servers are its active members: a lie Phoenix
        // can tell from its records. (A floating IP answering "nobody", or a
        // balancer with nobody of ours on it, cannot be told from the truth.)
        let p = w.faults.lb_empty_read;
        if p > 0.0 && Self::holds_ours(&w, &self.name, now) && w.chance(p) {
            return Ok(Vec::new());
        }
        w.prune(&self.name, now);
        w.balancers.entry(self.name.clone()).or_default().last_read = Some(now);
        Ok(w.members_at(&self.name, now))
    }

    async fn attach(&self, targets: &[Target]) -> Result<(), PortError> {
        self.delay().await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.lb_calls += 1;
        let what = format!("attached {} member(s) to {}", targets.len(), self.name);
        w.check_lease(self.holder.as_deref(), &what, now);
        lb_fault(&mut w, "sim: attach members")?;
        w.prune(&self.name, now);
        let reach = partial(&mut w, targets.len());
        let reactivates = w.config.reactivates_draining;
        let mut still_draining = Vec::new();
        for t in targets.iter().take(reach.unwrap_or(targets.len())) {
            let p = w.faults.stand_in_ids;
            let stand_in = if w.chance(p) {
                let b = w.balancers.entry(self.name.clone()).or_default();
                b.next_node += 1;
                Some(ServerId::from_valid(format!(
                    "{}-node-{}",
                    self.name, b.next_node
                )))
            } else {
                None
            };
            let b = w.balancers.entry(self.name.clone()).or_default();
            let m = b.members.entry(t.server.clone()).or_insert(SimMember {
                stand_in,
                ..SimMember::new(t.endpoint, now, false)
            });
            // Attaching a staged (or standby) member gives it traffic; its
            // health, as checked while staged, carries over. Its checks
            // start again if they had stopped.
            // A standby a hand also set draining is attached the same way
            // once the balancer lets it out of its drain.
            if m.staged && (m.draining.is_none() || reactivates) {
                m.staged = false;
                m.conns_until = None;
                if m.draining.take().is_some() {
                    m.leaves_at = None;
                }
                if m.checks_stopped.is_some_and(|t| t < now) {
                    m.checks_stopped = None;
                    m.attached_at = now;
                }
                continue;
            }
            if !reactivates && m.draining.is_some() && m.endpoint == t.endpoint {
                // Like ELBv2: it drains to the end, then may come back.
                still_draining.push(t.server.to_string());
                continue;
            }
            if m.draining.take().is_some() || m.endpoint != t.endpoint {
                m.attached_at = now;
                m.leaves_at = None;
                m.endpoint = t.endpoint;
            }
        }
        if reach.is_some() {
            return Err(PortError::temporary(
                "sim: attach members",
                "HTTP 500 after part of the change was applied",
            ));
        }
        if !still_draining.is_empty() {
            return Err(PortError::temporary(
                "sim: attach members",
                format!("still draining: {}", still_draining.join(", ")),
            ));
        }
        Ok(())
    }

    async fn traffic_stats(
        &self,
        servers: &[ServerId],
    ) -> Result<crate::ports::TrafficStats, PortError> {
        self.delay().await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.lb_calls += 1;
        if !w.config.traffic.reports {
            return Err(PortError::new(
                "sim: read traffic statistics",
                crate::ports::ErrorKind::Unsupported("this balancer keeps no counters".into()),
            ));
        }
        lb_fault(&mut w, "sim: read traffic statistics")?;
        Ok(super::traffic::stats(&w, &self.name, servers, now))
    }

    async fn detach(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        let issued = self.delay().await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.lb_calls += 1;
        let what = format!("detached {} member(s) from {}", servers.len(), self.name);
        w.check_lease(self.holder.as_deref(), &what, now);
        lb_fault(&mut w, "sim: detach members")?;
        w.prune(&self.name, now);
        w.check_fresh(self.holder.as_deref(), Some(&self.name), &what, issued);
        // Phoenix promised the floor; a hand on the balancer did not.
        if self.holder.is_some() {
            Self::check_floor(&mut w, &self.name, servers, now);
        }
        let reach = partial(&mut w, servers.len());
        let drain_time = drain.min(w.config.drain_time);
        for s in servers.iter().take(reach.unwrap_or(servers.len())) {
            // A balancer that drains to the end (ELBv2) lets members go
            // when the drain ends: none lingers.
            let p = if w.config.reactivates_draining {
                w.faults.stuck_draining
            } else {
                0.0
            };
            let linger = if w.chance(p) {
                w.between(Duration::from_secs(60), Duration::from_secs(3600))
            } else {
                Duration::ZERO
            };
            let b = w.balancers.entry(self.name.clone()).or_default();
            if b.members.get(s).is_some_and(|m| m.staged) {
                // It never took traffic: nothing to drain.
                b.members.remove(s);
                continue;
            }
            if let Some(m) = b.members.get_mut(s) {
                let drained = now + drain_time;
                match m.draining {
                    None => {
                        m.draining = Some((now, drained));
                        m.leaves_at = Some(drained + linger);
                    }
                    // A second detach with a shorter drain shortens it.
                    Some((since, until)) if drained < until => {
                        m.draining = Some((since, drained));
                        m.leaves_at =
                            Some(m.leaves_at.map_or(drained, |l| l.min(drained + linger)));
                    }
                    Some(_) => {}
                }
            }
        }
        if reach.is_some() {
            return Err(PortError::temporary(
                "sim: detach members",
                "HTTP 500 after part of the change was applied",
            ));
        }
        Ok(())
    }
    async fn stage(&self, targets: &[Target]) -> Result<(), PortError> {
        self.delay().await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.lb_calls += 1;
        if !w.config.stages {
            return Err(PortError::new(
                "sim: stage members",
                crate::ports::ErrorKind::Unsupported("this balancer cannot stage".into()),
            ));
        }
        let what = format!("staged {} member(s) on {}", targets.len(), self.name);
        w.check_lease(self.holder.as_deref(), &what, now);
        lb_fault(&mut w, "sim: stage members")?;
        w.prune(&self.name, now);
        let reach = partial(&mut w, targets.len());
        let reactivates = w.config.reactivates_draining;
        let mut still_draining = Vec::new();
        let mut staged = Vec::new();
        let b = w.balancers.entry(self.name.clone()).or_default();
        for t in targets.iter().take(reach.unwrap_or(targets.len())) {
            if b.members
                .get(&t.server)
                .is_some_and(|m| !m.staged && m.draining.is_none())
            {
                // Already serving: staging changes nothing.
                continue;
            }
            let m = b
                .members
                .entry(t.server.clone())
                .or_insert(SimMember::new(t.endpoint, now, true));
            // Staging a member whose checks stopped starts them again.
            if m.checks_stopped.is_some_and(|t| t < now) {
                m.checks_stopped = None;
                m.attached_at = now;
            }
            if m.draining.is_some() {
                if !reactivates {
                    still_draining.push(t.server.to_string());
                    continue;
                }
                m.draining = None;
                m.leaves_at = None;
                m.staged = true;
                m.attached_at = now;
            }
            staged.push(t.server.clone());
        }
        for id in staged {
            let p = w.faults.staged_death;
            if w.chance(p) {
                let at = now + w.between(Duration::ZERO, Duration::from_secs(180));
                if let Some(s) = w.servers.get_mut(&id) {
                    if s.death.is_none_or(|(t, _)| t > at) {
                        s.death = Some((at, super::world::Death::App));
                    }
                }
            }
        }
        if reach.is_some() {
            return Err(PortError::temporary(
                "sim: stage members",
                "HTTP 500 after part of the change was applied",
            ));
        }
        if !still_draining.is_empty() {
            return Err(PortError::temporary(
                "sim: stage members",
                format!("still draining: {}", still_draining.join(", ")),
            ));
        }
        Ok(())
    }

    /// One atomic change, like ELBv2's `ModifyListener`: the staged
    /// members take the traffic with the health they were checked to, the
    /// leaving ones drain. It applies whole or not at all; its answer may
    /// be lost after it applied.
    async fn swap(
        &self,
        attach: &[Target],
        detach: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        self.swap_with(attach, detach, drain, false).await
    }

    async fn standby(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        self.standby_members(servers, drain).await
    }

    async fn swap_standby(
        &self,
        attach: &[Target],
        standby: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        self.swap_with(attach, standby, drain, true).await
    }
}
