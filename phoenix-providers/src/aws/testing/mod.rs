//! [`FaultProxy`]: an HTTP proxy on 127.0.0.1 that puts in front of moto
//! what moto leaves out of EC2: throttling, 5xx (before the call, or after
//! it took effect with the answer lost), instances invisible for a while
//! after launch (`InvalidInstanceID.NotFound`, missing from describes),
//! `pending` states, and `ClientToken` honoured the way EC2 honours it
//! (the same instance again; `IdempotentParameterMismatch` when the
//! parameters differ), and ELBv2's timing (targets `initial` until their
//! checks pass, `draining` for the deregistration delay). Faults are drawn from a seeded generator; the proxy
//! counts what it injected. [`Site`] builds the network and balancer a
//! test needs on moto.
//!
//! ```no_run
//! use phoenix_providers::aws::testing::{FaultProxy, Faults};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let proxy = FaultProxy::start("http://127.0.0.1:5000", Faults {
//!     throttle: 0.2,
//!     ..Faults::default()
//! }).await?;
//! println!("point AWS_ENDPOINT_URL at {}", proxy.url());
//! # Ok(())
//! # }
//! ```

mod probe;
mod rewrite;
mod site;
mod targets;

pub use probe::RunningProbe;
pub use site::{first_text, moto_client, stock_ami, Site};

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use rewrite::Edit;

/// What the proxy does wrong, and how often.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Chance that a call is refused with `RequestLimitExceeded` (503).
    pub throttle: f64,
    /// Chance that a call fails with a 500 before reaching moto.
    pub server_error: f64,
    /// Chance that a mutating call reaches moto and its answer is replaced
    /// by a 500 (the call took effect; the caller does not know).
    pub lost_answer: f64,
    /// How long a new instance is invisible: left out of describes,
    /// `InvalidInstanceID.NotFound` to calls that name it.
    pub invisible_for: Duration,
    /// How long a new (or started) instance reads `pending`.
    pub pending_for: Duration,
    /// Whether `RunInstances` honours `ClientToken` as EC2 does.
    pub honour_client_token: bool,
    /// How long a registered target reads `initial` before moto's
    /// `healthy`.
    pub health_delay: Duration,
    /// Whether a deregistered target reads `draining` for its group's
    /// deregistration delay (300 s unless set) before it goes.
    pub deregistration_delay: bool,
    /// Chance that a launched instance fails at boot: once its pending
    /// time is over, describes report it `terminated` (moto keeps it
    /// running, so a caller that forgets it leaves an orphan behind).
    /// Instances an Auto Scaling group launched count from the first
    /// answer that shows them, and are pending and invisible like the
    /// ones `RunInstances` made.
    pub boot_failure: f64,
    /// Actions whose answer is held back this long after moto answered
    /// (the call took effect; the caller learns it late), so that a test
    /// can make something happen between a call and what follows it.
    pub slow_answers: Vec<(String, Duration)>,
    /// Seed of the fault generator.
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            throttle: 0.0,
            server_error: 0.0,
            lost_answer: 0.0,
            invisible_for: Duration::ZERO,
            pending_for: Duration::ZERO,
            honour_client_token: false,
            boot_failure: 0.0,
            health_delay: Duration::ZERO,
            deregistration_delay: false,
            slow_answers: Vec::new(),
            seed: 1,
        }
    }
}

struct State {
    faults: Faults,
    rng: rand::rngs::StdRng,
    /// Instance id → when it was launched or started.
    born: HashMap<String, (Instant, Instant)>,
    /// Instances that fail at boot.
    failing: std::collections::HashSet<String>,
    /// Target groups' timing.
    targets: targets::Targets,
    /// ClientToken → (parameters without the token, the answer).
    tokens: HashMap<String, (Vec<(String, String)>, String)>,
    injected: BTreeMap<String, u64>,
}

impl State {
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_range(0.0..1.0) < p
    }

    fn count(&mut self, what: &str) {
        *self.injected.entry(what.to_owned()).or_default() += 1;
    }

    fn edit(&self, id: &str, now: Instant) -> Edit {
        match self.born.get(id) {
            Some((launched, _)) if now.duration_since(*launched) < self.faults.invisible_for => {
                Edit::Hide
            }
            Some((_, started)) if now.duration_since(*started) < self.faults.pending_for => {
                Edit::Pending
            }
            _ if self.failing.contains(id) => Edit::Terminated,
            _ => Edit::Keep,
        }
    }
}

/// The proxy. Stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

struct Answer {
    status: u16,
    body: String,
}

fn error(status: u16, code: &str, message: &str) -> Answer {
    Answer {
        status,
        body: format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
<Message>{message}</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>"
        ),
    }
}

const MUTATING: &[&str] = &[
    "RunInstances",
    "TerminateInstances",
    "StopInstances",
    "StartInstances",
    "CreateTags",
    "CreateImage",
    "DeregisterImage",
    "RegisterTargets",
    "DeregisterTargets",
    "ModifyListener",
    "AssociateAddress",
    "CreateAutoScalingGroup",
    "UpdateAutoScalingGroup",
    "DeleteAutoScalingGroup",
];

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (moto's URL).
    pub async fn start(upstream: &str, faults: Faults) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            rng: rand::rngs::StdRng::seed_from_u64(faults.seed),
            faults,
            born: HashMap::new(),
            failing: std::collections::HashSet::new(),
            targets: targets::Targets::default(),
            tokens: HashMap::new(),
            injected: BTreeMap::new(),
        }));
        let upstream = upstream.trim_end_matches('/').to_owned();
        let http = reqwest::Client::new();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, http, upstream) = (shared.clone(), http.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<Incoming>| {
                        let (state, http, upstream) =
                            (state.clone(), http.clone(), upstream.clone());
                        async move {
                            let a = handle(req, &state, &http, &upstream).await;
                            let mut resp = hyper::Response::new(Full::new(Bytes::from(a.body)));
                            *resp.status_mut() = hyper::StatusCode::from_u16(a.status)
                                .unwrap_or(hyper::StatusCode::BAD_GATEWAY);
                            resp.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static("text/xml"),
                            );
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    /// The proxy's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the faults (the seed is kept).
    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).faults = faults;
    }

    /// What it injected so far, by kind and action (`throttle
    /// RunInstances`).
    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .injected
            .clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    req: hyper::Request<Incoming>,
    state: &Mutex<State>,
    http: &reqwest::Client,
    upstream: &str,
) -> Answer {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(400, "MalformedRequest", "unreadable body"),
    };
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let action = param("Action").unwrap_or_default();
    let named: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.starts_with("InstanceId."))
        .map(|(_, v)| v.clone())
        .collect();
    let now = Instant::now();

    // Deregistrations held back for their delay go to moto once it passed.
    let due = state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .targets
        .due(now);
    for held in due {
        let mut r = http.post(format!("{upstream}/")).body(held.body);
        for (k, v) in &held.headers {
            r = r.header(k.as_str(), v.as_str());
        }
        let _ = r.send().await;
    }

    // Faults decided before the call reaches moto.
    let lose_answer = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        let (throttle, server_error, lost) = (
            s.faults.throttle,
            s.faults.server_error,
            s.faults.lost_answer,
        );
        if s.chance(throttle) {
            s.count(&format!("throttle {action}"));
            return error(503, "RequestLimitExceeded", "Request limit exceeded.");
        }
        if s.chance(server_error) {
            s.count(&format!("5xx {action}"));
            return error(500, "InternalError", "An internal error has occurred");
        }
        if let Some(id) = named.iter().find(|id| s.edit(id, now) == Edit::Hide) {
            s.count(&format!("not-yet-visible {action}"));
            return error(
                400,
                "InvalidInstanceID.NotFound",
                &format!("The instance ID '{id}' does not exist"),
            );
        }
        if action == "RunInstances" && s.faults.honour_client_token {
            if let Some(token) = param("ClientToken") {
                let rest: Vec<(String, String)> = params
                    .iter()
                    .filter(|(k, _)| k != "ClientToken")
                    .cloned()
                    .collect();
                if let Some((earlier, answer)) = s.tokens.get(&token) {
                    if *earlier == rest {
                        let body = answer.clone();
                        s.count("client-token replay RunInstances");
                        return Answer { status: 200, body };
                    }
                    s.count("client-token mismatch RunInstances");
                    return error(
                        400,
                        "IdempotentParameterMismatch",
                        "The client token you have provided is associated with a resource that is already deleted or has different parameters.",
                    );
                }
            }
        }
        if action == "DeregisterTargets" && s.faults.deregistration_delay {
            let kept: Vec<(String, String)> = headers
                .iter()
                .filter(|(k, _)| *k != hyper::header::HOST && *k != hyper::header::CONTENT_LENGTH)
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
                .collect();
            if s.targets.deregister(&params, kept, body.clone(), now) {
                s.count("draining DeregisterTargets");
                return Answer {
                    status: 200,
                    body: "<DeregisterTargetsResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><DeregisterTargetsResult/><ResponseMetadata><RequestId>fault-proxy</RequestId></ResponseMetadata></DeregisterTargetsResponse>".into(),
                };
            }
        }
        let lose = MUTATING.contains(&action.as_str()) && s.chance(lost);
        if lose {
            s.count(&format!("lost answer {action}"));
        }
        lose
    };

    let mut forward = http.request(method, format!("{upstream}{path}")).body(body);
    for (k, v) in &headers {
        if k != hyper::header::HOST && k != hyper::header::CONTENT_LENGTH {
            forward = forward.header(k, v);
        }
    }
    let (status, text) = match forward.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => return error(502, "BadGateway", &format!("moto: {e}")),
    };

    let (text, slow) = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        let text = if (200..300).contains(&status) {
            match action.as_str() {
                "RunInstances" => {
                    for id in rewrite::instance_ids(&text) {
                        let fails = s.faults.boot_failure;
                        if s.chance(fails) {
                            s.count("boot failure RunInstances");
                            s.failing.insert(id.clone());
                        }
                        s.born.insert(id, (now, now));
                    }
                    if let Some(token) = param("ClientToken") {
                        let rest = params
                            .iter()
                            .filter(|(k, _)| k != "ClientToken")
                            .cloned()
                            .collect();
                        s.tokens.insert(token, (rest, text.clone()));
                    }
                    // EC2 answers a launch with the instance, always pending.
                    let pending = !s.faults.pending_for.is_zero();
                    rewrite::instances(&text, |_| if pending { Edit::Pending } else { Edit::Keep })
                }
                "StartInstances" => {
                    for id in &named {
                        let launched = s.born.get(id).map_or(now, |b| b.0);
                        s.born.insert(id.clone(), (launched, now));
                    }
                    text
                }
                "DescribeAutoScalingGroups" => {
                    for id in rewrite::group_instance_ids(&text) {
                        if s.born.contains_key(&id) {
                            continue;
                        }
                        let fails = s.faults.boot_failure;
                        if s.chance(fails) {
                            s.count("boot failure AutoScaling");
                            s.failing.insert(id.clone());
                        }
                        s.born.insert(id, (now, now));
                    }
                    text
                }
                "DescribeInstances" => rewrite::instances(&text, |id| s.edit(id, now)),
                "RegisterTargets" => {
                    s.targets.registered(&params, now);
                    text
                }
                "ModifyTargetGroupAttributes" => {
                    s.targets.attributes(&params);
                    text
                }
                "DescribeTargetHealth" => {
                    let group = param("TargetGroupArn").unwrap_or_default();
                    let delay = s.faults.health_delay;
                    rewrite::target_health(&text, |id| s.targets.state(&group, id, delay, now))
                }
                _ => text,
            }
        } else {
            text
        };
        let slow = s
            .faults
            .slow_answers
            .iter()
            .find(|(a, _)| *a == action)
            .map(|(_, d)| *d);
        if slow.is_some() {
            s.count(&format!("slow answer {action}"));
        }
        (text, slow)
    };
    if let Some(d) = slow {
        tokio::time::sleep(d).await;
    }
    if lose_answer {
        return error(500, "InternalError", "An internal error has occurred");
    }
    Answer { status, body: text }
}
