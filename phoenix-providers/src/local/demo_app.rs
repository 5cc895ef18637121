//! A small HTTP application to run on local servers: the project's main
//! example and the tests bake it into images.
//!
//! It listens on `127.0.0.1:$PORT` (HTTP/1.1, keep-alive) and answers:
//!
//! - `GET /health`: `200 ok`;
//! - `GET /`: `200` with `{"release", "environment", "role", "server",
//!   "pid"}` as JSON;
//! - `GET /slow?ms=N`: the same after sleeping N ms (at most 60 s), for
//!   connection-draining tests;
//! - `POST /drain`: hands its sessions over (the stand-in for moving state
//!   out before the server leaves): answers `200` with
//!   `{"drained": true, "sessions": N}`, N being the requests to `/` and
//!   `/slow` since the last drain, and starts counting again;
//! - `GET /sitemap.xml`: a sitemap of the pages it serves (absolute URLs
//!   on the `Host` it was asked for), for warm-up crawls;
//! - `GET /stats`: `{"requests", "hook_requests", "sessions", "drains"}`,
//!   where `hook_requests` counts requests whose `User-Agent` starts with
//!   `phoenix-hooks` (drain and warm-up calls).
//!
//! With `PHOENIX_DEMO_FAIL_PERCENT=N` in its environment it is defective:
//! N% of requests to `/` answer `500`, spread evenly, after the first few
//! (for canary demonstrations).
//!
//! Every response carries `X-Phoenix-Release`, `X-Phoenix-Environment` and
//! `X-Phoenix-Role`. The values come from the environment variables
//! `PHOENIX_RELEASE`, `PHOENIX_ENVIRONMENT` and `PHOENIX_ROLE` (as the boot
//! configuration renders them), else from `KEY=VALUE` lines in
//! `phoenix.env` in its runtime directory (`$PHOENIX_RUNTIME_DIR`, or the
//! working directory). The server id comes from `PHOENIX_SERVER_ID`.
//!
//! **Missing configuration is not fatal**: the app starts anyway, warns on
//! stderr and reports `"unknown"` for what is missing, so that a
//! misconfigured pool is visible to smoke tests (which check the release)
//! rather than hidden behind a crash loop.
//!
//! On SIGTERM (or SIGINT) it stops accepting connections, finishes the
//! requests in flight (up to 30 s) and exits 0.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;

/// The value reported for configuration that is missing.
pub const UNKNOWN: &str = "unknown";

/// The environment variable holding the release.
pub const RELEASE_VAR: &str = "PHOENIX_RELEASE";
/// The environment variable holding the environment.
pub const ENVIRONMENT_VAR: &str = "PHOENIX_ENVIRONMENT";
/// The environment variable holding the role.
pub const ROLE_VAR: &str = "PHOENIX_ROLE";
/// The file read when the variables are missing, in the runtime directory.
pub const CONFIG_FILE: &str = "phoenix.env";

const MAX_SLOW: Duration = Duration::from_secs(60);
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// What the app reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DemoConfig {
    /// Release label.
    pub release: String,
    /// Environment.
    pub environment: String,
    /// Role.
    pub role: String,
    /// Server id.
    pub server: String,
}

impl DemoConfig {
    /// Reads the process environment, falling back to `phoenix.env` in
    /// `$PHOENIX_RUNTIME_DIR` (or the working directory).
    pub fn from_env() -> Self {
        let dir = std::env::var_os("PHOENIX_RUNTIME_DIR")
            .map_or_else(|| PathBuf::from("."), PathBuf::from);
        let file = std::fs::read_to_string(dir.join(CONFIG_FILE)).ok();
        Self::from_sources(|k| std::env::var(k).ok(), file.as_deref())
    }

    /// Builds the configuration from a variable lookup and the text of a
    /// `phoenix.env` file (`KEY=VALUE` lines, `#` comments, optional double
    /// quotes); variables win over the file, missing values are `unknown`.
    pub fn from_sources(var: impl Fn(&str) -> Option<String>, file: Option<&str>) -> Self {
        let from_file = |key: &str| {
            file?.lines().find_map(|line| {
                let line = line.trim();
                let (k, v) = line.split_once('=')?;
                (!line.starts_with('#') && k.trim() == key)
                    .then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        let get = |key: &str| {
            var(key)
                .filter(|v| !v.is_empty())
                .or_else(|| from_file(key).filter(|v| !v.is_empty()))
                .unwrap_or_else(|| UNKNOWN.to_owned())
        };
        Self {
            release: get(RELEASE_VAR),
            environment: get(ENVIRONMENT_VAR),
            role: get(ROLE_VAR),
            server: get("PHOENIX_SERVER_ID"),
        }
    }

    /// The names of the release, environment and role settings that are
    /// missing.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            (RELEASE_VAR, &self.release),
            (ENVIRONMENT_VAR, &self.environment),
            (ROLE_VAR, &self.role),
        ]
        .into_iter()
        .filter(|(_, v)| v.as_str() == UNKNOWN)
        .map(|(k, _)| k)
        .collect()
    }
}

/// Why the demo app could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// `PORT` is missing or not a port number.
    #[error("PORT must be set to a port number, got {0:?}")]
    Port(Option<String>),
    /// Binding the port failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Installing the signal handler failed.
    #[error("cannot handle SIGTERM")]
    Signal(#[source] std::io::Error),
}

/// What the app counts, for `/drain` and `/stats`.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    hook_requests: AtomicU64,
    sessions: AtomicU64,
    drains: AtomicU64,
    /// Requests to `/` so far, for the injected defect.
    pages: AtomicU64,
    /// Percent of requests to `/` answered 500 (see [`FAIL_PERCENT_VAR`]).
    fail_percent: u64,
}

/// The environment variable that makes the app defective, for canary
/// demonstrations: this percentage (0-100) of requests to `/` are answered
/// `500`, spread evenly, except the first [`HEALTHY_PAGES`] (the defect
/// shows under traffic, after a smoke test passed, which is what a canary
/// is for).
pub const FAIL_PERCENT_VAR: &str = "PHOENIX_DEMO_FAIL_PERCENT";

/// Requests to `/` a defective app answers well before failing.
pub const HEALTHY_PAGES: u64 = 5;

/// Whether the `n`th request to `/` (0-based) fails at `percent`.
fn page_fails(n: u64, percent: u64) -> bool {
    let p = percent.min(100);
    // Spread evenly: the count of failures so far steps up by one on each
    // failing request.
    n >= HEALTHY_PAGES && ((n + 1) * p) / 100 > (n * p) / 100
}

/// The pages the sitemap lists (all of them served by the app).
const SITEMAP_PATHS: &[&str] = &["/", "/health", "/slow?ms=5", "/slow?ms=10", "/stats"];

#[derive(Serialize)]
struct Identity<'a> {
    #[serde(flatten)]
    config: &'a DemoConfig,
    pid: u32,
}

/// Serves the demo app on `listener` until `shutdown` completes, then
/// stops accepting, lets requests in flight finish (up to 30 s) and
/// returns.
pub async fn serve<F>(listener: TcpListener, config: DemoConfig, shutdown: F)
where
    F: Future<Output = ()>,
{
    let config = Arc::new(config);
    let fail_percent = std::env::var(FAIL_PERCENT_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |p| p.min(100));
    if fail_percent > 0 {
        eprintln!(
            "phoenix-demo-app: {FAIL_PERCENT_VAR}={fail_percent}: failing that share of GET /"
        );
    }
    let counters = Arc::new(Counters {
        fail_percent,
        ..Counters::default()
    });
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors and the like: back off, go on.
                        eprintln!("phoenix-demo-app: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let config = config.clone();
                let counters = counters.clone();
                let service = service_fn(move |req| {
                    let config = config.clone();
                    let counters = counters.clone();
                    async move { Ok::<_, Infallible>(respond(&config, &counters, req).await) }
                });
                let conn = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        eprintln!("phoenix-demo-app: connection error: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_LIMIT, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("phoenix-demo-app: requests still in flight after {DRAIN_LIMIT:?}; exiting");
    }
}

/// The binary's main: reads `PORT` and the configuration, listens on
/// `127.0.0.1:$PORT` and serves until SIGTERM or SIGINT.
pub async fn run() -> Result<(), DemoError> {
    let raw = std::env::var("PORT").ok();
    let port: u16 = raw
        .as_deref()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| DemoError::Port(raw.clone()))?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| DemoError::Bind { addr, source })?;
    let config = DemoConfig::from_env();
    let missing = config.missing();
    if !missing.is_empty() {
        eprintln!(
            "phoenix-demo-app: warning: {} not set (nor in {CONFIG_FILE}): reporting \"{UNKNOWN}\"",
            missing.join(", ")
        );
    }
    println!(
        "phoenix-demo-app: listening on {addr} (release {}, environment {}, role {}, server {})",
        config.release, config.environment, config.role, config.server
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(DemoError::Signal)?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        println!("phoenix-demo-app: shutting down: draining requests in flight");
    };
    serve(listener, config, shutdown).await;
    println!("phoenix-demo-app: stopped");
    Ok(())
}

async fn respond(
    config: &DemoConfig,
    counters: &Counters,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let from_hooks = req
        .headers()
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("phoenix-hooks"));
    if from_hooks {
        counters.hook_requests.fetch_add(1, Ordering::Relaxed);
    }
    if req.method() == Method::POST && req.uri().path() == "/drain" {
        let sessions = counters.sessions.swap(0, Ordering::Relaxed);
        counters.drains.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::json!({ "drained": true, "sessions": sessions });
        return reply(config, StatusCode::OK, "application/json", body.to_string());
    }
    if req.method() != Method::GET {
        return reply(
            config,
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only (and POST /drain)\n",
        );
    }
    match req.uri().path() {
        "/health" => reply(config, StatusCode::OK, "text/plain", "ok"),
        "/" => {
            let n = counters.pages.fetch_add(1, Ordering::Relaxed);
            if page_fails(n, counters.fail_percent) {
                return reply(
                    config,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "injected failure\n",
                );
            }
            counters.sessions.fetch_add(1, Ordering::Relaxed);
            identity(config)
        }
        "/sitemap.xml" => sitemap(config, req.headers().get(HOST)),
        "/stats" => {
            let body = serde_json::json!({
                "requests": counters.requests.load(Ordering::Relaxed),
                "hook_requests": counters.hook_requests.load(Ordering::Relaxed),
                "sessions": counters.sessions.load(Ordering::Relaxed),
                "drains": counters.drains.load(Ordering::Relaxed),
            });
            reply(config, StatusCode::OK, "application/json", body.to_string())
        }
        "/slow" => {
            let ms = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("ms="))
                    .and_then(|v| v.parse::<u64>().ok())
            });
            match ms {
                Some(ms) => {
                    counters.sessions.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(ms).min(MAX_SLOW)).await;
                    identity(config)
                }
                None => reply(
                    config,
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "usage: /slow?ms=N\n",
                ),
            }
        }
        _ => reply(config, StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// The sitemap, on the host the request named (when it is a plain host
/// name or address; anything that would need escaping in XML is replaced
/// by `localhost`).
fn sitemap(config: &DemoConfig, host: Option<&HeaderValue>) -> Response<Full<Bytes>> {
    let host = host
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("localhost");
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n",
    );
    for path in SITEMAP_PATHS {
        xml.push_str(&format!("  <url><loc>http://{host}{path}</loc></url>\n"));
    }
    xml.push_str("</urlset>\n");
    reply(config, StatusCode::OK, "application/xml", xml)
}

fn identity(config: &DemoConfig) -> Response<Full<Bytes>> {
    let body = Identity {
        config,
        pid: std::process::id(),
    };
    match serde_json::to_string(&body) {
        Ok(json) => reply(config, StatusCode::OK, "application/json", json),
        Err(_) => reply(
            config,
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "cannot encode\n",
        ),
    }
}

fn reply(
    config: &DemoConfig,
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in [
        ("x-phoenix-release", &config.release),
        ("x-phoenix-environment", &config.environment),
        ("x-phoenix-role", &config.role),
    ] {
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-header-value"));
        headers.insert(name, value);
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn an_injected_defect_fails_its_share_after_the_first_pages() {
        let failed = |p| (0..1005).filter(|n| super::page_fails(*n, p)).count();
        assert_eq!(failed(0), 0);
        assert_eq!(failed(30), 300);
        assert_eq!(failed(100), 1000);
        assert!((0..super::HEALTHY_PAGES).all(|n| !super::page_fails(n, 100)));
    }

    #[test]
    fn the_sitemap_lists_served_pages_on_a_safe_host() {
        let config = DemoConfig::from_sources(|_| None, None);
        let host = HeaderValue::from_static("shop.example:8080");
        let body = format!("{:?}", sitemap(&config, Some(&host)).body());
        assert!(
            body.contains("http://shop.example:8080/slow?ms=5"),
            "{body}"
        );
        let evil = HeaderValue::from_static("x\"><a>");
        let body = format!("{:?}", sitemap(&config, Some(&evil)).body());
        assert!(
            body.contains("http://localhost/health") && !body.contains("<a>"),
            "{body}"
        );
    }

    #[test]
    fn variables_win_over_the_file_and_missing_values_are_unknown() {
        let file = "# comment\nPHOENIX_RELEASE=\"v-file\"\nPHOENIX_ROLE=web\n";
        let var = |k: &str| (k == ENVIRONMENT_VAR).then(|| "prod".to_owned());
        let c = DemoConfig::from_sources(var, Some(file));
        assert_eq!(c.release, "v-file");
        assert_eq!(c.environment, "prod");
        assert_eq!(c.role, "web");
        assert_eq!(c.server, UNKNOWN);
        assert!(c.missing().is_empty());
        let none = DemoConfig::from_sources(|_| None, None);
        assert_eq!(none.missing(), vec![RELEASE_VAR, ENVIRONMENT_VAR, ROLE_VAR]);
    }
}
