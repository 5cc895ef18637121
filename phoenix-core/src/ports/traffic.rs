//! What a balancer measured of the traffic it sent to some members: the
//! evidence a canary gate reads ([`LoadBalancer::traffic_stats`]).
//!
//! [`LoadBalancer::traffic_stats`]: super::LoadBalancer::traffic_stats

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::duration_ms;

/// Traffic counters of a set of members, as the balancer keeps them.
///
/// `requests` and `errors` are cumulative counters (since the member was
/// added, or since the balancer started): a gate reads them twice and
/// takes the difference. The latencies are what the balancer reports now
/// of the recent requests (HAProxy's `rtime` covers the last 1024), where
/// it reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficStats {
    /// Requests (or, on a balancer that sees no requests, connections)
    /// answered by the members.
    pub requests: u64,
    /// Of those, the failed ones: 5xx answers, connection errors, failed
    /// connects.
    pub errors: u64,
    /// Mean response time, where the balancer reports it.
    #[serde(
        default,
        with = "opt_duration_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub mean_latency: Option<Duration>,
    /// 99th-percentile response time, where the balancer reports it.
    #[serde(
        default,
        with = "opt_duration_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub p99_latency: Option<Duration>,
}

mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_ms::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

impl TrafficStats {
    /// The share of failed requests (0 when there were none).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            // Counters far below 2^52: the conversion is exact.
            #[allow(clippy::cast_precision_loss)]
            let rate = self.errors as f64 / self.requests as f64;
            rate
        }
    }

    /// What happened between `earlier` and this read: the counters'
    /// difference (a counter that went backwards — a member re-added, a
    /// balancer restarted — counts from zero), with this read's latencies.
    pub fn since(&self, earlier: &Self) -> Self {
        let (requests, errors) = if self.requests < earlier.requests || self.errors < earlier.errors
        {
            (self.requests, self.errors)
        } else {
            (
                self.requests - earlier.requests,
                self.errors - earlier.errors,
            )
        };
        Self {
            requests,
            errors,
            mean_latency: self.mean_latency,
            p99_latency: self.p99_latency,
        }
    }

    /// The stats of several members together: counters add up, the mean
    /// latency is weighted by requests, the p99 is the worst member's (an
    /// upper bound, so a gate on it never passes a slow member).
    pub fn combine<'a>(parts: impl IntoIterator<Item = &'a Self>) -> Self {
        let mut out = Self::default();
        let mut weighted: u128 = 0;
        let mut weight: u128 = 0;
        for p in parts {
            out.requests += p.requests;
            out.errors += p.errors;
            if let Some(mean) = p.mean_latency {
                let w = u128::from(p.requests.max(1));
                weighted += mean.as_micros() * w;
                weight += w;
            }
            out.p99_latency = match (out.p99_latency, p.p99_latency) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        if let Some(mean) = weighted.checked_div(weight) {
            let micros = u64::try_from(mean).unwrap_or(u64::MAX);
            out.mean_latency = Some(Duration::from_micros(micros));
        }
        out
    }
}

impl fmt::Display for TrafficStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} request(s), {} failed ({:.2}%)",
            self.requests,
            self.errors,
            self.error_rate() * 100.0
        )?;
        if let Some(m) = self.mean_latency {
            write!(f, ", mean {:.1} ms", m.as_secs_f64() * 1000.0)?;
        }
        if let Some(p) = self.p99_latency {
            write!(f, ", p99 {:.1} ms", p.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(requests: u64, errors: u64, mean_ms: Option<u64>) -> TrafficStats {
        TrafficStats {
            requests,
            errors,
            mean_latency: mean_ms.map(Duration::from_millis),
            p99_latency: mean_ms.map(|m| Duration::from_millis(m * 3)),
        }
    }

    #[test]
    fn a_window_is_the_difference_of_two_reads() {
        let before = stats(100, 2, Some(10));
        let after = stats(160, 14, Some(20));
        let window = after.since(&before);
        assert_eq!((window.requests, window.errors), (60, 12));
        assert!((window.error_rate() - 0.2).abs() < 1e-9);
        assert_eq!(window.mean_latency, Some(Duration::from_millis(20)));
        // A counter that went back (a re-added member) counts from zero.
        let reset = stats(5, 1, None).since(&before);
        assert_eq!((reset.requests, reset.errors), (5, 1));
    }

    #[test]
    fn members_combine_weighted_and_worst_case() {
        let all = TrafficStats::combine(&[stats(300, 0, Some(10)), stats(100, 4, Some(50))]);
        assert_eq!((all.requests, all.errors), (400, 4));
        assert_eq!(all.mean_latency, Some(Duration::from_millis(20)));
        assert_eq!(all.p99_latency, Some(Duration::from_millis(150)));
        assert_eq!(TrafficStats::combine(&[]).error_rate(), 0.0);
    }
}
