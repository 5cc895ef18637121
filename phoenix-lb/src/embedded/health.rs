//! Active health checks: one task per member, started on attach and
//! stopped when the member leaves the set (or the balancer shuts down).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use phoenix_core::ports::MemberHealth;
use tokio::time::MissedTickBehavior;

use super::config::{HealthCheck, Settings};
use super::members::MemberEntry;
use super::stats::bump;
use crate::http::{self, HttpError};

/// Body bytes a health answer may have; the rest is not read.
const CHECK_BODY_LIMIT: u64 = 64 * 1024;

/// Why one check failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    /// The HTTP exchange failed (connect, timeout, reset, garbage).
    #[error("health check GET {path}")]
    Http {
        path: String,
        #[source]
        source: HttpError,
    },
    /// The member answered, but not 2xx.
    #[error("health check GET {path} answered {status}")]
    Status { path: String, status: StatusCode },
    /// The TCP connection failed.
    #[error("health check: connecting to {endpoint}")]
    Connect {
        endpoint: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The TCP connection did not complete in time.
    #[error("health check: connecting to {endpoint}: no connection within {after:?}")]
    ConnectTimeout {
        endpoint: SocketAddr,
        after: Duration,
    },
}

/// Rise/fall bookkeeping: `Unknown` until `rise` consecutive passes,
/// `Unhealthy` after `fall` consecutive failures.
#[derive(Debug, Clone)]
pub(crate) struct HealthTracker {
    rise: u32,
    fall: u32,
    passes: u32,
    failures: u32,
    state: MemberHealth,
}

impl HealthTracker {
    pub(crate) fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise,
            fall,
            passes: 0,
            failures: 0,
            state: MemberHealth::Unknown,
        }
    }

    /// Records a passed check; returns the health now.
    pub(crate) fn pass(&mut self) -> MemberHealth {
        self.failures = 0;
        self.passes = self.passes.saturating_add(1);
        if self.passes >= self.rise {
            self.state = MemberHealth::Healthy;
        }
        self.state
    }

    /// Records a failed check; returns the health now.
    pub(crate) fn fail(&mut self) -> MemberHealth {
        self.passes = 0;
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.fall {
            self.state = MemberHealth::Unhealthy;
        }
        self.state
    }
}

/// Checks `entry` every interval until it is retired.
pub(crate) async fn run(entry: Arc<MemberEntry>, settings: Arc<Settings>) {
    let mut ticker = tokio::time::interval(settings.check_interval);
    // A slow check delays the next one instead of causing a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tracker = HealthTracker::new(settings.rise, settings.fall);
    loop {
        tokio::select! {
            biased;
            () = entry.retired.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let outcome = tokio::select! {
            biased;
            () = entry.retired.cancelled() => return,
            outcome = check_once(&settings, entry.endpoint) => outcome,
        };
        let before = entry.health();
        let now = match outcome {
            Ok(()) => {
                bump(&entry.counters.checks_passed);
                entry.recent_failures.store(0, Ordering::Relaxed);
                entry.set_last_check_error(None);
                tracker.pass()
            }
            Err(e) => {
                bump(&entry.counters.checks_failed);
                let why = phoenix_core::error_chain(&e);
                tracing::debug!(server = %entry.server, error = %why, "health check failed");
                entry.set_last_check_error(Some(why));
                tracker.fail()
            }
        };
        if now != before {
            tracing::info!(server = %entry.server, endpoint = %entry.endpoint, from = ?before, to = ?now, "member health changed");
            entry.set_health(now);
        }
        entry.checked(tokio::time::Instant::now());
    }
}

async fn check_once(settings: &Settings, endpoint: SocketAddr) -> Result<(), CheckError> {
    let timeout = settings.check_timeout;
    match &settings.health_check {
        HealthCheck::HttpGet { path } => {
            let answer = http::get_once(endpoint, path, timeout, CHECK_BODY_LIMIT)
                .await
                .map_err(|source| CheckError::Http {
                    path: path.clone(),
                    source,
                })?;
            if answer.status.is_success() {
                Ok(())
            } else {
                Err(CheckError::Status {
                    path: path.clone(),
                    status: answer.status,
                })
            }
        }
        HealthCheck::TcpConnect => {
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(endpoint))
                .await
                .map_err(|_| CheckError::ConnectTimeout {
                    endpoint,
                    after: timeout,
                })?
                .map_err(|source| CheckError::Connect { endpoint, source })?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall() {
        let mut t = HealthTracker::new(2, 3);
        assert_eq!(t.pass(), MemberHealth::Unknown);
        assert_eq!(t.pass(), MemberHealth::Healthy);
        assert_eq!(t.fail(), MemberHealth::Healthy);
        assert_eq!(t.fail(), MemberHealth::Healthy);
        assert_eq!(
            t.pass(),
            MemberHealth::Healthy,
            "a pass resets the failures"
        );
        assert_eq!(t.fail(), MemberHealth::Healthy);
        assert_eq!(t.fail(), MemberHealth::Healthy);
        assert_eq!(t.fail(), MemberHealth::Unhealthy);
        assert_eq!(t.pass(), MemberHealth::Unhealthy);
        assert_eq!(
            t.fail(),
            MemberHealth::Unhealthy,
            "a failure resets the passes"
        );
        assert_eq!(t.pass(), MemberHealth::Unhealthy);
        assert_eq!(t.pass(), MemberHealth::Healthy);

        let mut fresh = HealthTracker::new(2, 1);
        assert_eq!(fresh.fail(), MemberHealth::Unhealthy, "unknown falls too");
    }
}
