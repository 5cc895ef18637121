//! The canary stage: before a switch or a rollout, a share of the new
//! pool serves next to the live pool for an analysis window; a gate reads
//! what the balancer measured of both ([`TrafficStats`]) and a
//! user-supplied [`CanaryCheck`], and either lets the operation go on or
//! fails it with [`FailureCause::Canary`](crate::executor::FailureCause),
//! whose compensation takes the canary out and leaves the live pool as it
//! was.
//!
//! In a plan the stage is three steps: attach the canary slots, wait until
//! they are healthy, then [`Step::Canary`](crate::plan::Step::Canary)
//! (weight, window, gate). A crash during the window re-runs the last
//! step, which starts its window again from a fresh read.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::id::{PoolId, ReleaseLabel, ServerId};
use crate::policy::PolicyError;
use crate::ports::TrafficStats;
use crate::time::duration_ms;

/// How much of the new pool serves during the canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryShare {
    /// This many servers (at least one).
    Count(usize),
    /// This percentage of the desired count, rounded up (at least one).
    Percent(u8),
}

impl CanaryShare {
    /// The number of canary servers for a pool of `desired`: at least
    /// one, at most `desired`.
    pub fn resolve(self, desired: usize) -> usize {
        let n = match self {
            Self::Count(n) => n,
            Self::Percent(p) => (desired * usize::from(p.min(100))).div_ceil(100),
        };
        n.clamp(1, desired.max(1))
    }
}

impl Default for CanaryShare {
    fn default() -> Self {
        Self::Count(1)
    }
}

impl fmt::Display for CanaryShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n} server(s)"),
            Self::Percent(p) => write!(f, "{p}% of the pool"),
        }
    }
}

/// The canary section of a [`Policy`](crate::policy::Policy): present,
/// deploys and rolling replacements that have a live pool to compare with
/// run the canary stage first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanaryPolicy {
    /// How many servers of the new pool serve during the window.
    pub share: CanaryShare,
    /// The canary members' weight in percent of a normal member's, where
    /// the balancer routes by weight (HAProxy); ignored elsewhere.
    pub weight: Option<u8>,
    /// How long the canary serves before the gate decides.
    #[serde(with = "duration_ms")]
    pub window: Duration,
    /// Highest share of failed requests the canary may have (0.01 = 1%).
    pub max_error_rate: f64,
    /// Highest mean response time of the canary, if bounded.
    #[serde(with = "opt_ms")]
    pub max_mean_latency: Option<Duration>,
    /// Highest p99 response time of the canary, if bounded.
    #[serde(with = "opt_ms")]
    pub max_p99_latency: Option<Duration>,
    /// Fewest requests the canary must have answered in the window: with
    /// less evidence the gate fails (closed).
    pub min_requests: u64,
}

mod opt_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

impl Default for CanaryPolicy {
    fn default() -> Self {
        Self {
            share: CanaryShare::default(),
            weight: None,
            window: Duration::from_secs(300),
            max_error_rate: 0.01,
            max_mean_latency: None,
            max_p99_latency: None,
            min_requests: 20,
        }
    }
}

impl CanaryPolicy {
    /// Checks for values no gate can work with.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let refuse = |field, reason: &str| {
            Err(PolicyError {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.window.is_zero() {
            return refuse("canary.window", "must be positive");
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            return refuse("canary.max_error_rate", "is a share between 0 and 1");
        }
        if let Some(w) = self.weight {
            if w == 0 || w > 100 {
                return refuse("canary.weight", "is a percentage between 1 and 100");
            }
        }
        if let CanaryShare::Count(0) | CanaryShare::Percent(0) = self.share {
            return refuse("canary.share", "must be at least one server");
        }
        Ok(())
    }

    /// The gate on the balancer's numbers: `Err` says why the canary
    /// fails. The baseline is reported, not judged: a release is not
    /// excused because the live one fails too.
    pub fn judge(&self, canary: &TrafficStats) -> Result<(), String> {
        if canary.requests < self.min_requests {
            return Err(format!(
                "the canary answered {} request(s), fewer than the {} the gate needs",
                canary.requests, self.min_requests
            ));
        }
        if canary.error_rate() > self.max_error_rate {
            return Err(format!(
                "error rate {:.2}% above {:.2}%",
                canary.error_rate() * 100.0,
                self.max_error_rate * 100.0
            ));
        }
        if let (Some(max), Some(mean)) = (self.max_mean_latency, canary.mean_latency) {
            if mean > max {
                return Err(format!(
                    "mean latency {} ms above {} ms",
                    mean.as_millis(),
                    max.as_millis()
                ));
            }
        }
        if let Some(max) = self.max_p99_latency {
            match canary.p99_latency {
                Some(p99) if p99 > max => {
                    return Err(format!(
                        "p99 latency {} ms above {} ms",
                        p99.as_millis(),
                        max.as_millis()
                    ))
                }
                Some(_) => {}
                None => {
                    return Err("a p99 bound is set but the balancer reports no p99".into());
                }
            }
        }
        Ok(())
    }

    /// One line for plans.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "error rate <= {:.2}%, >= {} request(s)",
            self.max_error_rate * 100.0,
            self.min_requests
        );
        if let Some(m) = self.max_mean_latency {
            out.push_str(&format!(", mean <= {} ms", m.as_millis()));
        }
        if let Some(p) = self.max_p99_latency {
            out.push_str(&format!(", p99 <= {} ms", p.as_millis()));
        }
        out
    }
}

/// What a [`CanaryCheck`] is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryContext {
    /// The new pool.
    pub pool: PoolId,
    /// Its release.
    pub release: ReleaseLabel,
    /// The canary servers and where they answer.
    pub servers: Vec<(ServerId, SocketAddr)>,
    /// What the balancer measured of the canary during the window.
    pub canary: TrafficStats,
    /// What it measured of the live pool in the same window.
    pub baseline: TrafficStats,
}

/// A user's verdict on a canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryCheckOutcome {
    /// Whether the canary may go on.
    pub pass: bool,
    /// What was seen (recorded with the failure).
    pub detail: String,
}

impl CanaryCheckOutcome {
    /// A pass.
    pub fn pass(detail: impl Into<String>) -> Self {
        Self {
            pass: true,
            detail: detail.into(),
        }
    }

    /// A failure.
    pub fn fail(detail: impl Into<String>) -> Self {
        Self {
            pass: false,
            detail: detail.into(),
        }
    }
}

/// A check of the user's own, run at the end of the analysis window after
/// the balancer's numbers passed (business metrics, an end-to-end probe).
/// Set it with [`PhoenixBuilder::canary_check`](crate::PhoenixBuilder::canary_check).
#[async_trait]
pub trait CanaryCheck: Send + Sync {
    /// Judges the canary; bounded by the policy's call timeout (a check
    /// that does not answer in time fails the canary).
    async fn check(&self, canary: &CanaryContext) -> CanaryCheckOutcome;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(requests: u64, errors: u64) -> TrafficStats {
        TrafficStats {
            requests,
            errors,
            mean_latency: Some(Duration::from_millis(40)),
            p99_latency: Some(Duration::from_millis(120)),
        }
    }

    #[test]
    fn shares_resolve_to_at_least_one_server() {
        assert_eq!(CanaryShare::Count(1).resolve(10), 1);
        assert_eq!(CanaryShare::Count(20).resolve(10), 10);
        assert_eq!(CanaryShare::Percent(10).resolve(25), 3);
        assert_eq!(CanaryShare::Percent(1).resolve(3), 1);
    }

    #[test]
    fn the_gate_judges_errors_latency_and_evidence() {
        let mut p = CanaryPolicy::default();
        assert!(p.judge(&seen(100, 1)).is_ok());
        assert!(p.judge(&seen(100, 2)).unwrap_err().contains("error rate"));
        assert!(p.judge(&seen(5, 0)).unwrap_err().contains("fewer"));
        p.max_mean_latency = Some(Duration::from_millis(30));
        assert!(p.judge(&seen(100, 0)).unwrap_err().contains("mean"));
        p.max_mean_latency = None;
        p.max_p99_latency = Some(Duration::from_millis(100));
        assert!(p.judge(&seen(100, 0)).unwrap_err().contains("p99"));
    }

    #[test]
    fn unusable_policies_are_refused() {
        let mut p = CanaryPolicy::default();
        p.validate().unwrap();
        p.weight = Some(0);
        assert_eq!(p.validate().unwrap_err().field, "canary.weight");
        p.weight = None;
        p.max_error_rate = 2.0;
        assert_eq!(p.validate().unwrap_err().field, "canary.max_error_rate");
        let p: CanaryPolicy =
            serde_json::from_str(r#"{"share": {"percent": 10}, "window": 60000}"#).unwrap();
        assert_eq!(p.share, CanaryShare::Percent(10));
        assert_eq!(p.window, Duration::from_secs(60));
    }
}
