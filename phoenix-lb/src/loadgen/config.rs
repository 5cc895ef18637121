//! What the load generator sends, and how fast.

use std::net::SocketAddr;
use std::time::Duration;

use super::LoadGenError;

/// The longest run, timeout or connection age accepted.
const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// What to send. Build it with [`LoadGenConfig::new`] and adjust fields:
///
/// ```
/// # use std::time::Duration;
/// # use phoenix_lb::loadgen::LoadGenConfig;
/// let config = LoadGenConfig {
///     rate: 100,
///     duration: Duration::from_secs(2),
///     fresh_ratio: 0.5,
///     ..LoadGenConfig::new("127.0.0.1:8080".parse().unwrap())
/// };
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LoadGenConfig {
    /// Where requests go.
    pub target: SocketAddr,
    /// The request target of every `GET` (default `/`).
    pub path: String,
    /// Requests per second at most, across all workers (default 200). A
    /// worker that falls behind skips ticks rather than bursting.
    pub rate: u32,
    /// How long to send (default 10 s); the generator stops by itself.
    pub duration: Duration,
    /// Stop after this many requests, if set.
    pub max_requests: Option<u64>,
    /// Workers, each with at most one request in flight (default 8).
    pub concurrency: u32,
    /// Share of requests sent on a fresh connection that is closed after
    /// the answer (`Connection: close`), between 0 and 1 (default 0.25);
    /// the others reuse a kept-alive connection.
    pub fresh_ratio: f64,
    /// Requests per kept-alive connection before it is closed and a new one
    /// opened (default 100).
    pub keepalive_max_requests: u32,
    /// Age after which a kept-alive connection is not reused (default 5 s),
    /// as HTTP clients' pools bound connection lifetime.
    pub keepalive_max_age: Duration,
    /// Connect timeout (default 1 s).
    pub connect_timeout: Duration,
    /// Time for one attempt, connect to end of body (default 5 s).
    pub request_timeout: Duration,
    /// Repeat a request once, on a fresh connection, when its connection
    /// closed or was reset before any response arrived (default true).
    ///
    /// Only `GET`s are sent and they are idempotent, so repeating them is
    /// what RFC 9110 §9.2.2 allows and what HTTP clients do for a
    /// kept-alive connection the server closed under them. Retries are
    /// counted in the report, split by whether the connection was reused.
    pub retry_before_response: bool,
}

impl LoadGenConfig {
    /// The defaults described on each field, against `target`.
    pub fn new(target: SocketAddr) -> Self {
        Self {
            target,
            path: "/".to_owned(),
            rate: 200,
            duration: Duration::from_secs(10),
            max_requests: None,
            concurrency: 8,
            fresh_ratio: 0.25,
            keepalive_max_requests: 100,
            keepalive_max_age: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            retry_before_response: true,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), LoadGenError> {
        let invalid = |setting, reason: &str| {
            Err(LoadGenError::InvalidSetting {
                setting,
                reason: reason.to_owned(),
            })
        };
        if self.rate == 0 || self.rate > 1_000_000 {
            return invalid(
                "rate",
                "must be between 1 and 1,000,000 requests per second",
            );
        }
        if self.concurrency == 0 || self.concurrency > 10_000 {
            return invalid("concurrency", "must be between 1 and 10,000");
        }
        if !(0.0..=1.0).contains(&self.fresh_ratio) {
            return invalid("fresh_ratio", "must be between 0 and 1");
        }
        if self.keepalive_max_requests == 0 {
            return invalid("keepalive_max_requests", "must be at least 1");
        }
        for (setting, value) in [
            ("duration", self.duration),
            ("keepalive_max_age", self.keepalive_max_age),
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() || value > MAX_PERIOD {
                return invalid(setting, "must be positive and at most one day");
            }
        }
        crate::http::validate_path(&self.path).map_err(|e| LoadGenError::InvalidPath {
            path: self.path.clone(),
            source: Box::new(e),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn validation() {
        let base = LoadGenConfig::new("127.0.0.1:1".parse().unwrap());
        assert!(base.validate().is_ok());
        let bad = [
            LoadGenConfig {
                rate: 0,
                ..base.clone()
            },
            LoadGenConfig {
                concurrency: 0,
                ..base.clone()
            },
            LoadGenConfig {
                fresh_ratio: 1.5,
                ..base.clone()
            },
            LoadGenConfig {
                fresh_ratio: f64::NAN,
                ..base.clone()
            },
            LoadGenConfig {
                keepalive_max_requests: 0,
                ..base.clone()
            },
            LoadGenConfig {
                duration: Duration::ZERO,
                ..base.clone()
            },
            LoadGenConfig {
                request_timeout: Duration::MAX,
                ..base.clone()
            },
            LoadGenConfig {
                path: "nope".into(),
                ..base.clone()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }
}
