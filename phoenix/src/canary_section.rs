//! `[policy.canary]` in `phoenix.toml`: the canary stage of `deploy` and
//! `rollout`, with human values.
//!
//! ```toml
//! [policy.canary]
//! share = 1                # servers, or "10%" of the pool
//! weight = "10%"           # where the balancer routes by weight (HAProxy)
//! window = "5m"            # the analysis window
//! max_error_rate = "1%"    # or 0.01
//! max_mean_latency = "300ms"
//! max_p99_latency = "1s"
//! min_requests = 20
//! ```

use phoenix_core::canary::{CanaryPolicy, CanaryShare};
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::file::HumanDuration;

/// A count, or a percentage written `"10%"`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Amount {
    Count(f64),
    Percent(f64),
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Float(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            // Counts far below 2^52.
            #[allow(clippy::cast_precision_loss)]
            Raw::Int(n) => Ok(Self::Count(n as f64)),
            Raw::Float(x) => Ok(Self::Count(x)),
            Raw::Text(s) => s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
                .filter(|p| (0.0..=100.0).contains(p))
                .map(Self::Percent)
                .ok_or_else(|| {
                    de::Error::custom(format!(
                        "invalid amount {s:?}: a number or a percentage up to 100 (\"10%\")"
                    ))
                }),
        }
    }
}

/// `[policy.canary]`; a key left out keeps [`CanaryPolicy::default`]'s
/// value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CanarySection {
    /// Canary servers: a count (`1`) or a share of the pool (`"10%"`).
    share: Option<Amount>,
    /// The canary members' weight in percent of a normal member's
    /// (`"10%"` or `10`), where the balancer routes by weight.
    weight: Option<Amount>,
    /// The analysis window.
    window: Option<HumanDuration>,
    /// Highest error rate: `"1%"` or `0.01`.
    max_error_rate: Option<Amount>,
    /// Highest mean response time.
    max_mean_latency: Option<HumanDuration>,
    /// Highest p99 response time.
    max_p99_latency: Option<HumanDuration>,
    /// Fewest requests the canary must answer in the window.
    min_requests: Option<u64>,
}

/// Whole percent or count from a value already range-checked.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn whole(x: f64) -> u64 {
    x.round().max(0.0) as u64
}

impl CanarySection {
    /// The canary policy it describes.
    pub fn resolve(&self) -> CanaryPolicy {
        let mut c = CanaryPolicy::default();
        match self.share {
            Some(Amount::Count(n)) => {
                c.share = CanaryShare::Count(usize::try_from(whole(n)).unwrap_or(usize::MAX));
            }
            Some(Amount::Percent(p)) => {
                c.share = CanaryShare::Percent(u8::try_from(whole(p)).unwrap_or(100));
            }
            None => {}
        }
        if let Some(Amount::Count(w) | Amount::Percent(w)) = self.weight {
            c.weight = Some(u8::try_from(whole(w)).unwrap_or(u8::MAX));
        }
        if let Some(HumanDuration(w)) = self.window {
            c.window = w;
        }
        match self.max_error_rate {
            Some(Amount::Count(r)) => c.max_error_rate = r,
            Some(Amount::Percent(p)) => c.max_error_rate = p / 100.0,
            None => {}
        }
        c.max_mean_latency = self.max_mean_latency.map(|HumanDuration(d)| d);
        c.max_p99_latency = self.max_p99_latency.map(|HumanDuration(d)| d);
        if let Some(n) = self.min_requests {
            c.min_requests = n;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn human_values_resolve() {
        let s: CanarySection = toml::from_str(
            r#"share = "10%"
weight = "5%"
window = "2m"
max_error_rate = "2%"
max_p99_latency = "800ms"
min_requests = 40"#,
        )
        .unwrap();
        let c = s.resolve();
        assert_eq!(c.share, CanaryShare::Percent(10));
        assert_eq!(c.weight, Some(5));
        assert_eq!(c.window, Duration::from_secs(120));
        assert!((c.max_error_rate - 0.02).abs() < 1e-9);
        assert_eq!(c.max_p99_latency, Some(Duration::from_millis(800)));
        assert_eq!(c.min_requests, 40);
        let s: CanarySection = toml::from_str("share = 2\nmax_error_rate = 0.05").unwrap();
        let c = s.resolve();
        assert_eq!(c.share, CanaryShare::Count(2));
        assert!((c.max_error_rate - 0.05).abs() < 1e-9);
        assert!(toml::from_str::<CanarySection>("share = \"lots\"").is_err());
        assert!(toml::from_str::<CanarySection>("windw = \"1m\"").is_err());
    }
}
