//! A haproxy of our own on loopback, for tests, benchmarks and examples.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::client::{check_name, cmd, parse_servers_state, RuntimeAddr, RuntimeApi};
use super::config::ms;
use super::{HaproxyBalancer, HaproxyBalancerBuilder};

/// The environment variable naming the haproxy binary (the test script
/// sets it); without it, `haproxy` is looked up on `PATH`.
pub const HAPROXY_ENV: &str = "PHOENIX_HAPROXY";

/// HAProxy's proxy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// `mode http`: HAProxy parses requests, keeps client connections
    /// alive across servers and retries a request whose server connection
    /// failed or closed before answering (`retry-on conn-failure
    /// empty-response response-timeout`), so a server that dies costs no
    /// request. The default.
    #[default]
    Http,
    /// `mode tcp`: HAProxy relays connections, as the embedded balancer
    /// does; only failed connects are retried.
    Tcp,
}

impl Mode {
    fn keyword(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
        }
    }
}

/// Why a [`LocalHaproxy`] could not start or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalHaproxyError {
    /// A setting is out of range.
    #[error("local haproxy setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The builder method.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The temporary directory or a file in it could not be made.
    #[error("local haproxy: preparing {path}")]
    Files {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No free loopback port.
    #[error("local haproxy: finding a free port on 127.0.0.1")]
    Port {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The binary could not be run.
    #[error(
        "local haproxy: running {binary} failed (install haproxy, e.g. `apt-get install haproxy`, \
         or set {HAPROXY_ENV} to its path)"
    )]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// haproxy exited while starting; `log` is what it printed.
    #[error("local haproxy exited while starting ({status}): {log}")]
    Exited {
        /// How it exited.
        status: String,
        /// Its output.
        log: String,
    },
    /// haproxy did not answer on its socket and frontend in time.
    #[error("local haproxy was not ready within {after:?} ({last}); its output: {log}")]
    NotReady {
        /// The limit.
        after: Duration,
        /// The last thing that failed.
        last: String,
        /// Its output.
        log: String,
    },
    /// Waiting for the process failed.
    #[error("local haproxy: waiting for process {pid}")]
    Wait {
        /// Its pid.
        pid: u32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Signalling the process failed.
    #[error("local haproxy: signalling process {pid}")]
    Signal {
        /// Its pid.
        pid: u32,
        /// The cause.
        #[source]
        source: nix::errno::Errno,
    },
}

/// The load-balancing algorithm (both are dynamic, as `add server`
/// requires).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Balance {
    /// `balance leastconn`: the server with the fewest connections. The
    /// default, as for the embedded balancer.
    #[default]
    LeastConn,
    /// `balance roundrobin`.
    RoundRobin,
}

/// Configures a [`LocalHaproxy`].
///
/// Defaults: the binary from `$PHOENIX_HAPROXY`, else `haproxy` on
/// `PATH`; `mode http`; a backend named `phoenix` with `balance
/// leastconn` and `option httpchk GET /health` (2xx passes); `timeout
/// connect 1s`, `client 30s`, `server 30s`; `retries 3`; HAProxy's default
/// thread count; 10 s to start.
#[derive(Debug, Clone)]
#[must_use]
pub struct LocalHaproxyBuilder {
    binary: Option<PathBuf>,
    mode: Mode,
    balance: Balance,
    backend: String,
    check_path: String,
    timeout_connect: Duration,
    timeout_client: Duration,
    timeout_server: Duration,
    retries: u32,
    threads: Option<u32>,
    admin_tcp: bool,
    start_timeout: Duration,
}

impl Default for LocalHaproxyBuilder {
    fn default() -> Self {
        Self {
            binary: None,
            mode: Mode::default(),
            balance: Balance::default(),
            backend: "phoenix".to_owned(),
            check_path: "/health".to_owned(),
            timeout_connect: Duration::from_secs(1),
            timeout_client: Duration::from_secs(30),
            timeout_server: Duration::from_secs(30),
            retries: 3,
            threads: None,
            admin_tcp: false,
            start_timeout: Duration::from_secs(10),
        }
    }
}

impl LocalHaproxyBuilder {
    /// The haproxy binary.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// `mode http` or `mode tcp`.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The algorithm.
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// The backend's name.
    pub fn backend(mut self, name: impl Into<String>) -> Self {
        self.backend = name.into();
        self
    }

    /// The health-check request target (`option httpchk GET <path>`).
    pub fn check_path(mut self, path: impl Into<String>) -> Self {
        self.check_path = path.into();
        self
    }

    /// `timeout connect`, `timeout client`, `timeout server`.
    pub fn timeouts(mut self, connect: Duration, client: Duration, server: Duration) -> Self {
        self.timeout_connect = connect;
        self.timeout_client = client;
        self.timeout_server = server;
        self
    }

    /// `retries`: attempts after a failed one (each on another server, as
    /// `option redispatch 1` asks).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// `nbthread`; HAProxy's default (one per CPU) if unset.
    pub fn threads(mut self, threads: u32) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Also serve the runtime API on a TCP loopback port (see
    /// [`LocalHaproxy::admin_tcp`]).
    pub fn admin_tcp(mut self, enable: bool) -> Self {
        self.admin_tcp = enable;
        self
    }

    /// How long to wait for the socket and the frontend to answer.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<(), LocalHaproxyError> {
        let invalid =
            |setting, reason: String| LocalHaproxyError::InvalidSetting { setting, reason };
        check_name("backend", &self.backend).map_err(|e| invalid("backend", e.to_string()))?;
        let path_ok = self.check_path.starts_with('/')
            && self
                .check_path
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '\\' && c != '"' && c != '#');
        if !path_ok {
            return Err(invalid(
                "check_path",
                format!("{:?} is not an origin-form path", self.check_path),
            ));
        }
        for (setting, value) in [
            ("timeouts", self.timeout_connect),
            ("timeouts", self.timeout_client),
            ("timeouts", self.timeout_server),
            ("start_timeout", self.start_timeout),
        ] {
            if value.is_zero() || value > Duration::from_secs(24 * 3600) {
                return Err(invalid(
                    setting,
                    "must be positive and at most one day".into(),
                ));
            }
        }
        if self.threads == Some(0) || self.threads.is_some_and(|t| t > 64) {
            return Err(invalid("threads", "must be between 1 and 64".into()));
        }
        if self.retries > 100 {
            return Err(invalid("retries", "must be at most 100".into()));
        }
        Ok(())
    }

    /// The configuration file for these settings.
    fn config(&self, dir: &Path, frontend: u16, admin_tcp: Option<u16>) -> String {
        let mut c = String::new();
        // `write!` into a String cannot fail.
        let _ = write!(
            c,
            "# Generated by phoenix-lb (LocalHaproxy).\n\
             global\n    \
             stats socket {sock} mode 600 level admin\n",
            sock = dir.join("admin.sock").display()
        );
        if let Some(port) = admin_tcp {
            let _ = writeln!(c, "    stats socket ipv4@127.0.0.1:{port} level admin");
        }
        // No `maxconn`: HAProxy derives it from the file-descriptor limit,
        // and refuses to start when asked for more than the limit allows.
        let _ = write!(
            c,
            "    stats timeout 1m\n    \
             hard-stop-after 5s\n"
        );
        if let Some(n) = self.threads {
            let _ = writeln!(c, "    nbthread {n}");
        }
        let _ = write!(
            c,
            "\ndefaults\n    \
             mode {mode}\n    \
             timeout connect {connect}\n    \
             timeout client {client}\n    \
             timeout server {server}\n    \
             retries {retries}\n    \
             option redispatch 1\n",
            mode = self.mode.keyword(),
            connect = ms(self.timeout_connect),
            client = ms(self.timeout_client),
            server = ms(self.timeout_server),
            retries = self.retries,
        );
        if self.mode == Mode::Http {
            let _ = writeln!(
                c,
                "    retry-on conn-failure empty-response response-timeout"
            );
        }
        let _ = write!(
            c,
            "\nfrontend phoenix_in\n    \
             bind 127.0.0.1:{frontend}\n    \
             default_backend {be}\n\
             \nbackend {be}\n    \
             balance {balance}\n    \
             option httpchk GET {path}\n    \
             http-check expect rstatus ^2\n    \
             # For servers written here; HAProxy 2.6 gives servers added at\n    \
             # runtime none of it (HaproxyBalancer sends its own check settings).\n    \
             default-server check inter 1s rise 2 fall 3\n",
            be = self.backend,
            balance = match self.balance {
                Balance::LeastConn => "leastconn",
                Balance::RoundRobin => "roundrobin",
            },
            path = self.check_path,
        );
        c
    }

    /// Writes the configuration into a new temporary directory, starts
    /// haproxy on it and waits until its runtime API and its frontend
    /// answer. A port taken between choosing it and haproxy binding it is
    /// retried with another.
    ///
    /// # Errors
    ///
    /// A bad setting, the binary missing, haproxy exiting (its output is in
    /// the error), or not answering in time.
    pub async fn start(self) -> Result<LocalHaproxy, LocalHaproxyError> {
        self.validate()?;
        let binary = self.binary.clone().unwrap_or_else(binary_from_env);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.start_once(&binary).await {
                Err(LocalHaproxyError::Exited { log, .. })
                    if attempt < 3 && log.contains("cannot bind") =>
                {
                    tracing::debug!(%log, "local haproxy lost its port; trying another");
                }
                other => return other,
            }
        }
    }

    async fn start_once(&self, binary: &Path) -> Result<LocalHaproxy, LocalHaproxyError> {
        let dir = tempfile::Builder::new()
            .prefix("phoenix-haproxy-")
            .tempdir()
            .map_err(|source| LocalHaproxyError::Files {
                path: std::env::temp_dir(),
                source,
            })?;
        let frontend_port = free_port()?;
        let admin_port = if self.admin_tcp {
            Some(free_port()?)
        } else {
            None
        };
        let config = self.config(dir.path(), frontend_port, admin_port);
        let config_path = dir.path().join("haproxy.cfg");
        let log_path = dir.path().join("haproxy.log");
        let files = |path: &Path| {
            let path = path.to_owned();
            move |source| LocalHaproxyError::Files { path, source }
        };
        std::fs::write(&config_path, &config).map_err(files(&config_path))?;
        let log = std::fs::File::create(&log_path).map_err(files(&log_path))?;
        let log_err = log.try_clone().map_err(files(&log_path))?;
        let child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| LocalHaproxyError::Spawn {
                binary: binary.to_owned(),
                source,
            })?;
        let mut local = LocalHaproxy {
            pid: child.id(),
            child,
            socket: dir.path().join("admin.sock"),
            log_path,
            config,
            frontend: SocketAddr::from((Ipv4Addr::LOCALHOST, frontend_port)),
            admin_tcp: admin_port.map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p))),
            backend: self.backend.clone(),
            mode: self.mode,
            _dir: dir,
        };
        local.wait_ready(self.start_timeout).await?;
        tracing::info!(frontend = %local.frontend, socket = %local.socket.display(), pid = ?local.pid, "local haproxy started");
        Ok(local)
    }
}

/// `$PHOENIX_HAPROXY`, else `haproxy` (looked up on `PATH`).
pub fn binary_from_env() -> PathBuf {
    std::env::var_os(HAPROXY_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("haproxy"), PathBuf::from)
}

/// A port free on 127.0.0.1 right now (the OS picks it).
fn free_port() -> Result<u16, LocalHaproxyError> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|source| LocalHaproxyError::Port { source })?;
    let port = listener
        .local_addr()
        .map_err(|source| LocalHaproxyError::Port { source })?
        .port();
    Ok(port)
}

/// A haproxy process of its own: a generated configuration in a temporary
/// directory, a frontend on a loopback port, the runtime API on
/// `<dir>/admin.sock`. It stops on [`stop`](Self::stop), or is killed when
/// dropped; the directory goes with it.
///
/// The generated configuration (see [`config`](Self::config)) is also the
/// reference for **a configuration of your own** used with
/// [`HaproxyBalancer`]:
///
/// - a runtime API socket at **`level admin`**, e.g. `stats socket
///   /run/haproxy/admin.sock mode 600 level admin` (`add server`, `del
///   server`, `enable health` and `set server` need it), and `stats
///   timeout` above the balancer's idle reconnect (5 s);
/// - a **backend with a dynamic algorithm** (`balance roundrobin` or
///   `leastconn`; `add server` refuses static ones) holding the servers
///   Phoenix manages, and its health check (`option httpchk GET /health`
///   with `http-check expect`); HAProxy 2.6 applies no `default-server`
///   line to servers added at runtime, so the balancer sends `check inter
///   … rise … fall …` with each `add server`;
/// - **`retries 3`** and **`option redispatch 1`**, so a connection that
///   fails (a server that just died or was just removed) is retried on
///   another server instead of failing the client;
/// - in `mode http`, **`retry-on conn-failure empty-response
///   response-timeout`**, so a request whose server died under it is
///   replayed elsewhere (only for idempotent traffic you are willing to
///   replay);
/// - `hard-stop-after`, so a reload does not keep old processes forever.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use phoenix_core::ports::LoadBalancer;
/// use phoenix_lb::haproxy::LocalHaproxy;
///
/// let haproxy = LocalHaproxy::builder().start().await?;
/// let lb = haproxy.balancer().build()?;
/// assert!(lb.members().await?.is_empty());
/// println!("clients connect to {}", haproxy.frontend_addr());
/// haproxy.stop().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LocalHaproxy {
    child: Child,
    pid: Option<u32>,
    socket: PathBuf,
    log_path: PathBuf,
    config: String,
    frontend: SocketAddr,
    admin_tcp: Option<SocketAddr>,
    backend: String,
    mode: Mode,
    // Removed (with the socket, configuration and log) when dropped.
    _dir: tempfile::TempDir,
}

impl LocalHaproxy {
    /// A builder with the defaults described on [`LocalHaproxyBuilder`].
    pub fn builder() -> LocalHaproxyBuilder {
        LocalHaproxyBuilder::default()
    }

    /// Where clients connect.
    pub fn frontend_addr(&self) -> SocketAddr {
        self.frontend
    }

    /// The runtime API's Unix socket.
    pub fn admin_socket(&self) -> &Path {
        &self.socket
    }

    /// The runtime API's TCP address, if asked for
    /// ([`LocalHaproxyBuilder::admin_tcp`]).
    pub fn admin_tcp(&self) -> Option<SocketAddr> {
        self.admin_tcp
    }

    /// The runtime API (its Unix socket).
    pub fn runtime_addr(&self) -> RuntimeAddr {
        RuntimeAddr::Unix(self.socket.clone())
    }

    /// The backend's name.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// `mode http` or `mode tcp`.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The configuration it runs.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// What haproxy printed so far (warnings, alerts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A [`HaproxyBalancer`] builder pointed at this haproxy's socket and
    /// backend.
    pub fn balancer(&self) -> HaproxyBalancerBuilder {
        HaproxyBalancer::builder()
            .runtime_api(self.runtime_addr())
            .backend(self.backend.clone())
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), LocalHaproxyError> {
        let started = Instant::now();
        let api = RuntimeApi::new(self.socket.clone()).timeout(Duration::from_millis(500));
        let probe = cmd::servers_state(&self.backend);
        let mut last = String::from("not started");
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    return Err(LocalHaproxyError::Exited {
                        status: status.to_string(),
                        log: self.log(),
                    })
                }
                Ok(None) => {}
                Err(source) => {
                    return Err(LocalHaproxyError::Wait {
                        pid: self.pid.unwrap_or(0),
                        source,
                    })
                }
            }
            if self.socket.exists() {
                match api.execute(&probe).await {
                    Ok(answer) => match parse_servers_state(&probe, &answer) {
                        Ok(_) => match tokio::net::TcpStream::connect(self.frontend).await {
                            Ok(_) => return Ok(()),
                            Err(e) => last = format!("frontend {}: {e}", self.frontend),
                        },
                        Err(e) => last = e.to_string(),
                    },
                    Err(e) => last = e.to_string(),
                }
            }
            if started.elapsed() >= limit {
                return Err(LocalHaproxyError::NotReady {
                    after: limit,
                    last,
                    log: self.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops haproxy: SIGTERM (HAProxy's immediate stop), then SIGKILL
    /// after 3 s, and waits for it to exit.
    ///
    /// # Errors
    ///
    /// Signalling or waiting failed (the process is killed on drop anyway).
    pub async fn stop(mut self) -> Result<(), LocalHaproxyError> {
        self.stop_inner().await
    }

    async fn stop_inner(&mut self) -> Result<(), LocalHaproxyError> {
        let Some(pid) = self.child.id() else {
            return Ok(());
        };
        let wait_error = |source| LocalHaproxyError::Wait { pid, source };
        if let Ok(raw) = i32::try_from(pid) {
            match kill(Pid::from_raw(raw), Signal::SIGTERM) {
                // Exited on its own between `id()` and now.
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(source) => return Err(LocalHaproxyError::Signal { pid, source }),
            }
            if let Ok(waited) =
                tokio::time::timeout(Duration::from_secs(3), self.child.wait()).await
            {
                waited.map_err(wait_error)?;
                self.pid = None;
                return Ok(());
            }
            tracing::warn!(pid, "local haproxy ignored SIGTERM for 3 s; killing it");
        }
        self.child.kill().await.map_err(wait_error)?;
        self.pid = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_configuration_has_what_users_are_told_to_have() {
        let b = LocalHaproxy::builder().threads(2).admin_tcp(true);
        let c = b.config(Path::new("/tmp/d"), 8080, Some(9999));
        for line in [
            "stats socket /tmp/d/admin.sock mode 600 level admin",
            "stats socket ipv4@127.0.0.1:9999 level admin",
            "hard-stop-after 5s",
            "nbthread 2",
            "mode http",
            "retries 3",
            "option redispatch 1",
            "retry-on conn-failure empty-response response-timeout",
            "bind 127.0.0.1:8080",
            "backend phoenix",
            "balance leastconn",
            "option httpchk GET /health",
            "timeout connect 1000ms",
        ] {
            assert!(c.contains(line), "missing {line:?} in\n{c}");
        }
        let tcp = LocalHaproxy::builder()
            .mode(Mode::Tcp)
            .balance(Balance::RoundRobin)
            .config(Path::new("/d"), 1, None);
        assert!(tcp.contains("mode tcp") && tcp.contains("balance roundrobin"));
        assert!(!tcp.contains("retry-on"), "HTTP-only");
    }

    #[test]
    fn refuses_bad_settings() {
        let b = LocalHaproxy::builder;
        assert!(b().validate().is_ok());
        for bad in [
            b().backend("a b"),
            b().check_path("health"),
            b().check_path("/a b"),
            b().check_path("/a\nb"),
            b().threads(0),
            b().timeouts(
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(1),
            ),
            b().start_timeout(Duration::ZERO),
        ] {
            assert!(matches!(
                bad.validate(),
                Err(LocalHaproxyError::InvalidSetting { .. })
            ));
        }
    }

    #[tokio::test]
    async fn a_missing_binary_is_a_clear_error() {
        let e = LocalHaproxy::builder()
            .binary("/nonexistent/haproxy")
            .start()
            .await
            .unwrap_err();
        assert!(matches!(e, LocalHaproxyError::Spawn { .. }), "{e}");
        assert!(e.to_string().contains(HAPROXY_ENV));
    }
}
