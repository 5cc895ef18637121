//! Drain and warm-up hooks for phoenix-core's [`ServerHooks`] port: what
//! lets servers hold no state of their own, so that any of them can be
//! replaced at any time.
//!
//! - A **drain hook** runs before a server leaves the balancer or is
//!   terminated: an HTTP call to the server ([`HttpDrain`], such as
//!   `POST /drain`, which hands its sessions over) or a command
//!   ([`CommandDrain`], which is told about the server through
//!   `PHOENIX_HOOK_*` variables), bounded in time.
//! - A **warm-up hook** runs before a server is attached: it requests a
//!   list of paths, or every URL of the server's sitemap, against the new
//!   server, so that its caches are full before it takes traffic
//!   ([`WarmUp`]), with bounded concurrency and a time budget, and reports
//!   hits (2xx) and failures.
//!
//! The executor decides what a failure does ([`HookPolicy`]: block the
//! operation or proceed and record a `HookRan` event) and bounds every hook
//! by the policy's timeout; the hooks' own limits keep a single slow
//! request or command from using all of it.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use phoenix_state::hooks::{Hooks, HttpDrain, WarmUp};
//!
//! # fn demo(builder: phoenix_core::PhoenixBuilder) {
//! let hooks = Hooks::builder()
//!     .drain(HttpDrain::post("/drain").timeout(Duration::from_secs(10)).count_field("sessions"))
//!     .warm_up(WarmUp::sitemap("/sitemap.xml").concurrency(8).budget(Duration::from_secs(20)))
//!     .build();
//! let phoenix = builder.hooks(Arc::new(hooks));
//! # let _ = phoenix; }
//! ```
//!
//! [`HookPolicy`]: phoenix_core::policy::HookPolicy

use std::fmt;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderValue, CONTENT_LENGTH, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use phoenix_core::ports::{ErrorKind, HookReport, HookTarget, PortError, ServerHooks};
use tokio::time::Instant;

/// Requests made by the hooks say who they are.
const AGENT: &str = "phoenix-hooks/0.1";

/// Sitemaps larger than this are refused (the sitemap protocol allows
/// 50 MB; a server's own warm-up list is far smaller).
pub const MAX_SITEMAP_BYTES: usize = 10 << 20;

/// How much of a drain answer is read (for its count).
const MAX_DRAIN_ANSWER: usize = 64 << 10;

/// At most this many failures are named in a report's detail.
const NAMED_FAILURES: usize = 3;

/// An HTTP client for the hooks: HTTP/1.1 over TCP to the server's own
/// address, keep-alive between the requests of one warm-up.
type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(10))
        .build(connector)
}

/// A hook that is configured wrongly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookConfigError {
    /// A command needs at least a program.
    #[error("the drain command is empty")]
    EmptyCommand,
    /// A path must start with `/`.
    #[error("{0:?} is not a path (it must start with /)")]
    NotAPath(String),
}

fn check_path(path: &str) -> Result<String, HookConfigError> {
    if path.starts_with('/') && !path.contains(char::is_whitespace) {
        Ok(path.to_owned())
    } else {
        Err(HookConfigError::NotAPath(path.to_owned()))
    }
}

/// Drains a server with an HTTP request to it: `METHOD http://ENDPOINT/PATH`.
/// It succeeds when the answer has an expected status (by default any
/// 2xx) within the timeout.
#[derive(Debug, Clone)]
pub struct HttpDrain {
    method: Method,
    path: String,
    expect: Vec<u16>,
    timeout: Duration,
    count_field: Option<String>,
}

impl HttpDrain {
    /// `POST path`, expecting a 2xx within 30 s.
    pub fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }

    /// `method path`, expecting a 2xx within 30 s. A `path` that does not
    /// start with `/` fails every call with a typed error (and so counts
    /// as a failed drain), rather than being sent somewhere unexpected.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            expect: Vec::new(),
            timeout: Duration::from_secs(30),
            count_field: None,
        }
    }

    /// Accepts this status (call again to accept several); once set, only
    /// the listed statuses succeed.
    pub fn expect_status(mut self, status: u16) -> Self {
        self.expect.push(status);
        self
    }

    /// How long the call may take, connection and answer included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Reads the number of items handed over from this field of a JSON
    /// answer (such as `{"sessions": 12}`); without it, or when the answer
    /// has no such number, a successful call counts as one.
    pub fn count_field(mut self, field: impl Into<String>) -> Self {
        self.count_field = Some(field.into());
        self
    }

    fn accepts(&self, status: StatusCode) -> bool {
        if self.expect.is_empty() {
            status.is_success()
        } else {
            self.expect.contains(&status.as_u16())
        }
    }

    async fn run(&self, client: &HttpClient, target: &HookTarget) -> Result<HookReport, PortError> {
        let what = format!("drain {}: {} {}", target.server, self.method, self.path);
        let path = check_path(&self.path)
            .map_err(|e| PortError::new(what.clone(), ErrorKind::Invalid(e.to_string())))?;
        let request = request(self.method.clone(), target.endpoint, &path, None)
            .map_err(|e| PortError::new(what.clone(), ErrorKind::Invalid(e)))?;
        let started = Instant::now();
        let call = async {
            let response = client.request(request).await.map_err(|e| {
                PortError::temporary(what.clone(), "the request failed").with_source(e)
            })?;
            let status = response.status();
            let body = read_limited(response.into_body(), MAX_DRAIN_ANSWER)
                .await
                .map_err(|e| PortError::temporary(what.clone(), e))?;
            Ok::<_, PortError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| {
                PortError::temporary(
                    what.clone(),
                    format!(
                        "no answer within {}",
                        phoenix_core::time::human(self.timeout)
                    ),
                )
            })??;
        if !self.accepts(status) {
            let text = String::from_utf8_lossy(&body);
            return Err(PortError::new(
                what,
                ErrorKind::BadResponse(format!("HTTP {status}: {}", excerpt(&text))),
            ));
        }
        let counted = self
            .count_field
            .as_deref()
            .and_then(|field| count_in_json(&body, field));
        Ok(HookReport {
            done: counted.unwrap_or(1),
            failed: 0,
            detail: match counted {
                Some(n) => format!(
                    "{} {} answered {status} in {}: {n} handed over",
                    self.method,
                    self.path,
                    phoenix_core::time::human(started.elapsed())
                ),
                None => format!(
                    "{} {} answered {status} in {}",
                    self.method,
                    self.path,
                    phoenix_core::time::human(started.elapsed())
                ),
            },
        })
    }
}

fn count_in_json(body: &[u8], field: &str) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get(field)?.as_u64()
}

/// The first line of a text, at most 160 characters, for messages.
fn excerpt(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut out: String = line.chars().take(160).collect();
    if line.chars().count() > 160 {
        out.push('…');
    }
    out
}

/// Drains a server by running a command (argv, no shell), told about the
/// server through environment variables:
///
/// | variable | value |
/// |---|---|
/// | `PHOENIX_HOOK` | `drain` |
/// | `PHOENIX_HOOK_ENDPOINT` | where the server listens, `ip:port` |
/// | `PHOENIX_HOOK_SERVER` | its id |
/// | `PHOENIX_HOOK_POOL` | its pool |
/// | `PHOENIX_HOOK_SLOT` | its slot in the pool |
/// | `PHOENIX_HOOK_ROLE` | its role |
/// | `PHOENIX_HOOK_RELEASE` | its release |
///
/// It succeeds when the command exits with status 0 within the timeout;
/// past it the command (and every process in its process group) is killed
/// with SIGKILL. When the last line it prints is a number, that is the
/// number of items it handed over; otherwise a success counts as one.
#[derive(Debug, Clone)]
pub struct CommandDrain {
    argv: Vec<String>,
    timeout: Duration,
    env: Vec<(String, String)>,
}

impl CommandDrain {
    /// A command from its program and arguments; 60 s timeout.
    pub fn new<I, S>(argv: I) -> Result<Self, HookConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err(HookConfigError::EmptyCommand);
        }
        Ok(Self {
            argv,
            timeout: Duration::from_secs(60),
            env: Vec::new(),
        })
    }

    /// How long the command may run before it is killed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// An extra environment variable for the command.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    async fn run(&self, target: &HookTarget) -> Result<HookReport, PortError> {
        let program = self.argv.first().cloned().unwrap_or_default();
        let what = format!("drain {}: command {program}", target.server);
        let mut command = tokio::process::Command::new(&program);
        command
            .args(self.argv.iter().skip(1))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("PHOENIX_HOOK", "drain")
            .env("PHOENIX_HOOK_ENDPOINT", target.endpoint.to_string())
            .env("PHOENIX_HOOK_SERVER", target.server.to_string())
            .env("PHOENIX_HOOK_POOL", target.pool.to_string())
            .env("PHOENIX_HOOK_SLOT", target.slot.to_string())
            .env("PHOENIX_HOOK_ROLE", target.role.to_string())
            .env("PHOENIX_HOOK_RELEASE", target.release.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills what it started
            // too; and killed if the executor gives up on it first.
            .process_group(0)
            .kill_on_drop(true);
        let started = Instant::now();
        let child = command.spawn().map_err(|e| {
            PortError::new(what.clone(), ErrorKind::Invalid("cannot start it".into()))
                .with_source(e)
        })?;
        let group = child.id();
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(result) => result.map_err(|e| {
                PortError::temporary(what.clone(), "waiting for it failed").with_source(e)
            })?,
            Err(_) => {
                // Dropping the future killed the command itself; this ends
                // whatever it started.
                if let Some(pid) = group.and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                return Err(PortError::temporary(
                    what,
                    format!(
                        "still running after {}; killed",
                        phoenix_core::time::human(self.timeout)
                    ),
                ));
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let said = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(PortError::new(
                what,
                ErrorKind::Permanent(format!("{}: {}", output.status, excerpt(said))),
            ));
        }
        let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
        let counted = last.and_then(|l| l.trim().parse::<u64>().ok());
        Ok(HookReport {
            done: counted.unwrap_or(1),
            failed: 0,
            detail: match counted {
                Some(n) => format!(
                    "{program} exited 0 in {}: {n} handed over",
                    phoenix_core::time::human(started.elapsed())
                ),
                None => format!(
                    "{program} exited 0 in {}",
                    phoenix_core::time::human(started.elapsed())
                ),
            },
        })
    }
}

/// The drain hook: an HTTP call or a command.
#[derive(Debug, Clone)]
pub enum Drain {
    /// An HTTP request to the server.
    Http(HttpDrain),
    /// A command.
    Command(CommandDrain),
}

impl From<HttpDrain> for Drain {
    fn from(d: HttpDrain) -> Self {
        Self::Http(d)
    }
}

impl From<CommandDrain> for Drain {
    fn from(d: CommandDrain) -> Self {
        Self::Command(d)
    }
}

/// What a warm-up requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarmUpSource {
    /// These paths.
    Paths(Vec<String>),
    /// Every `<loc>` of the sitemap at this path on the server (one level
    /// of sitemap index is followed).
    Sitemap(String),
}

/// Fills a new server's caches before it takes traffic: `GET`s a list of
/// paths, or every URL its sitemap lists, against the server itself.
///
/// Absolute URLs in a sitemap (`https://shop.example/catalog`) are
/// requested by path from the new server, with their host in the `Host`
/// header, so that virtual hosts answer as they will for real traffic.
///
/// A hit is a 2xx answer read to the end; anything else (another status,
/// a connection error, no answer within the per-request timeout) is a
/// failure. The time budget bounds the whole warm-up, sitemap included:
/// what has not finished by then is cancelled and reported as not
/// requested, which is not a failure (warming is best effort within its
/// budget).
#[derive(Debug, Clone)]
pub struct WarmUp {
    source: WarmUpSource,
    concurrency: usize,
    budget: Duration,
    request_timeout: Duration,
    max_urls: usize,
}

impl WarmUp {
    /// Requests these paths (each must start with `/`).
    pub fn paths<I, S>(paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::from_source(WarmUpSource::Paths(
            paths.into_iter().map(Into::into).collect(),
        ))
    }

    /// Requests what the sitemap at `path` (such as `/sitemap.xml`) lists.
    pub fn sitemap(path: impl Into<String>) -> Self {
        Self::from_source(WarmUpSource::Sitemap(path.into()))
    }

    fn from_source(source: WarmUpSource) -> Self {
        Self {
            source,
            concurrency: 8,
            budget: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            max_urls: 10_000,
        }
    }

    /// Requests in flight at once (at least 1; default 8).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How long the whole warm-up may take (default 30 s).
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// How long one request may take (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// At most this many URLs are requested (default 10,000).
    pub fn max_urls(mut self, n: usize) -> Self {
        self.max_urls = n;
        self
    }

    async fn run(&self, client: &HttpClient, target: &HookTarget) -> Result<HookReport, PortError> {
        let started = Instant::now();
        let deadline = started + self.budget;
        let (urls, origin) = match &self.source {
            WarmUpSource::Paths(paths) => (
                paths
                    .iter()
                    .map(|p| {
                        check_path(p)
                            .map(|path| Url { path, host: None })
                            .map_err(|e| {
                                PortError::new(
                                    format!("warm up {}", target.server),
                                    ErrorKind::Invalid(e.to_string()),
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                format!("{} listed paths", paths.len()),
            ),
            WarmUpSource::Sitemap(path) => {
                let what = format!("warm up {}: sitemap {path}", target.server);
                let urls = tokio::time::timeout_at(
                    deadline,
                    self.sitemap_urls(client, target.endpoint, path),
                )
                .await
                .map_err(|_| {
                    PortError::temporary(
                        what.clone(),
                        format!(
                            "not read within the {} budget",
                            phoenix_core::time::human(self.budget)
                        ),
                    )
                })?
                .map_err(|e| PortError::new(what, ErrorKind::BadResponse(e)))?;
                (urls, path.clone())
            }
        };
        let total = urls.len().min(self.max_urls);
        let outcomes: Vec<(String, Result<(), String>)> =
            stream::iter(urls.into_iter().take(total))
                .map(|url| async move {
                    let outcome = tokio::time::timeout(
                        self.request_timeout,
                        fetch(client, target.endpoint, &url),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "no answer within {}",
                            phoenix_core::time::human(self.request_timeout)
                        ))
                    });
                    (url.path, outcome)
                })
                .buffer_unordered(self.concurrency)
                .take_until(tokio::time::sleep_until(deadline))
                .collect()
                .await;
        let hits = outcomes.iter().filter(|(_, o)| o.is_ok()).count();
        let failures: Vec<String> = outcomes
            .iter()
            .filter_map(|(path, o)| o.as_ref().err().map(|e| format!("{path}: {e}")))
            .collect();
        let skipped = total - outcomes.len();
        let mut detail = format!(
            "warmed {hits} of {total} URLs from {origin} in {}",
            phoenix_core::time::human(started.elapsed())
        );
        if !failures.is_empty() {
            detail.push_str(&format!(
                "; {} failed ({}{})",
                failures.len(),
                failures
                    .iter()
                    .take(NAMED_FAILURES)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if failures.len() > NAMED_FAILURES {
                    ", …"
                } else {
                    ""
                }
            ));
        }
        if skipped > 0 {
            detail.push_str(&format!(
                "; {skipped} not done within the {} budget",
                phoenix_core::time::human(self.budget)
            ));
        }
        Ok(HookReport {
            done: hits as u64,
            failed: failures.len() as u64,
            detail,
        })
    }

    async fn sitemap_urls(
        &self,
        client: &HttpClient,
        endpoint: SocketAddr,
        path: &str,
    ) -> Result<Vec<Url>, String> {
        let path = check_path(path).map_err(|e| e.to_string())?;
        let body = get_document(
            client,
            endpoint,
            &Url { path, host: None },
            self.request_timeout,
        )
        .await?;
        let root = parse_sitemap(&body)?;
        if !root.is_index {
            return Ok(root.locs.iter().filter_map(|l| Url::parse(l)).collect());
        }
        // An index lists sitemaps: one level is followed, up to the URL
        // limit.
        let mut urls = Vec::new();
        for loc in root.locs.iter().filter_map(|l| Url::parse(l)) {
            if urls.len() >= self.max_urls {
                break;
            }
            let body = get_document(client, endpoint, &loc, self.request_timeout).await?;
            let child = parse_sitemap(&body)?;
            urls.extend(child.locs.iter().filter_map(|l| Url::parse(l)));
        }
        Ok(urls)
    }
}

/// A URL to request from the server: its path (with query) and the host
/// it was listed under.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    path: String,
    host: Option<String>,
}

impl Url {
    /// `https://host/path?q`, `http://host`, or `/path`. Anything else
    /// (another scheme, a relative path) is skipped.
    fn parse(loc: &str) -> Option<Self> {
        let loc = loc.trim();
        if loc.starts_with('/') {
            return check_path(loc).ok().map(|path| Self { path, host: None });
        }
        let rest = loc
            .strip_prefix("http://")
            .or_else(|| loc.strip_prefix("https://"))?;
        let (host, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        // Fragments are never sent.
        let path = path.split('#').next().unwrap_or("/").to_owned();
        let host = host.rsplit('@').next().unwrap_or(host);
        (!host.is_empty() && !path.contains(char::is_whitespace)).then(|| Self {
            path,
            host: Some(host.to_owned()),
        })
    }
}

fn request(
    method: Method,
    endpoint: SocketAddr,
    path: &str,
    host: Option<&str>,
) -> Result<Request<Empty<Bytes>>, String> {
    let host = match host {
        Some(h) => HeaderValue::from_str(h).map_err(|e| format!("host {h:?}: {e}"))?,
        None => HeaderValue::from_str(&endpoint.to_string()).map_err(|e| e.to_string())?,
    };
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(format!("http://{endpoint}{path}"))
        .header(HOST, host)
        .header(USER_AGENT, AGENT);
    if method == Method::POST || method == Method::PUT {
        builder = builder.header(CONTENT_LENGTH, "0");
    }
    builder
        .body(Empty::new())
        .map_err(|e| format!("{path}: {e}"))
}

/// Reads a body, refusing one longer than `limit`.
async fn read_limited(body: hyper::body::Incoming, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = body;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the answer failed: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(format!("the answer is longer than {limit} bytes"));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// One warm-up request: a 2xx read to the end is a hit.
async fn fetch(client: &HttpClient, endpoint: SocketAddr, url: &Url) -> Result<(), String> {
    let req = request(Method::GET, endpoint, &url.path, url.host.as_deref())?;
    let response = client
        .request(req)
        .await
        .map_err(|e| format!("request failed: {}", phoenix_core::error_chain(&e)))?;
    let status = response.status();
    // Read to the end (and let the connection be reused), keeping nothing.
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|e| format!("reading the answer failed: {e}"))?;
    }
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", status.as_u16()))
    }
}

async fn get_document(
    client: &HttpClient,
    endpoint: SocketAddr,
    url: &Url,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let fetch = async {
        let req = request(Method::GET, endpoint, &url.path, url.host.as_deref())?;
        let response = client
            .request(req)
            .await
            .map_err(|e| format!("GET {}: {}", url.path, phoenix_core::error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {}: HTTP {}", url.path, status.as_u16()));
        }
        read_limited(response.into_body(), MAX_SITEMAP_BYTES)
            .await
            .map_err(|e| format!("GET {}: {e}", url.path))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .unwrap_or_else(|_| Err(format!("GET {}: no answer within {timeout:?}", url.path)))
}

/// The `<loc>` entries of a sitemap or sitemap index.
#[derive(Debug, Default, PartialEq, Eq)]
struct Sitemap {
    is_index: bool,
    locs: Vec<String>,
}

/// Parses a sitemap (`<urlset><url><loc>…`) or a sitemap index
/// (`<sitemapindex><sitemap><loc>…`), with or without namespace prefixes,
/// resolving entity and character references.
fn parse_sitemap(xml: &[u8]) -> Result<Sitemap, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut out = Sitemap::default();
    let mut depth = 0usize;
    let mut in_loc = false;
    let mut loc = String::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("not a sitemap: {e} at byte {}", reader.buffer_position()))?;
        match event {
            Event::Start(e) => {
                let name = e.local_name();
                if depth == 0 {
                    match name.as_ref() {
                        b"urlset" => {}
                        b"sitemapindex" => out.is_index = true,
                        other => {
                            return Err(format!(
                                "not a sitemap: the root element is <{}>",
                                String::from_utf8_lossy(other)
                            ))
                        }
                    }
                }
                depth += 1;
                if name.as_ref() == b"loc" {
                    in_loc = true;
                    loc.clear();
                }
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                if in_loc && e.local_name().as_ref() == b"loc" {
                    in_loc = false;
                    let trimmed = loc.trim();
                    if !trimmed.is_empty() {
                        out.locs.push(trimmed.to_owned());
                    }
                }
            }
            Event::Text(t) if in_loc => {
                let text = t.decode().map_err(|e| format!("not a sitemap: {e}"))?;
                loc.push_str(&text);
            }
            Event::CData(t) if in_loc => {
                loc.push_str(&String::from_utf8_lossy(&t));
            }
            Event::GeneralRef(r) if in_loc => {
                if let Some(c) = r
                    .resolve_char_ref()
                    .map_err(|e| format!("not a sitemap: {e}"))?
                {
                    loc.push(c);
                } else {
                    let name = r.decode().map_err(|e| format!("not a sitemap: {e}"))?;
                    let text = quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| format!("not a sitemap: unknown entity &{name};"))?;
                    loc.push_str(text);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if depth != 0 {
        return Err("not a sitemap: the document ends inside an element".into());
    }
    Ok(out)
}

/// Drain and warm-up hooks, composed: either may be left out (it then
/// reports that nothing was done, which is a success).
#[derive(Clone)]
pub struct Hooks {
    drain: Option<Drain>,
    warm_up: Option<WarmUp>,
    client: HttpClient,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("drain", &self.drain)
            .field("warm_up", &self.warm_up)
            .finish_non_exhaustive()
    }
}

/// Builds [`Hooks`].
#[derive(Debug, Clone, Default)]
pub struct HooksBuilder {
    drain: Option<Drain>,
    warm_up: Option<WarmUp>,
    connect_timeout: Option<Duration>,
}

impl HooksBuilder {
    /// The drain hook.
    pub fn drain(mut self, drain: impl Into<Drain>) -> Self {
        self.drain = Some(drain.into());
        self
    }

    /// The warm-up hook.
    pub fn warm_up(mut self, warm_up: WarmUp) -> Self {
        self.warm_up = Some(warm_up);
        self
    }

    /// How long connecting to a server may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The hooks.
    pub fn build(self) -> Hooks {
        Hooks {
            drain: self.drain,
            warm_up: self.warm_up,
            client: client(self.connect_timeout.unwrap_or(Duration::from_secs(5))),
        }
    }
}

impl Hooks {
    /// Starts building.
    pub fn builder() -> HooksBuilder {
        HooksBuilder::default()
    }
}

#[async_trait]
impl ServerHooks for Hooks {
    async fn warm_up(&self, target: &HookTarget) -> Result<HookReport, PortError> {
        match &self.warm_up {
            Some(w) => w.run(&self.client, target).await,
            None => Ok(HookReport {
                detail: "no warm-up hook configured".into(),
                ..HookReport::default()
            }),
        }
    }

    async fn drain(&self, target: &HookTarget) -> Result<HookReport, PortError> {
        match &self.drain {
            Some(Drain::Http(d)) => d.run(&self.client, target).await,
            Some(Drain::Command(d)) => d.run(target).await,
            None => Ok(HookReport {
                detail: "no drain hook configured".into(),
                ..HookReport::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sitemaps_and_indexes_parse() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <url><loc>https://shop.example/</loc><lastmod>2024-01-01</lastmod></url>
  <url><loc> https://shop.example/search?q=a&amp;page=2 </loc></url>
  <url><loc><![CDATA[/cdata]]></loc></url>
  <url><loc>/caf&#233;</loc></url>
</urlset>"#;
        let s = parse_sitemap(xml).unwrap();
        assert!(!s.is_index);
        assert_eq!(
            s.locs,
            vec![
                "https://shop.example/",
                "https://shop.example/search?q=a&page=2",
                "/cdata",
                "/café"
            ]
        );
        let index = br#"<s:sitemapindex xmlns:s="http://www.sitemaps.org/schemas/sitemap/0.9">
<s:sitemap><s:loc>http://h/a.xml</s:loc></s:sitemap></s:sitemapindex>"#;
        let s = parse_sitemap(index).unwrap();
        assert!(s.is_index);
        assert_eq!(s.locs, vec!["http://h/a.xml"]);
        for bad in [
            &b"<html><body/></html>"[..],
            b"<urlset><url><loc>x",
            b"not xml <<",
        ] {
            assert!(
                parse_sitemap(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_sitemap(b"<urlset><url><loc>&bogus;</loc></url></urlset>").is_err());
    }

    #[test]
    fn locations_become_paths_with_their_host() {
        let u = Url::parse("https://shop.example/a/b?x=1#frag").unwrap();
        assert_eq!(
            (u.path.as_str(), u.host.as_deref()),
            ("/a/b?x=1", Some("shop.example"))
        );
        let u = Url::parse("http://shop.example:8080").unwrap();
        assert_eq!(
            (u.path.as_str(), u.host.as_deref()),
            ("/", Some("shop.example:8080"))
        );
        let u = Url::parse("http://h?q=1").unwrap();
        assert_eq!(u.path, "/?q=1");
        assert_eq!(Url::parse("/x").unwrap().host, None);
        for skipped in ["ftp://h/x", "relative", "http:///x", "/a b"] {
            assert!(Url::parse(skipped).is_none(), "{skipped}");
        }
    }

    #[test]
    fn configuration_errors_are_typed() {
        assert_eq!(
            CommandDrain::new(Vec::<String>::new()).unwrap_err(),
            HookConfigError::EmptyCommand
        );
        assert!(matches!(
            check_path("drain"),
            Err(HookConfigError::NotAPath(_))
        ));
        assert_eq!(count_in_json(br#"{"sessions": 4}"#, "sessions"), Some(4));
        assert_eq!(count_in_json(b"ok", "sessions"), None);
        assert_eq!(excerpt("\n  \nfirst\nsecond"), "first");
    }
}
