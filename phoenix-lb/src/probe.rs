//! An HTTP [`Probe`]: health and smoke checks over HTTP/1.1.
//!
//! - [`Check::Health`]: `GET` the health path (default `/health`); a 2xx
//!   answer within the timeout passes.
//! - [`Check::Smoke`]: `GET` the smoke path (default `/`); it passes on a
//!   2xx answer whose [`RELEASE_HEADER`](crate::RELEASE_HEADER), when
//!   present, names the release the target should run.
//!
//! A server that refuses the connection, resets it, answers garbage, a
//! non-2xx status or the wrong release, or does not answer in time fails
//! the check (`Ok` with `passed: false` and a detail saying what was
//! seen). `Err` is kept for a probe that cannot run at all.

use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::ports::{Check, ErrorKind, PortError, Probe, ProbeOutcome, ProbeTarget};
use tokio::time::Instant;

use crate::http::{self, Answer, HttpError};

/// Body bytes a probe reads at most; a longer body fails the check.
const BODY_LIMIT: u64 = 1024 * 1024;

/// Why an [`HttpProbe`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeConfigError {
    /// A path is not an origin-form request target.
    #[error("HTTP probe {which} path {path:?} is invalid")]
    InvalidPath {
        /// `health` or `smoke`.
        which: &'static str,
        /// The refused path.
        path: String,
        /// What is wrong with it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The timeout is zero or longer than a day.
    #[error("HTTP probe timeout {timeout:?} is out of range (1 ns to 1 day)")]
    InvalidTimeout {
        /// The refused timeout.
        timeout: Duration,
    },
}

/// Health and smoke checks over HTTP/1.1; see the
/// [module documentation](self).
#[derive(Debug, Clone)]
pub struct HttpProbe {
    health_path: String,
    smoke_path: String,
    timeout: Duration,
}

impl Default for HttpProbe {
    /// `/health` and `/`, with a 2 s timeout.
    fn default() -> Self {
        Self {
            health_path: "/health".to_owned(),
            smoke_path: "/".to_owned(),
            timeout: Duration::from_secs(2),
        }
    }
}

impl HttpProbe {
    /// The defaults: `/health`, `/`, 2 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a probe with other paths or timeout.
    pub fn builder() -> HttpProbeBuilder {
        HttpProbeBuilder {
            probe: Self::default(),
        }
    }
}

/// Configures an [`HttpProbe`].
#[derive(Debug, Clone)]
#[must_use]
pub struct HttpProbeBuilder {
    probe: HttpProbe,
}

impl HttpProbeBuilder {
    /// The path [`Check::Health`] requests (default `/health`).
    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        self.probe.health_path = path.into();
        self
    }

    /// The path [`Check::Smoke`] requests (default `/`).
    pub fn smoke_path(mut self, path: impl Into<String>) -> Self {
        self.probe.smoke_path = path.into();
        self
    }

    /// How long one check may take, connect included (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.probe.timeout = timeout;
        self
    }

    /// Validates the paths and the timeout.
    ///
    /// # Errors
    ///
    /// A path that is not an origin-form target (`/…`), or a timeout of
    /// zero or over a day.
    pub fn build(self) -> Result<HttpProbe, ProbeConfigError> {
        let p = self.probe;
        for (which, path) in [("health", &p.health_path), ("smoke", &p.smoke_path)] {
            http::validate_path(path).map_err(|e| ProbeConfigError::InvalidPath {
                which,
                path: path.clone(),
                source: Box::new(e),
            })?;
        }
        if p.timeout.is_zero() || p.timeout > Duration::from_secs(24 * 3600) {
            return Err(ProbeConfigError::InvalidTimeout { timeout: p.timeout });
        }
        Ok(p)
    }
}

fn judge(
    target: &ProbeTarget,
    check: Check,
    url: &str,
    answer: &Answer,
    took: Duration,
) -> ProbeOutcome {
    let failed = |detail: String| ProbeOutcome {
        passed: false,
        detail,
    };
    if !answer.status.is_success() {
        return failed(format!("GET {url} answered {} in {took:?}", answer.status));
    }
    let mut seen = String::new();
    if check == Check::Smoke {
        if let Some(value) = &answer.release {
            let expected = target.release.as_str();
            match value.to_str() {
                Ok(release) if release == expected => {
                    seen = format!(", release {release}");
                }
                Ok(release) => {
                    return failed(format!(
                        "GET {url} answered {} but {} is {release:?}, expected {expected:?} \
                         (the server runs another release)",
                        answer.status,
                        crate::RELEASE_HEADER
                    ));
                }
                Err(_) => {
                    return failed(format!(
                        "GET {url} answered {} with an unreadable {} header ({:?}), expected {expected:?}",
                        answer.status,
                        crate::RELEASE_HEADER,
                        value
                    ));
                }
            }
        }
    }
    ProbeOutcome {
        passed: true,
        detail: format!("GET {url} answered {}{seen} in {took:?}", answer.status),
    }
}

#[async_trait]
impl Probe for HttpProbe {
    async fn check(&self, target: &ProbeTarget, check: Check) -> Result<ProbeOutcome, PortError> {
        let path = match check {
            Check::Health => &self.health_path,
            Check::Smoke => &self.smoke_path,
        };
        let url = format!("http://{}{path}", target.endpoint);
        let started = Instant::now();
        match http::get_once(target.endpoint, path, self.timeout, BODY_LIMIT).await {
            Ok(answer) => Ok(judge(target, check, &url, &answer, started.elapsed())),
            Err(e @ (HttpError::InvalidPath { .. } | HttpError::BuildRequest { .. })) => {
                Err(PortError::new(
                    format!("http probe: {check:?} check of {} ({url})", target.server),
                    ErrorKind::Invalid(e.to_string()),
                )
                .with_source(e))
            }
            Err(e) => Ok(ProbeOutcome {
                passed: false,
                detail: format!("GET {url}: {}", phoenix_core::error_chain(&e)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use hyper::header::HeaderValue;
    use hyper::StatusCode;

    use super::*;

    fn target() -> ProbeTarget {
        ProbeTarget {
            server: "web-1".parse().unwrap(),
            endpoint: "127.0.0.1:8080".parse().unwrap(),
            release: "v1".parse().unwrap(),
            role: "web".parse().unwrap(),
        }
    }

    fn answer(status: u16, release: Option<&[u8]>) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            release: release.map(|r| HeaderValue::from_bytes(r).unwrap()),
            body_bytes: 0,
            connection_done: true,
        }
    }

    #[test]
    fn judging_answers() {
        let t = target();
        let ms = Duration::from_millis(1);
        let ok = judge(&t, Check::Smoke, "u", &answer(200, Some(b"v1")), ms);
        assert!(ok.passed, "{ok:?}");
        assert!(ok.detail.contains("release v1"));
        assert!(judge(&t, Check::Smoke, "u", &answer(204, None), ms).passed);
        let wrong = judge(&t, Check::Smoke, "u", &answer(200, Some(b"v2")), ms);
        assert!(!wrong.passed);
        assert!(
            wrong.detail.contains("\"v2\"") && wrong.detail.contains("\"v1\""),
            "{}",
            wrong.detail
        );
        let garbled = judge(&t, Check::Smoke, "u", &answer(200, Some(b"v\xff")), ms);
        assert!(!garbled.passed);
        assert!(
            judge(&t, Check::Health, "u", &answer(200, Some(b"v2")), ms).passed,
            "health ignores the release"
        );
        let bad = judge(&t, Check::Health, "u", &answer(503, None), ms);
        assert!(!bad.passed);
        assert!(bad.detail.contains("503"));
    }

    #[test]
    fn builder_validates() {
        assert!(HttpProbe::builder().health_path("/healthz").build().is_ok());
        assert!(HttpProbe::builder().health_path("healthz").build().is_err());
        assert!(HttpProbe::builder()
            .smoke_path("http://x/")
            .build()
            .is_err());
        assert!(HttpProbe::builder()
            .timeout(Duration::ZERO)
            .build()
            .is_err());
    }
}
