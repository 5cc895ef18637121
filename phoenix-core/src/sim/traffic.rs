//! The simulated balancer's traffic counters: every member that takes
//! traffic answers `requests_per_second`; a release's servers fail a share
//! of them and answer at a latency set per release, so that a canary gate
//! can be tested under the paused clock.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::id::{ReleaseLabel, ServerId};
use crate::ports::TrafficStats;

use super::world::World;

/// How one release's servers answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReleaseTraffic {
    /// Share of requests that fail (0.2 = 20%).
    pub error_rate: f64,
    /// Mean response time.
    pub mean_latency: Duration,
    /// 99th-percentile response time.
    pub p99_latency: Duration,
}

impl Default for ReleaseTraffic {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            mean_latency: Duration::from_millis(20),
            p99_latency: Duration::from_millis(80),
        }
    }
}

/// The traffic the simulated balancer sends and what it measures of it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimTraffic {
    /// Requests each member that takes traffic answers per second.
    pub requests_per_second: f64,
    /// How each release answers; a release not listed answers as
    /// [`ReleaseTraffic::default`] (no errors).
    pub releases: BTreeMap<ReleaseLabel, ReleaseTraffic>,
    /// Whether the balancer keeps traffic counters at all (false: it
    /// answers `traffic_stats` with "unsupported").
    pub reports: bool,
}

impl Default for SimTraffic {
    fn default() -> Self {
        Self {
            requests_per_second: 10.0,
            releases: BTreeMap::new(),
            reports: true,
        }
    }
}

/// The counters of `servers` on `balancer` at `now`: a member's requests
/// are its seconds taking traffic (from its attach until it started to
/// drain, staged time excluded) times the rate.
pub(crate) fn stats(w: &World, balancer: &str, servers: &[ServerId], now: Instant) -> TrafficStats {
    let t = &w.config.traffic;
    let Some(b) = w.balancers.get(balancer) else {
        return TrafficStats::default();
    };
    let mut parts = Vec::new();
    for id in servers {
        let Some(m) = b.members.get(id) else { continue };
        if m.staged {
            continue;
        }
        let end = m.draining.map_or(now, |(from, _)| from.min(now));
        let secs = end.saturating_duration_since(m.attached_at).as_secs_f64();
        let behaviour = w
            .servers
            .get(id)
            .and_then(|s| s.release.as_ref())
            .and_then(|r| t.releases.get(r))
            .copied()
            .unwrap_or_default();
        // Whole requests, never negative: the casts cannot lose meaning.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let (requests, errors) = {
            let requests = (secs * t.requests_per_second).floor().max(0.0) as u64;
            let errors = (requests as f64 * behaviour.error_rate).round() as u64;
            (requests, errors.min(requests))
        };
        parts.push(TrafficStats {
            requests,
            errors,
            mean_latency: Some(behaviour.mean_latency),
            p99_latency: Some(behaviour.p99_latency),
        });
    }
    TrafficStats::combine(&parts)
}
