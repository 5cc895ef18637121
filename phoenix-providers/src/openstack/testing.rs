//! [`MockApi`]: a scripted HTTP/1.1 server on 127.0.0.1 for testing the
//! OpenStack clients against the request and response samples of the API
//! reference, where no emulator exists (Keystone v3, Octavia, Neutron
//! floating IPs) or the emulator lacks an operation (Mimic's
//! `createImage`). Routes answer with canned or computed responses; every
//! request is recorded, with its body, for the test to check.
//!
//! ```
//! use phoenix_providers::openstack::testing::{MockApi, MockResponse};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let api = MockApi::start().await.unwrap();
//! api.on("GET", "/v2/images/*", |_| MockResponse::json(200, serde_json::json!({"id": "x"})));
//! let body = reqwest::get(format!("{}/v2/images/x", api.url())).await.unwrap().text().await.unwrap();
//! assert!(body.contains("\"x\""));
//! assert_eq!(api.requests()[0].path, "/v2/images/x");
//! # });
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use phoenix_core::ports::PortError;
use phoenix_core::retry::RetryPolicy;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{ApiRequest, CloudConfig, ConfigError, Credentials, Session};

/// A request the server received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter's value.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| v.to_owned())
        })
    }
}

/// A canned answer.
#[derive(Debug, Clone)]
pub struct MockResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl MockResponse {
    /// A JSON answer.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    /// An answer with a raw body.
    pub fn raw(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// An empty answer.
    pub fn empty(status: u16) -> Self {
        Self::raw(status, Vec::new())
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

type Responder = Box<dyn Fn(&RecordedRequest) -> MockResponse + Send + Sync>;

struct Route {
    method: String,
    pattern: String,
    respond: Responder,
}

#[derive(Default)]
struct State {
    routes: Vec<Route>,
    requests: Vec<RecordedRequest>,
}

fn matches(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.trim_end_matches('/').split('/').collect();
    let s: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    p.len() == s.len() && p.iter().zip(&s).all(|(a, b)| *a == "*" || a == b)
}

/// A scripted HTTP server on a loopback port; stops when dropped.
pub struct MockApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for MockApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockApi").field("addr", &self.addr).finish()
    }
}

impl MockApi {
    /// Starts a server on 127.0.0.1 with no routes (everything is 404).
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(state, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers `method` on paths matching `pattern` (`*` matches one
    /// segment). Later routes take precedence over earlier ones.
    pub fn on<F>(&self, method: &str, pattern: &str, respond: F)
    where
        F: Fn(&RecordedRequest) -> MockResponse + Send + Sync + 'static,
    {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.routes.insert(
            0,
            Route {
                method: method.to_ascii_uppercase(),
                pattern: pattern.to_owned(),
                respond: Box::new(respond),
            },
        );
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .requests
            .clone()
    }

    /// The requests with this method and a path matching `pattern`.
    pub fn requests_to(&self, method: &str, pattern: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && matches(pattern, &r.path))
            .collect()
    }
}

impl MockApi {
    /// Serves Keystone v3 at `/identity/v3` on this server: a
    /// project-scoped token (the shape of the API reference's
    /// auth-password-project-scoped response) whose catalog lists each
    /// `(service type, path)` at this server, in region `RegionOne`, on
    /// every interface. Returns a configuration that authenticates
    /// against it with a password.
    pub fn serve_keystone_v3(&self, services: &[(&str, &str)]) -> Result<CloudConfig, ConfigError> {
        let base = self.url();
        let catalog: Vec<serde_json::Value> = services
            .iter()
            .enumerate()
            .map(|(i, (kind, path))| {
                let endpoints: Vec<serde_json::Value> = ["public", "internal", "admin"]
                    .iter()
                    .map(|interface| {
                        serde_json::json!({"region_id": "RegionOne", "region": "RegionOne",
                            "interface": interface, "url": format!("{base}{path}"),
                            "id": format!("{i}-{interface}")})
                    })
                    .collect();
                serde_json::json!({"type": kind, "name": kind, "id": format!("svc-{i}"),
                                   "endpoints": endpoints})
            })
            .collect();
        self.on("POST", "/identity/v3/auth/tokens", move |_| {
            let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
            MockResponse::json(
                201,
                serde_json::json!({"token": {
                    "methods": ["password"], "expires_at": expires,
                    "project": {"domain": {"id": "default", "name": "Default"},
                                "id": "a6944d763bf64ee6a275f1263fae0352", "name": "admin"},
                    "catalog": catalog,
                }}),
            )
            .header("X-Subject-Token", "gAAAAABWHp-mock-token")
        });
        CloudConfig::builder()
            .auth_url(format!("{}/identity/v3", self.url()))
            .credentials(Credentials::password_v3(
                "admin",
                "Default",
                "devstacker",
                "admin",
                "Default",
            ))
            .build()
    }
}

impl Drop for MockApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body,
    };
    let answer = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.requests.push(recorded.clone());
        s.routes
            .iter()
            .find(|r| r.method == recorded.method && matches(&r.pattern, &recorded.path))
            .map(|r| (r.respond)(&recorded))
    };
    let answer = answer.unwrap_or_else(|| {
        MockResponse::json(
            404,
            serde_json::json!({"itemNotFound": {"message": format!(
                "no route for {} {}", recorded.method, recorded.path), "code": 404}}),
        )
    });
    let mut builder = hyper::Response::builder().status(answer.status);
    for (k, v) in &answer.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder
        .body(Full::new(Bytes::from(answer.body)))
        .unwrap_or_else(|_| {
            let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"bad mock response")));
            *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
}

/// Mimic, Rackspace's API-compatible mock, as the test script starts it
/// (`PHOENIX_MIMIC_URL`), with its control endpoints: failures injected
/// into server creation, server statuses changed, balancer and node
/// statuses set, and its clock advanced.
#[derive(Debug, Clone)]
pub struct Mimic {
    base: String,
}

impl Mimic {
    /// The variable the test script exports.
    pub const URL_VARIABLE: &'static str = "PHOENIX_MIMIC_URL";

    /// The Mimic the test script started, if any.
    pub fn from_env() -> Option<Self> {
        std::env::var(Self::URL_VARIABLE)
            .ok()
            .filter(|v| !v.is_empty())
            .map(Self::new)
    }

    /// Mimic at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
        }
    }

    /// Its base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Its identity endpoint.
    pub fn auth_url(&self) -> String {
        format!("{}/identity/v2.0", self.base)
    }

    /// A configuration for `username` (any API key works; Mimic creates a
    /// tenant per user on first authentication) in region ORD, where every
    /// Mimic service has endpoints.
    pub fn config(&self, username: &str) -> Result<CloudConfig, ConfigError> {
        CloudConfig::builder()
            .auth_url(self.auth_url())
            .credentials(Credentials::rackspace_api_key(username, "mimic-api-key"))
            .region("ORD")
            .build()
    }

    /// A session for `username` with a retry policy.
    pub fn session(&self, username: &str, retry: RetryPolicy) -> Result<Session, ConfigError> {
        Session::builder(self.config(username)?)
            .retry(retry)
            .build()
    }

    /// Advances Mimic's clock (server builds, balancer updates).
    pub async fn tick(&self, seconds: f64) -> Result<(), PortError> {
        let op = "mimic: advancing the clock";
        let resp = reqwest::Client::new()
            .post(format!("{}/mimic/v1.1/tick", self.base))
            .json(&serde_json::json!({ "amount": seconds }))
            .send()
            .await
            .map_err(|e| PortError::temporary(op, "the request failed").with_source(e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(PortError::permanent(op, format!("HTTP {}", resp.status())))
        }
    }

    /// Makes the creation of servers whose names match `name_regex`
    /// behave as `behavior` (`error`, `build`, `fail`, `false-negative`,
    /// `sequence`, …) with `parameters`. Returns the behaviour's id.
    pub async fn server_creation_behavior(
        &self,
        session: &Session,
        behavior: &str,
        parameters: serde_json::Value,
        name_regex: &str,
    ) -> Result<String, PortError> {
        let body = serde_json::json!({
            "name": behavior,
            "parameters": parameters,
            "criteria": [{ "server_name": name_regex }],
        });
        let answer: serde_json::Value = session
            .send(
                ApiRequest::post(
                    "compute",
                    "/behaviors/creation",
                    "/behaviors/creation".into(),
                    body,
                )
                .service_name("cloudServersBehavior")
                .operation("mimic: registering a server creation behaviour"),
            )
            .await?
            .json()?;
        Ok(answer["id"].as_str().unwrap_or_default().to_owned())
    }

    /// Removes a server creation behaviour.
    pub async fn delete_server_creation_behavior(
        &self,
        session: &Session,
        id: &str,
    ) -> Result<(), PortError> {
        session
            .send(
                ApiRequest::delete(
                    "compute",
                    "/behaviors/creation/{id}",
                    format!("/behaviors/creation/{id}"),
                )
                .service_name("cloudServersBehavior")
                .operation("mimic: removing a server creation behaviour"),
            )
            .await
            .map(|_| ())
    }

    /// Sets the status of existing servers (`ERROR`, `BUILD`, …).
    pub async fn set_server_status(
        &self,
        session: &Session,
        statuses: &[(&str, &str)],
    ) -> Result<(), PortError> {
        let map: serde_json::Map<String, serde_json::Value> = statuses
            .iter()
            .map(|(id, s)| ((*id).to_owned(), serde_json::json!(s)))
            .collect();
        session
            .send(
                ApiRequest::post(
                    "compute",
                    "/attributes/",
                    "/attributes/".into(),
                    serde_json::json!({ "status": map }),
                )
                .service_name("cloudServersBehavior")
                .operation("mimic: setting server statuses"),
            )
            .await
            .map(|_| ())
    }

    /// Sets a Cloud Load Balancer's status (`ACTIVE`, `PENDING_UPDATE`,
    /// `ERROR`, …).
    pub async fn set_load_balancer_status(
        &self,
        session: &Session,
        lb_id: u64,
        status: &str,
    ) -> Result<(), PortError> {
        session
            .send(
                ApiRequest::patch_json(
                    "rax:load-balancer",
                    "/loadbalancer/{id}/attributes",
                    format!("/loadbalancer/{lb_id}/attributes"),
                    serde_json::json!({ "status": status }),
                )
                .service_name("cloudLoadBalancerControl")
                .operation("mimic: setting a balancer's status"),
            )
            .await
            .map(|_| ())
    }

    /// Sets a Cloud Load Balancer node's health status (`ONLINE`,
    /// `OFFLINE`), as its health monitor would.
    pub async fn set_node_status(
        &self,
        session: &Session,
        lb_id: u64,
        node_id: u64,
        status: &str,
    ) -> Result<(), PortError> {
        session
            .send(
                ApiRequest::put(
                    "rax:load-balancer",
                    "/loadbalancers/{id}/nodes/{node}/status",
                    format!("/loadbalancers/{lb_id}/nodes/{node_id}/status"),
                    serde_json::json!({ "status": status }),
                )
                .service_name("cloudLoadBalancerControl")
                .operation("mimic: setting a node's status"),
            )
            .await
            .map(|_| ())
    }
}
