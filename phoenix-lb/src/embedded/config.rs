//! The builder and the settings it validates.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::EmbeddedError;
use super::EmbeddedBalancer;

/// How the balancer checks a member's health.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthCheck {
    /// `GET path` on the member's endpoint, on a new connection; a 2xx
    /// answer within the check timeout passes.
    HttpGet {
        /// The request target, such as `/health`.
        path: String,
    },
    /// A TCP connection accepted within the check timeout passes.
    TcpConnect,
}

impl HealthCheck {
    /// `GET path`, expecting 2xx.
    pub fn http_get(path: impl Into<String>) -> Self {
        Self::HttpGet { path: path.into() }
    }
}

impl Default for HealthCheck {
    /// `GET /health`, expecting 2xx.
    fn default() -> Self {
        Self::http_get("/health")
    }
}

/// The longest interval or timeout accepted.
const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// The validated settings the running balancer uses.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) health_check: HealthCheck,
    pub(crate) check_interval: Duration,
    pub(crate) check_timeout: Duration,
    pub(crate) rise: u32,
    pub(crate) fall: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) connect_attempts: u32,
    pub(crate) redispatch_buffer: usize,
    pub(crate) drain_default: Duration,
}

/// The default of [`EmbeddedBalancerBuilder::redispatch_buffer`]: a
/// request head with its cookies fits.
const DEFAULT_REDISPATCH_BUFFER: usize = 16 * 1024;

/// The largest [`EmbeddedBalancerBuilder::redispatch_buffer`] accepted: it
/// is held per client connection until the member answers.
const MAX_REDISPATCH_BUFFER: usize = 1024 * 1024;

/// Configures and starts an [`EmbeddedBalancer`].
///
/// Defaults: listen on `127.0.0.1:0` (an ephemeral loopback port),
/// `GET /health` every second with a 500 ms timeout, healthy after 2
/// consecutive passes, unhealthy after 3 consecutive failures, connects
/// time out after 1 s, 3 connection attempts across members, a 16 KiB
/// redispatch buffer, 30 s default drain.
#[derive(Debug, Clone)]
#[must_use]
pub struct EmbeddedBalancerBuilder {
    pub(crate) listen: SocketAddr,
    pub(crate) allow_non_loopback: bool,
    pub(crate) settings: Settings,
    pub(crate) shutdown: Option<CancellationToken>,
}

impl Default for EmbeddedBalancerBuilder {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            allow_non_loopback: false,
            settings: Settings {
                health_check: HealthCheck::default(),
                check_interval: Duration::from_secs(1),
                check_timeout: Duration::from_millis(500),
                rise: 2,
                fall: 3,
                connect_timeout: Duration::from_secs(1),
                connect_attempts: 3,
                redispatch_buffer: DEFAULT_REDISPATCH_BUFFER,
                drain_default: Duration::from_secs(30),
            },
            shutdown: None,
        }
    }
}

impl EmbeddedBalancerBuilder {
    /// Where clients connect; port 0 picks a free one (see
    /// [`EmbeddedBalancer::local_addr`]). Must be a loopback address unless
    /// [`allow_non_loopback`](Self::allow_non_loopback) is set.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Allows a listen address other than loopback, exposing the proxy
    /// beyond this machine.
    pub fn allow_non_loopback(mut self, allow: bool) -> Self {
        self.allow_non_loopback = allow;
        self
    }

    /// How members are checked.
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.settings.health_check = check;
        self
    }

    /// Time between the starts of two checks of one member. The first check
    /// runs as soon as the member is attached.
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.settings.check_interval = interval;
        self
    }

    /// How long one check may take before it counts as failed.
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.settings.check_timeout = timeout;
        self
    }

    /// Consecutive passes that make a member healthy (from `Unknown` or
    /// `Unhealthy`).
    pub fn rise(mut self, rise: u32) -> Self {
        self.settings.rise = rise;
        self
    }

    /// Consecutive failures that make a member unhealthy (from `Unknown`
    /// or `Healthy`).
    pub fn fall(mut self, fall: u32) -> Self {
        self.settings.fall = fall;
        self
    }

    /// How long one connection attempt to a member may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// How many members a new client connection may be tried on before it
    /// is closed unserved (each on a different member).
    pub fn connect_attempts(mut self, attempts: u32) -> Self {
        self.settings.connect_attempts = attempts;
        self
    }

    /// How many bytes of a client connection's first request the balancer
    /// keeps until a member answers, to send them to another member if
    /// the one it picked closes or resets the connection before answering
    /// (it died holding the request). Only `GET`, `HEAD` and `OPTIONS`
    /// requests are sent again, and only when they fit; a member that
    /// answered anything owns the connection. Each redispatch uses one of
    /// the [`connect_attempts`](Self::connect_attempts). 0 turns
    /// redispatch off; at most 1 MiB.
    pub fn redispatch_buffer(mut self, bytes: usize) -> Self {
        self.settings.redispatch_buffer = bytes;
        self
    }

    /// The drain used by [`EmbeddedBalancer::detach_default`].
    pub fn drain_default(mut self, drain: Duration) -> Self {
        self.settings.drain_default = drain;
        self
    }

    /// Stops the balancer when `token` is cancelled, as
    /// [`EmbeddedBalancer::shutdown`] does (without waiting).
    pub fn shutdown_token(mut self, token: CancellationToken) -> Self {
        self.shutdown = Some(token);
        self
    }

    /// Validates the settings, binds the listen address and starts
    /// accepting connections. Must run inside a tokio runtime with I/O and
    /// time enabled.
    ///
    /// # Errors
    ///
    /// A setting out of range, a non-loopback address that was not allowed,
    /// or the bind failing.
    pub async fn start(self) -> Result<EmbeddedBalancer, EmbeddedError> {
        self.validate()?;
        EmbeddedBalancer::start(self).await
    }

    fn validate(&self) -> Result<(), EmbeddedError> {
        let s = &self.settings;
        let invalid = |setting, reason: &str| {
            Err(EmbeddedError::InvalidSetting {
                setting,
                reason: reason.to_owned(),
            })
        };
        if !self.allow_non_loopback && !self.listen.ip().is_loopback() {
            return Err(EmbeddedError::NotLoopback { addr: self.listen });
        }
        for (setting, value) in [
            ("check_interval", s.check_interval),
            ("check_timeout", s.check_timeout),
            ("connect_timeout", s.connect_timeout),
        ] {
            if value.is_zero() {
                return invalid(setting, "must be positive");
            }
            if value > MAX_PERIOD {
                return invalid(setting, "must be at most one day");
            }
        }
        if s.rise == 0 {
            return invalid("rise", "must be at least 1");
        }
        if s.fall == 0 {
            return invalid("fall", "must be at least 1");
        }
        if s.connect_attempts == 0 {
            return invalid("connect_attempts", "must be at least 1");
        }
        if s.redispatch_buffer > MAX_REDISPATCH_BUFFER {
            return invalid("redispatch_buffer", "must be at most 1 MiB");
        }
        if let HealthCheck::HttpGet { path } = &s.health_check {
            crate::http::validate_path(path).map_err(|e| EmbeddedError::InvalidCheckPath {
                path: path.clone(),
                source: Box::new(e),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn refuses_bad_settings() {
        let b = EmbeddedBalancerBuilder::default;
        assert!(b().validate().is_ok());
        assert!(matches!(
            b().listen("0.0.0.0:0".parse().unwrap()).validate(),
            Err(EmbeddedError::NotLoopback { .. })
        ));
        assert!(b()
            .listen(SocketAddr::from(([0, 0, 0, 0], 0)))
            .allow_non_loopback(true)
            .validate()
            .is_ok());
        assert!(b().listen("[::1]:0".parse().unwrap()).validate().is_ok());
        for bad in [
            b().rise(0),
            b().fall(0),
            b().connect_attempts(0),
            b().redispatch_buffer(MAX_REDISPATCH_BUFFER + 1),
            b().check_interval(Duration::ZERO),
            b().check_timeout(Duration::ZERO),
            b().connect_timeout(Duration::ZERO),
            b().check_interval(Duration::MAX),
        ] {
            assert!(matches!(
                bad.validate(),
                Err(EmbeddedError::InvalidSetting { .. })
            ));
        }
        assert!(matches!(
            b().health_check(HealthCheck::http_get("health")).validate(),
            Err(EmbeddedError::InvalidCheckPath { .. })
        ));
    }
}
