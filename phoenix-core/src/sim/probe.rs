use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::time::Instant;

use crate::ports::{Check, PortError, Probe, ProbeOutcome, ProbeTarget};

use super::compute::lock;
use super::world::World;

/// Probes simulated servers: healthy when running and alive; the smoke test
/// also fails for releases marked bad.
#[derive(Debug, Clone)]
pub struct SimProbe {
    pub(crate) world: Arc<Mutex<World>>,
}

#[async_trait]
impl Probe for SimProbe {
    async fn check(&self, target: &ProbeTarget, check: Check) -> Result<ProbeOutcome, PortError> {
        super::compute::call_delay(&self.world, std::time::Duration::ZERO).await;
        let now = Instant::now();
        let mut w = lock(&self.world);
        w.stats.probe_calls += 1;
        let Some(server) = w.servers.get(&target.server) else {
            return Ok(ProbeOutcome {
                passed: false,
                detail: "connection refused: no such server".into(),
            });
        };
        if !server.alive(now, &w.faults.unhealthy_releases) {
            return Ok(ProbeOutcome {
                passed: false,
                detail: "connection refused".into(),
            });
        }
        if server.release.as_ref() != Some(&target.release) {
            return Ok(ProbeOutcome {
                passed: false,
                detail: format!(
                    "serves release {:?}, expected {}",
                    server.release.as_ref().map(|r| r.to_string()),
                    target.release
                ),
            });
        }
        if check == Check::Smoke {
            let passed = w.smoke_passed.get(&target.release).copied().unwrap_or(0);
            let limit = w.faults.smoke_fails_after.get(&target.release).copied();
            if w.faults.bad_releases.contains(&target.release) || limit.is_some_and(|l| passed >= l)
            {
                return Ok(ProbeOutcome {
                    passed: false,
                    detail: format!("GET / answered 500 on release {}", target.release),
                });
            }
            let flaky = w.faults.flaky_smoke;
            if w.chance(flaky) {
                return Ok(ProbeOutcome {
                    passed: false,
                    detail: "GET /smoke timed out once (a flaky check)".into(),
                });
            }
            *w.smoke_passed.entry(target.release.clone()).or_default() += 1;
        }
        Ok(ProbeOutcome {
            passed: true,
            detail: "200 OK".into(),
        })
    }
}
