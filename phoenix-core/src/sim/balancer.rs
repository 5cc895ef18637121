use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::id::ServerId;
use crate::ports::{LbCapabilities, LoadBalancer, Member, PortError, Target};

use super::compute::lock;
use super::world::{SimMember, World};

/// A simulated balancer: tracks members, their health over time, draining,
/// and checks the capacity floor on every detach against the health it
/// last reported.
#[derive(Debug, Clone)]
pub struct SimBalancer {
    pub(crate) world: Arc<Mutex<World>>,
    pub(crate) name: String,
}

fn lb_fault(w: &mut World, operation: &str) -> Result<(), PortError> {
    let p = w.faults.lb_failure;
    if w.chance(p) {
        return Err(PortError::temporary(
            operation,
            "HTTP 500 from the balancer API",
        ));
    }
    Ok(())
}

impl SimBalancer {
    async fn latency(&self) {
        let d = {
            let w = lock(&self.world);
            w.config.api_latency + w.faults.lb_slow
        };
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    /// Records violations of the capacity floor: Phoenix promised to keep
    /// at least `floor` healthy members.
    pub fn watch_floor(&self, floor: usize) {
        let mut w = lock(&self.world);
        w.balancers.entry(self.name.clone()).or_default().floor = Some(floor);
    }

    /// Ground truth: the members now.
    pub fn members_now(&self) -> Vec<Member> {
        let w = lock(&self.world);
        w.members_at(&self.name, Instant::now())
    }
}

#[async_trait]
impl LoadBalancer for SimBalancer {
    fn capabilities(&self) -> LbCapabilities {
        LbCapabilities {
            atomic_swap: false,
            drain: true,
            reports_connections: true,
            max_batch: usize::MAX,
        }
    }

    async fn members(&self) -> Result<Vec<Member>, PortError> {
        self.latency().await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.lb_calls += 1;
        lb_fault(&mut w, "sim: read members")?;
        w.prune(&self.name, now);
        w.balancers.entry(self.name.clone()).or_default().last_read = Some(now);
        Ok(w.members_at(&self.name, now))
    }

    async fn attach(&self, targets: &[Target]) -> Result<(), PortError> {
        self.latency().await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.lb_calls += 1;
        lb_fault(&mut w, "sim: attach members")?;
        w.prune(&self.name, now);
        let b = w.balancers.entry(self.name.clone()).or_default();
        for t in targets {
            let m = b.members.entry(t.server.clone()).or_insert(SimMember {
                endpoint: t.endpoint,
                attached_at: now,
                draining: None,
            });
            if m.draining.take().is_some() {
                m.attached_at = now;
            }
        }
        Ok(())
    }

    async fn detach(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        self.latency().await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.lb_calls += 1;
        lb_fault(&mut w, "sim: detach members")?;
        w.prune(&self.name, now);
        // The floor, judged on what the balancer last reported.
        let (floor, read_at) = {
            let b = w.balancers.entry(self.name.clone()).or_default();
            (b.floor, b.last_read.unwrap_or(now))
        };
        if let Some(floor) = floor {
            let leaving: BTreeSet<&ServerId> = servers.iter().collect();
            let members = w.members_at(&self.name, read_at);
            let before = members.iter().filter(|m| m.is_serving_healthy()).count();
            let after = members
                .iter()
                .filter(|m| m.is_serving_healthy() && !leaving.contains(&m.server))
                .count();
            if after < before && (after < floor || after == 0) {
                let t = w.elapsed_ms(now);
                w.violations.push(format!(
                    "invariant 2: detaching {} left {after} healthy member(s) of {before}, floor {floor} (t={t}ms)",
                    servers.len()
                ));
            }
        }
        let drain_time = drain.min(w.config.drain_time);
        let b = w.balancers.entry(self.name.clone()).or_default();
        for s in servers {
            if let Some(m) = b.members.get_mut(s) {
                if m.draining.is_none() {
                    m.draining = Some((now, now + drain_time));
                }
            }
        }
        Ok(())
    }
}
