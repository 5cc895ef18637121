//! The balancer's builder and the settings it validates.

use std::sync::Arc;
use std::time::Duration;

use super::client::{check_name, ConnectionMode, RuntimeAddr, RuntimeApi};
use super::{HaproxyBalancer, HaproxyError};

/// The most servers one `attach` or `detach` accepts. HAProxy has no such
/// limit; this bounds one pipelined batch (a few hundred kilobytes of
/// commands and answers).
pub const MAX_BATCH: usize = 500;

/// Health-check settings for the servers the balancer adds.
///
/// HAProxy 2.6 applies no `default-server` line to servers added at
/// runtime, so these travel with every `add server`. *What* is checked is
/// the backend's: `option httpchk GET /health` (and `http-check expect`)
/// in the backend section apply to dynamic servers too; HAProxy 2.6 has no
/// per-server keyword for the check request, so the check path belongs in
/// the configuration (see [`super::LocalHaproxy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerCheck {
    /// `inter`: time between checks.
    pub inter: Duration,
    /// `rise`: consecutive passes that make a down server up.
    pub rise: u32,
    /// `fall`: consecutive failures that make an up server down.
    pub fall: u32,
    /// `fastinter`: time between checks while the state is changing.
    pub fastinter: Option<Duration>,
    /// `downinter`: time between checks while the server is down.
    pub downinter: Option<Duration>,
}

impl Default for ServerCheck {
    /// `check inter 1s rise 2 fall 3`.
    fn default() -> Self {
        Self {
            inter: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            fastinter: None,
            downinter: None,
        }
    }
}

impl ServerCheck {
    /// `inter`, `rise` and `fall`.
    pub fn new(inter: Duration, rise: u32, fall: u32) -> Self {
        Self {
            inter,
            rise,
            fall,
            ..Self::default()
        }
    }
}

/// HAProxy's time syntax, in milliseconds (at least 1).
pub(crate) fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// The validated settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) backend: String,
    /// The keywords every `add server` carries.
    pub(crate) server_options: String,
    pub(crate) checked: bool,
    /// The longest time between two finished checks of a server: twice
    /// its longest interval (a check may take up to an interval, HAProxy's
    /// default `timeout check`).
    pub(crate) check_every: Option<Duration>,
    pub(crate) start_down: bool,
    pub(crate) weight: u32,
    pub(crate) drain_poll: Duration,
    pub(crate) removal_grace: Duration,
}

/// Configures a [`HaproxyBalancer`].
///
/// Defaults: checks `inter 1s rise 2 fall 3`, added servers start down
/// until their first checks pass, weight 1, drain polled every 20 ms
/// (starting at 1 ms and doubling), 5 s per command batch, a kept-alive
/// session, 5 s of retries after a drain deadline while HAProxy refuses to
/// delete a server.
#[derive(Debug, Clone)]
#[must_use]
pub struct HaproxyBalancerBuilder {
    runtime: Option<RuntimeAddr>,
    backend: Option<String>,
    check: Option<ServerCheck>,
    start_down: bool,
    weight: u32,
    extra_options: String,
    drain_poll: Duration,
    command_timeout: Duration,
    idle_reconnect: Duration,
    connection_mode: ConnectionMode,
    removal_grace: Duration,
}

impl Default for HaproxyBalancerBuilder {
    fn default() -> Self {
        Self {
            runtime: None,
            backend: None,
            check: Some(ServerCheck::default()),
            start_down: true,
            weight: 1,
            extra_options: String::new(),
            drain_poll: Duration::from_millis(20),
            command_timeout: Duration::from_secs(5),
            idle_reconnect: Duration::from_secs(5),
            connection_mode: ConnectionMode::default(),
            removal_grace: Duration::from_secs(5),
        }
    }
}

const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

impl HaproxyBalancerBuilder {
    /// The runtime API: a `stats socket … level admin`, Unix path or TCP
    /// address. Required.
    pub fn runtime_api(mut self, addr: impl Into<RuntimeAddr>) -> Self {
        self.runtime = Some(addr.into());
        self
    }

    /// The backend whose servers Phoenix manages. Required. It must use a
    /// dynamic algorithm (`roundrobin`, `leastconn`, …), as `add server`
    /// requires.
    pub fn backend(mut self, name: impl Into<String>) -> Self {
        self.backend = Some(name.into());
        self
    }

    /// Health checks for added servers; `None` adds them unchecked (HAProxy
    /// then sends them traffic whatever their state, and
    /// [`members`](phoenix_core::ports::LoadBalancer::members) reports them
    /// healthy while HAProxy considers them up).
    pub fn check(mut self, check: Option<ServerCheck>) -> Self {
        self.check = check;
        self
    }

    /// Whether an added (or re-enabled) server starts down and takes
    /// traffic only once `rise` checks pass (default), rather than at once
    /// (HAProxy's own default for a server leaving maintenance). Ignored
    /// without checks.
    pub fn start_down(mut self, start_down: bool) -> Self {
        self.start_down = start_down;
        self
    }

    /// The weight of added servers, 1 to 256 (default 1).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// More `add server` keywords, such as `maxconn 200 slowstart 5s`.
    pub fn server_options(mut self, options: impl Into<String>) -> Self {
        self.extra_options = options.into();
        self
    }

    /// The longest wait between two looks at a draining server's sessions
    /// (the first look is immediate, then 1 ms, doubling up to this).
    pub fn drain_poll(mut self, every: Duration) -> Self {
        self.drain_poll = every;
        self
    }

    /// Time for one batch of commands.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Reopen the kept-alive session rather than reuse it after this long
    /// idle (keep it below the socket's `stats timeout`, 10 s by default).
    pub fn idle_reconnect(mut self, idle: Duration) -> Self {
        self.idle_reconnect = idle;
        self
    }

    /// How commands reach HAProxy.
    pub fn connection_mode(mut self, mode: ConnectionMode) -> Self {
        self.connection_mode = mode;
        self
    }

    /// How long after a drain deadline `detach` keeps trying to delete a
    /// server HAProxy says still has connections, before it gives up with
    /// HAProxy's message.
    pub fn removal_grace(mut self, grace: Duration) -> Self {
        self.removal_grace = grace;
        self
    }

    /// Validates the settings. Nothing connects yet: the first call does.
    ///
    /// # Errors
    ///
    /// [`HaproxyError::InvalidSetting`] naming the setting.
    pub fn build(self) -> Result<HaproxyBalancer, HaproxyError> {
        let invalid = |setting, reason: &str| HaproxyError::InvalidSetting {
            setting,
            reason: reason.to_owned(),
        };
        let runtime = self
            .runtime
            .ok_or_else(|| invalid("runtime_api", "is required"))?;
        let backend = self
            .backend
            .ok_or_else(|| invalid("backend", "is required"))?;
        check_name("backend", &backend)?;
        if !(1..=256).contains(&self.weight) {
            return Err(invalid("weight", "must be between 1 and 256"));
        }
        if self.extra_options.contains(['\n', '\r', ';']) {
            return Err(invalid(
                "server_options",
                "must not contain newlines or `;`",
            ));
        }
        for (setting, value) in [
            ("drain_poll", self.drain_poll),
            ("command_timeout", self.command_timeout),
            ("idle_reconnect", self.idle_reconnect),
        ] {
            if value.is_zero() || value > MAX_PERIOD {
                return Err(invalid(setting, "must be positive and at most one day"));
            }
        }
        if self.removal_grace > MAX_PERIOD {
            return Err(invalid("removal_grace", "must be at most one day"));
        }
        let mut options = Vec::new();
        if let Some(c) = &self.check {
            if c.rise == 0 || c.fall == 0 {
                return Err(invalid("check", "rise and fall must be at least 1"));
            }
            for d in [Some(c.inter), c.fastinter, c.downinter]
                .into_iter()
                .flatten()
            {
                if d.is_zero() || d > MAX_PERIOD {
                    return Err(invalid(
                        "check",
                        "intervals must be positive and at most one day",
                    ));
                }
            }
            options.push(format!(
                "check inter {} rise {} fall {}",
                ms(c.inter),
                c.rise,
                c.fall
            ));
            if let Some(d) = c.fastinter {
                options.push(format!("fastinter {}", ms(d)));
            }
            if let Some(d) = c.downinter {
                options.push(format!("downinter {}", ms(d)));
            }
        }
        options.push(format!("weight {}", self.weight));
        let extra = self.extra_options.trim();
        if !extra.is_empty() {
            options.push(extra.to_owned());
        }
        let api = RuntimeApi::new(runtime)
            .timeout(self.command_timeout)
            .idle_reconnect(self.idle_reconnect)
            .connection_mode(self.connection_mode);
        Ok(HaproxyBalancer {
            api: Arc::new(api),
            settings: Arc::new(Settings {
                backend,
                server_options: options.join(" "),
                checked: self.check.is_some(),
                check_every: self.check.map(|c| {
                    2 * [Some(c.inter), c.fastinter, c.downinter]
                        .into_iter()
                        .flatten()
                        .max()
                        .unwrap_or(c.inter)
                }),
                start_down: self.start_down && self.check.is_some(),
                weight: self.weight,
                drain_poll: self.drain_poll,
                removal_grace: self.removal_grace,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn base() -> HaproxyBalancerBuilder {
        HaproxyBalancer::builder()
            .runtime_api(std::path::PathBuf::from("/tmp/x.sock"))
            .backend("be")
    }

    #[test]
    fn builds_the_server_options() {
        let lb = base()
            .check(Some(ServerCheck {
                fastinter: Some(Duration::from_millis(50)),
                ..ServerCheck::new(Duration::from_millis(100), 1, 2)
            }))
            .weight(10)
            .server_options(" maxconn 50 ")
            .build()
            .unwrap();
        assert_eq!(
            lb.settings.server_options,
            "check inter 100ms rise 1 fall 2 fastinter 50ms weight 10 maxconn 50"
        );
        let unchecked = base().check(None).build().unwrap();
        assert_eq!(unchecked.settings.server_options, "weight 1");
        assert!(!unchecked.settings.start_down);
    }

    #[test]
    fn refuses_bad_settings() {
        assert!(HaproxyBalancer::builder().backend("be").build().is_err());
        assert!(HaproxyBalancer::builder()
            .runtime_api(std::path::PathBuf::from("/x"))
            .build()
            .is_err());
        for bad in [
            base().backend("a b"),
            base().backend("be;del server be/x"),
            base().weight(0),
            base().weight(257),
            base().server_options("maxconn 1\nadd server"),
            base().server_options("maxconn 1; del server be/x"),
            base().drain_poll(Duration::ZERO),
            base().command_timeout(Duration::MAX),
            base().check(Some(ServerCheck::new(Duration::ZERO, 1, 1))),
            base().check(Some(ServerCheck::new(Duration::from_secs(1), 0, 1))),
        ] {
            assert!(
                matches!(bad.build(), Err(HaproxyError::InvalidSetting { .. })),
                "accepted a bad setting"
            );
        }
    }
}
