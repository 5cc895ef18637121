//! The simulated balancer's atomic swap and its standby members: a pool
//! that leaves the traffic may stay on the balancer, taking nothing, under
//! its checks; a hand may stop those checks, and the balancer then reports
//! the health it found last.

use std::time::Duration;

use tokio::time::Instant;

use crate::id::ServerId;
use crate::ports::{PortError, Target};

use super::balancer::{lb_fault, partial, SimBalancer};
use super::compute::lock;
use super::world::{Death, SimMember, World};

/// Members moved to standby may have their checks stopped by a hand, and
/// their application may die unseen after that.
fn maybe_stop_checks(w: &mut World, server: &ServerId, now: Instant) {
    let p = w.faults.standby_checks_stop;
    if !w.chance(p) {
        return;
    }
    let stop = now + w.between(Duration::ZERO, Duration::from_secs(120));
    let dies = w.chance(0.5);
    let death = stop + w.between(Duration::ZERO, Duration::from_secs(120));
    for b in w.balancers.values_mut() {
        if let Some(m) = b.members.get_mut(server) {
            m.checks_stopped = Some(stop);
        }
    }
    if dies {
        if let Some(s) = w.servers.get_mut(server) {
            if s.death.is_none_or(|(t, _)| t > death) {
                s.death = Some((death, Death::App));
            }
        }
    }
}

impl SimBalancer {
    /// Invariant 2, on the ground truth: all the traffic moved to a server
    /// whose application had been dead for longer than the balancer takes
    /// to see it (its fall delay and one check interval). Phoenix moved it
    /// on health that was no evidence: checks that had stopped.
    fn check_incoming_alive(w: &mut World, name: &str, attach: &[Target], now: Instant) {
        let lag = w.config.fall_delay + w.config.check_interval;
        let Some(b) = w.balancers.get(name) else {
            return;
        };
        let dead: Vec<String> = attach
            .iter()
            .filter(|t| b.members.contains_key(&t.server))
            .filter_map(|t| {
                let ended = w.servers.get(&t.server)?.ended_at(now)?;
                (now >= ended + lag).then(|| {
                    format!(
                        "{} (dead for {}s)",
                        t.server,
                        now.duration_since(ended).as_secs()
                    )
                })
            })
            .collect();
        if !dead.is_empty() {
            let t = w.elapsed_ms(now);
            w.violations.push(format!(
                "invariant 2: all traffic switched to servers that were dead, on health that was no evidence: {} (t={t}ms)",
                dead.join(", ")
            ));
        }
    }

    /// One atomic change, like ELBv2's `ModifyListener`: the staged members
    /// take the traffic with the health they were checked to, the leaving
    /// ones drain (or, with `standby`, stay as standby members), stale
    /// staged ones are dropped. It applies whole or not at all; its answer
    /// may be lost after it applied.
    pub(crate) async fn swap_with(
        &self,
        attach: &[Target],
        away: &[ServerId],
        drain: Duration,
        standby: bool,
    ) -> Result<(), PortError> {
        use crate::ports::LoadBalancer;
        if !lock(&self.world).config.stages {
            self.attach(attach).await?;
            return if standby {
                self.standby_members(away, drain).await
            } else {
                self.detach(away, drain).await
            };
        }
        let issued = self.delay().await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.lb_calls += 1;
        let what = format!(
            "swapped {} member(s) in and {} out on {}",
            attach.len(),
            away.len(),
            self.name
        );
        w.check_lease(self.holder.as_deref(), &what, now);
        lb_fault(&mut w, "sim: swap members")?;
        w.prune(&self.name, now);
        w.check_fresh(self.holder.as_deref(), Some(&self.name), &what, issued);
        let reactivates = w.config.reactivates_draining;
        let still_draining: Vec<String> = {
            let b = w.balancers.entry(self.name.clone()).or_default();
            attach
                .iter()
                .filter(|t| {
                    !reactivates
                        && b.members
                            .get(&t.server)
                            .is_some_and(|m| m.draining.is_some())
                })
                .map(|t| t.server.to_string())
                .collect()
        };
        if !still_draining.is_empty() {
            return Err(PortError::temporary(
                "sim: swap members",
                format!("still draining: {}", still_draining.join(", ")),
            ));
        }
        if self.holder.is_some() {
            let incoming: Vec<ServerId> = attach.iter().map(|t| t.server.clone()).collect();
            Self::check_floor_with(&mut w, &self.name, &incoming, away, now);
            Self::check_incoming_alive(&mut w, &self.name, attach, now);
        }
        let drain_time = drain.min(w.config.drain_time);
        let lost = {
            let p = w.faults.swap_answer_lost;
            w.chance(p)
        };
        let b = w.balancers.entry(self.name.clone()).or_default();
        b.members.retain(|id, m| {
            !m.staged || attach.iter().any(|t| &t.server == id) || away.contains(id)
        });
        for t in attach {
            let m = b
                .members
                .entry(t.server.clone())
                .or_insert(SimMember::new(t.endpoint, now, false));
            if m.draining.take().is_some() || m.endpoint != t.endpoint {
                m.attached_at = now;
                m.leaves_at = None;
                m.endpoint = t.endpoint;
            }
            // Taking traffic, its checks start again if they had stopped.
            if m.checks_stopped.is_some_and(|t| t < now) {
                m.attached_at = now;
            }
            m.checks_stopped = None;
            m.staged = false;
            m.conns_until = None;
        }
        let mut moved = Vec::new();
        for s in away {
            if let Some(m) = b.members.get_mut(s) {
                if standby {
                    if !m.staged {
                        m.staged = true;
                        m.conns_until = Some(now + drain_time);
                        moved.push(s.clone());
                    }
                } else if m.draining.is_none() {
                    let drained = now + drain_time;
                    m.draining = Some((now, drained));
                    m.leaves_at = Some(drained);
                }
            }
        }
        for s in moved {
            maybe_stop_checks(&mut w, &s, now);
        }
        if lost {
            return Err(PortError::temporary(
                "sim: swap members",
                "the answer was lost after the change applied",
            ));
        }
        Ok(())
    }

    /// Moves members to standby: they take no new connections, their open
    /// ones finish within the drain, and they stay members under the
    /// balancer's checks.
    pub(crate) async fn standby_members(
        &self,
        servers: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        let issued = self.delay().await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.lb_calls += 1;
        if !w.config.keeps_standby {
            return Err(PortError::new(
                "sim: standby members",
                crate::ports::ErrorKind::Unsupported("this balancer keeps no standby".into()),
            ));
        }
        let what = format!(
            "moved {} member(s) to standby on {}",
            servers.len(),
            self.name
        );
        w.check_lease(self.holder.as_deref(), &what, now);
        lb_fault(&mut w, "sim: standby members")?;
        w.prune(&self.name, now);
        w.check_fresh(self.holder.as_deref(), Some(&self.name), &what, issued);
        if self.holder.is_some() {
            Self::check_floor(&mut w, &self.name, servers, now);
        }
        let reach = partial(&mut w, servers.len());
        let drain_time = drain.min(w.config.drain_time);
        let mut moved = Vec::new();
        let b = w.balancers.entry(self.name.clone()).or_default();
        for s in servers.iter().take(reach.unwrap_or(servers.len())) {
            if let Some(m) = b.members.get_mut(s) {
                if m.staged {
                    continue;
                }
                let until = match m.draining.take() {
                    Some((_, drained)) => drained.min(now + drain_time),
                    None => now + drain_time,
                };
                m.leaves_at = None;
                m.staged = true;
                m.conns_until = Some(until);
                moved.push(s.clone());
            }
        }
        for s in moved {
            maybe_stop_checks(&mut w, &s, now);
        }
        if reach.is_some() {
            return Err(PortError::temporary(
                "sim: standby members",
                "HTTP 500 after part of the change was applied",
            ));
        }
        Ok(())
    }
}
