//! In-process HTTP backends on 127.0.0.1 and small helpers shared by the
//! integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use phoenix_core::conformance::load_balancer::{OutOfBand, Sidelined};
use phoenix_core::id::ServerId;
use phoenix_core::ports::{LoadBalancer, Member, MemberHealth, PortError, Target};
use phoenix_lb::embedded::{EmbeddedBalancer, EmbeddedBalancerBuilder, HealthCheck};
use phoenix_lb::loadgen::{LoadGenConfig, LoadReport};
use phoenix_lb::RELEASE_HEADER;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a backend answers.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// Sent as `X-Phoenix-Release` on every answer, if set.
    pub(crate) release: Option<String>,
    /// Status of `/health`.
    pub(crate) health_status: u16,
    /// How long `/health` takes to answer.
    pub(crate) health_delay: Duration,
    /// How long `/slow` takes.
    pub(crate) slow: Duration,
}

impl Spec {
    pub(crate) fn release(release: &str) -> Self {
        Self {
            release: Some(release.to_owned()),
            health_status: 200,
            health_delay: Duration::ZERO,
            slow: Duration::from_millis(300),
        }
    }

    pub(crate) fn unlabelled() -> Self {
        Self {
            release: None,
            ..Self::release("x")
        }
    }

    pub(crate) fn health(mut self, status: u16) -> Self {
        self.health_status = status;
        self
    }

    pub(crate) fn health_delay(mut self, delay: Duration) -> Self {
        self.health_delay = delay;
        self
    }
}

/// A hyper HTTP/1.1 server on 127.0.0.1:0. Paths: `/health` (the
/// configured status), `/slow` (sleeps `slow`), `/hang` (sleeps 30 s),
/// anything else 200. Every answer carries the release header if set.
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    pub(crate) id: ServerId,
    stop: CancellationToken,
    accept: Option<JoinHandle<()>>,
    /// Duplicates of the open connections' sockets, so that `kill` can
    /// reset them.
    open: Arc<Mutex<HashMap<u64, std::net::TcpStream>>>,
    hits: Arc<AtomicU64>,
    health_hits: Arc<AtomicU64>,
}

impl Backend {
    pub(crate) async fn start(id: &str, spec: Spec) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let open: Arc<Mutex<HashMap<u64, std::net::TcpStream>>> = Arc::default();
        let hits = Arc::new(AtomicU64::new(0));
        let health_hits = Arc::new(AtomicU64::new(0));
        let spec = Arc::new(spec);
        let accept = tokio::spawn({
            let (stop, open, hits, health_hits) = (
                stop.clone(),
                open.clone(),
                hits.clone(),
                health_hits.clone(),
            );
            async move {
                let mut next = 0u64;
                loop {
                    let stream = tokio::select! {
                        () = stop.cancelled() => return,
                        accepted = listener.accept() => match accepted {
                            Ok((s, _)) => s,
                            Err(_) => continue,
                        },
                    };
                    let std_stream = stream.into_std().unwrap();
                    let dup = std_stream.try_clone().unwrap();
                    let stream = TcpStream::from_std(std_stream).unwrap();
                    next += 1;
                    let key = next;
                    open.lock().unwrap().insert(key, dup);
                    let (stop, open, spec, hits, health_hits) = (
                        stop.clone(),
                        open.clone(),
                        spec.clone(),
                        hits.clone(),
                        health_hits.clone(),
                    );
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            answer(req, spec.clone(), hits.clone(), health_hits.clone())
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::select! {
                            _ = conn => {
                                open.lock().unwrap().remove(&key);
                            }
                            // Killed: leave the duplicate to `kill`, which resets it.
                            () = stop.cancelled() => {}
                        }
                    });
                }
            }
        });
        Self {
            addr,
            id: id.parse().unwrap(),
            stop,
            accept: Some(accept),
            open,
            hits,
            health_hits,
        }
    }

    pub(crate) fn target(&self) -> Target {
        Target {
            server: self.id.clone(),
            endpoint: self.addr,
        }
    }

    /// Requests to paths other than `/health`.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Requests to `/health`.
    pub(crate) fn health_hits(&self) -> u64 {
        self.health_hits.load(Ordering::Relaxed)
    }

    /// Dies abruptly: stops accepting and closes the listener, then resets
    /// every open connection (RST, not FIN), as a crashed server would.
    pub(crate) async fn kill(&mut self) {
        self.stop.cancel();
        if let Some(accept) = self.accept.take() {
            accept.await.unwrap();
        }
        let mut open = self.open.lock().unwrap();
        for socket in open.values() {
            socket2::SockRef::from(socket)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
        open.clear();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer(
    req: Request<Incoming>,
    spec: Arc<Spec>,
    hits: Arc<AtomicU64>,
    health_hits: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = match req.uri().path() {
        "/health" => {
            health_hits.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(spec.health_delay).await;
            spec.health_status
        }
        "/slow" => {
            hits.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(spec.slow).await;
            200
        }
        "/fail" => {
            hits.fetch_add(1, Ordering::Relaxed);
            500
        }
        "/hang" => {
            hits.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(30)).await;
            200
        }
        _ => {
            hits.fetch_add(1, Ordering::Relaxed);
            200
        }
    };
    let mut response = Response::builder().status(status);
    if let Some(release) = &spec.release {
        response = response.header(RELEASE_HEADER, release.as_str());
    }
    let body = format!("{}\n", spec.release.as_deref().unwrap_or("-"));
    Ok(response.body(Full::new(Bytes::from(body))).unwrap())
}

/// One `GET` on a new connection: the status and the release header.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Result<(u16, Option<String>), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let request = Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let release = response
        .headers()
        .get(RELEASE_HEADER)
        .map(|v| v.to_str().unwrap().to_owned());
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    drop(sender);
    driver.abort();
    Ok((status, release))
}

/// A balancer with quick checks for tests: `GET /health` every
/// `interval`, healthy after 2 passes, unhealthy after 2 failures.
pub(crate) fn quick_lb(interval: Duration) -> EmbeddedBalancerBuilder {
    EmbeddedBalancer::builder()
        .health_check(HealthCheck::http_get("/health"))
        .check_interval(interval)
        .check_timeout(Duration::from_millis(500))
        .rise(2)
        .fall(2)
        .connect_timeout(Duration::from_millis(500))
        .connect_attempts(3)
}

/// Polls `f` every 5 ms until it returns `Some`, or panics after `limit`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, limit: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    phoenix_core::conformance::eventually(what, limit, Duration::from_millis(5), f).await
}

pub(crate) fn find<'a>(members: &'a [Member], id: &ServerId) -> Option<&'a Member> {
    members.iter().find(|m| &m.server == id)
}

/// Waits until every one of `ids` is an active, healthy member.
pub(crate) async fn wait_healthy(lb: &dyn LoadBalancer, ids: &[ServerId], limit: Duration) {
    eventually("members healthy", limit, || async {
        let members = lb.members().await.ok()?;
        ids.iter()
            .all(|id| find(&members, id).is_some_and(Member::is_serving_healthy))
            .then_some(())
    })
    .await;
}

/// Waits until `id` has the given health.
pub(crate) async fn wait_health(
    lb: &dyn LoadBalancer,
    id: &ServerId,
    health: MemberHealth,
    limit: Duration,
) {
    eventually("member health", limit, || async {
        let members = lb.members().await.ok()?;
        (find(&members, id)?.health == health).then_some(())
    })
    .await;
}

/// Waits until `id` is no longer a member.
pub(crate) async fn wait_gone(lb: &dyn LoadBalancer, id: &ServerId, limit: Duration) {
    eventually("member removed", limit, || async {
        let members = lb.members().await.ok()?;
        find(&members, id).is_none().then_some(())
    })
    .await;
}

/// Two backends answering as `release`, as a pool the cutover tests switch
/// to and from.
pub(crate) struct Pool {
    pub targets: Vec<Target>,
    pub ids: Vec<ServerId>,
    _backends: Vec<Backend>,
}

pub(crate) async fn pool(release: &str) -> Pool {
    let mut backends = Vec::new();
    for i in 0..2 {
        backends.push(Backend::start(&format!("{release}-{i}"), Spec::release(release)).await);
    }
    Pool {
        targets: backends.iter().map(Backend::target).collect(),
        ids: backends.iter().map(|b| b.id.clone()).collect(),
        _backends: backends,
    }
}

/// The cutover tests' steady mixed load against `addr`: 200 requests/s,
/// 30% on fresh connections, kept-alive connections living 300 ms at most
/// (so a 3 s drain never has to close one by force).
pub(crate) fn cutover_load(addr: SocketAddr, duration: Duration) -> LoadGenConfig {
    LoadGenConfig {
        rate: 200,
        duration,
        concurrency: 8,
        fresh_ratio: 0.3,
        keepalive_max_requests: 5,
        keepalive_max_age: Duration::from_millis(300),
        request_timeout: Duration::from_secs(2),
        ..LoadGenConfig::new(addr)
    }
}

/// Records the control time of one balancer call.
pub(crate) async fn timed<F: Future<Output = Result<(), PortError>>>(
    times: &mut Vec<Duration>,
    call: F,
) {
    let start = Instant::now();
    call.await.unwrap();
    times.push(start.elapsed());
}

/// Median and maximum.
pub(crate) fn median_max(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (
        times.get(times.len() / 2).copied().unwrap_or_default(),
        times.last().copied().unwrap_or_default(),
    )
}

/// Every request of a blue-green run answered, none retried, both
/// releases seen.
pub(crate) fn assert_lossless(report: &LoadReport, min_sent: u64) {
    assert!(
        report.sent >= min_sent,
        "too little load to mean anything: {report}"
    );
    assert_eq!(
        report.failed, 0,
        "failed requests: {:?}",
        report.failure_samples
    );
    assert_eq!(report.ok, report.sent);
    assert_eq!(
        report.retried(),
        0,
        "no connection should close under a request during a cutover"
    );
    assert!(
        report.served_by("blue") > 0 && report.served_by("green") > 0,
        "{report}"
    );
    assert_eq!(report.unlabelled, 0);
}

/// Sidelines a member of an embedded balancer the one way it has: a
/// connection held open through the balancer to that member, then a detach
/// with a long drain, so that it stays draining until the connection
/// closes (the conformance suite's re-activation check).
pub(crate) struct HeldOpen {
    lb: Arc<EmbeddedBalancer>,
    held: Mutex<Vec<TcpStream>>,
}

impl HeldOpen {
    pub(crate) fn new(lb: Arc<EmbeddedBalancer>) -> Self {
        Self {
            lb,
            held: Mutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl OutOfBand for HeldOpen {
    fn sidelines(&self) -> Vec<Sidelined> {
        vec![Sidelined::Draining]
    }

    async fn sideline(&self, member: &Target, how: Sidelined) {
        assert_eq!(how, Sidelined::Draining);
        // Routing picks among the active members: open connections until
        // one of them is the member's.
        eventually(
            "a connection to the member is open",
            Duration::from_secs(5),
            || async {
                let open = self
                    .lb
                    .stats()
                    .members
                    .iter()
                    .any(|m| m.server == member.server && m.connections_active > 0);
                if !open {
                    let s = TcpStream::connect(self.lb.local_addr()).await.ok()?;
                    self.held.lock().unwrap().push(s);
                }
                open.then_some(())
            },
        )
        .await;
        self.lb
            .detach(
                std::slice::from_ref(&member.server),
                Duration::from_secs(3600),
            )
            .await
            .unwrap();
    }
}
