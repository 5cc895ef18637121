//! The drain and warm-up hooks against real HTTP servers (hyper, in this
//! process, on loopback) and real commands: what they send, what they
//! count, and that their concurrency, time budget and timeouts hold.
#![cfg(feature = "hooks")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use phoenix_core::ports::{HookTarget, ServerHooks};
use phoenix_state::hooks::{CommandDrain, Hooks, HttpDrain, WarmUp};
use tokio::net::TcpListener;

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    host: String,
    agent: String,
}

/// A small HTTP server: `/slow/N` answers after N ms, `/fail` with 500,
/// `/drain` with `{"sessions": 7}`, `/sitemap.xml` and `/index.xml` with
/// sitemaps, anything under `/ok` with 200, the rest with 404. It records
/// every request and the most requests it had in flight at once.
struct TestServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    peak: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(
    req: Request<hyper::body::Incoming>,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        host: header("host"),
        agent: header("user-agent"),
    });
    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    peak.fetch_max(now, Ordering::SeqCst);
    let (status, body) = if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        (StatusCode::OK, "slow".to_owned())
    } else {
        match path.as_str() {
            "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "boom".to_owned()),
            "/drain" => (
                StatusCode::OK,
                r#"{"drained":true,"sessions":7}"#.to_owned(),
            ),
            "/sitemap.xml" => (
                StatusCode::OK,
                format!(
                    r#"<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
                    <url><loc>http://{addr}/ok/1</loc></url>
                    <url><loc>https://shop.example/ok/2?a=1&amp;b=2</loc></url>
                    <url><loc>/fail</loc></url></urlset>"#
                ),
            ),
            "/index.xml" => (
                StatusCode::OK,
                r#"<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
                   <sitemap><loc>https://shop.example/part-a.xml</loc></sitemap>
                   <sitemap><loc>https://shop.example/part-b.xml</loc></sitemap>
                   </sitemapindex>"#
                    .to_owned(),
            ),
            "/part-a.xml" | "/part-b.xml" => {
                let part = &path[6..7];
                (
                    StatusCode::OK,
                    format!(
                        "<urlset><url><loc>https://shop.example/ok/{part}1</loc></url>\
                         <url><loc>https://shop.example/ok/{part}2</loc></url></urlset>"
                    ),
                )
            }
            "/not-a-sitemap" => (StatusCode::OK, "<html><body>hi</body></html>".to_owned()),
            p if p.starts_with("/ok") => (StatusCode::OK, "ok".to_owned()),
            _ => (StatusCode::NOT_FOUND, "no".to_owned()),
        }
    };
    in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

impl TestServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let peak = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let task = {
            let (seen, peak) = (seen.clone(), peak.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (seen, peak, in_flight) = (seen.clone(), peak.clone(), in_flight.clone());
                    let service = service_fn(move |req| {
                        let (seen, peak, in_flight) =
                            (seen.clone(), peak.clone(), in_flight.clone());
                        async move {
                            Ok::<_, Infallible>(respond(req, addr, seen, in_flight, peak).await)
                        }
                    });
                    tokio::spawn(async move {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Self {
            addr,
            seen,
            peak,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn target(&self) -> HookTarget {
        HookTarget {
            server: "srv-1".parse().unwrap(),
            endpoint: self.addr,
            pool: "web-v2-3".parse().unwrap(),
            slot: 4,
            role: "web".parse().unwrap(),
            release: "v2".parse().unwrap(),
        }
    }
}

#[tokio::test]
async fn an_http_drain_posts_to_the_server_and_counts_what_it_handed_over() {
    let server = TestServer::start().await;
    let hooks = Hooks::builder()
        .drain(HttpDrain::post("/drain").count_field("sessions"))
        .build();
    let report = hooks.drain(&server.target()).await.unwrap();
    assert_eq!((report.done, report.failed), (7, 0), "{report:?}");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/drain")
    );
    assert!(seen[0].agent.starts_with("phoenix-hooks"), "{seen:?}");
    // Without a count field a success counts as one.
    let plain = Hooks::builder().drain(HttpDrain::post("/drain")).build();
    assert_eq!(plain.drain(&server.target()).await.unwrap().done, 1);
    // No warm-up configured: nothing done, nothing failed.
    let report = plain.warm_up(&server.target()).await.unwrap();
    assert_eq!((report.done, report.failed), (0, 0));
}

#[tokio::test]
async fn an_http_drain_fails_on_an_unexpected_status_a_bad_path_or_a_timeout() {
    let server = TestServer::start().await;
    let t = server.target();
    let wrong_status = Hooks::builder()
        .drain(HttpDrain::post("/drain").expect_status(204))
        .build();
    let err = wrong_status.drain(&t).await.unwrap_err();
    assert!(err.chain().contains("HTTP 200"), "{}", err.chain());
    let missing = Hooks::builder().drain(HttpDrain::post("/nope")).build();
    let err = missing.drain(&t).await.unwrap_err();
    assert!(err.chain().contains("404"), "{}", err.chain());
    let not_a_path = Hooks::builder().drain(HttpDrain::post("drain")).build();
    assert!(not_a_path.drain(&t).await.is_err());
    let slow = Hooks::builder()
        .drain(HttpDrain::post("/slow/5000").timeout(Duration::from_millis(200)))
        .build();
    let started = Instant::now();
    let err = slow.drain(&t).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout bounded it"
    );
    assert!(
        err.is_retryable() && err.chain().contains("no answer within"),
        "{}",
        err.chain()
    );
    // Nothing listens: a connection error, not a hang.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut gone = t.clone();
    gone.endpoint = closed;
    assert!(Hooks::builder()
        .drain(HttpDrain::post("/drain"))
        .build()
        .drain(&gone)
        .await
        .is_err());
}

#[tokio::test]
async fn a_command_drain_is_told_about_the_server_and_reports_its_count() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let script = format!(
        "echo \"$PHOENIX_HOOK $PHOENIX_HOOK_SERVER $PHOENIX_HOOK_ENDPOINT $PHOENIX_HOOK_POOL \
         $PHOENIX_HOOK_SLOT $PHOENIX_HOOK_ROLE $PHOENIX_HOOK_RELEASE $EXTRA\" > {}; echo moved; echo 12",
        out.display()
    );
    let drain = CommandDrain::new(["sh", "-c", &script])
        .unwrap()
        .env("EXTRA", "x");
    let server = TestServer::start().await;
    let hooks = Hooks::builder().drain(drain).build();
    let report = hooks.drain(&server.target()).await.unwrap();
    assert_eq!((report.done, report.failed), (12, 0), "{report:?}");
    let written = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        written.trim(),
        format!("drain srv-1 {} web-v2-3 4 web v2 x", server.addr)
    );
}

#[tokio::test]
async fn a_failing_or_hanging_command_is_an_error_and_a_hang_is_killed_with_its_children() {
    let server = TestServer::start().await;
    let t = server.target();
    let failing = Hooks::builder()
        .drain(CommandDrain::new(["sh", "-c", "echo 'sessions are stuck' >&2; exit 3"]).unwrap())
        .build();
    let err = failing.drain(&t).await.unwrap_err();
    assert!(
        err.chain().contains("sessions are stuck"),
        "{}",
        err.chain()
    );
    let missing = Hooks::builder()
        .drain(CommandDrain::new(["/nonexistent/drain-tool"]).unwrap())
        .build();
    assert!(missing.drain(&t).await.is_err());

    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // The command starts a child of its own and waits for it.
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let hanging = Hooks::builder()
        .drain(
            CommandDrain::new(["sh", "-c", &script])
                .unwrap()
                .timeout(Duration::from_millis(300)),
        )
        .build();
    let started = Instant::now();
    let err = hanging.drain(&t).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(err.chain().contains("killed"), "{}", err.chain());
    let grandchild: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = async {
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat"));
            // Gone, or a zombie waiting for its (killed) parent's reaper.
            match stat {
                Err(_) => return,
                Ok(s)
                    if s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z')) =>
                {
                    return
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), gone)
        .await
        .expect("the command's own child was killed too");
}

#[tokio::test]
async fn a_warm_up_counts_hits_and_failures() {
    let server = TestServer::start().await;
    let hooks = Hooks::builder()
        .warm_up(WarmUp::paths(["/ok/a", "/ok/b?x=1", "/fail", "/missing"]))
        .build();
    let report = hooks.warm_up(&server.target()).await.unwrap();
    assert_eq!((report.done, report.failed), (2, 2), "{report:?}");
    assert!(
        report.detail.contains("/fail: HTTP 500"),
        "{}",
        report.detail
    );
    assert!(
        report.detail.contains("/missing: HTTP 404"),
        "{}",
        report.detail
    );
    let paths: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths.len(), 4);
    assert!(paths.contains(&"/ok/b?x=1".to_owned()));
}

#[tokio::test]
async fn a_sitemap_warm_up_requests_every_location_from_the_new_server_under_its_host() {
    let server = TestServer::start().await;
    let hooks = Hooks::builder()
        .warm_up(WarmUp::sitemap("/sitemap.xml"))
        .build();
    let report = hooks.warm_up(&server.target()).await.unwrap();
    assert_eq!((report.done, report.failed), (2, 1), "{report:?}");
    let seen: BTreeMap<String, String> = server
        .seen()
        .into_iter()
        .map(|s| (s.path, s.host))
        .collect();
    assert_eq!(
        seen["/ok/2?a=1&b=2"], "shop.example",
        "listed under its host"
    );
    assert_eq!(seen["/ok/1"], server.addr.to_string());
    assert!(seen.contains_key("/fail"));

    // An index is followed one level down.
    let server = TestServer::start().await;
    let hooks = Hooks::builder()
        .warm_up(WarmUp::sitemap("/index.xml"))
        .build();
    let report = hooks.warm_up(&server.target()).await.unwrap();
    assert_eq!((report.done, report.failed), (4, 0), "{report:?}");
    let paths: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
    for p in [
        "/ok/a1",
        "/ok/a2",
        "/ok/b1",
        "/ok/b2",
        "/part-a.xml",
        "/part-b.xml",
    ] {
        assert!(paths.contains(&p.to_owned()), "{p} in {paths:?}");
    }

    // A missing or malformed sitemap is an error, not an empty warm-up.
    for bad in ["/missing.xml", "/not-a-sitemap"] {
        let hooks = Hooks::builder().warm_up(WarmUp::sitemap(bad)).build();
        let err = hooks.warm_up(&server.target()).await.unwrap_err();
        assert!(
            err.chain().contains(bad) || err.chain().contains("not a sitemap"),
            "{}",
            err.chain()
        );
    }
}

#[tokio::test]
async fn a_warm_up_keeps_to_its_concurrency() {
    let server = TestServer::start().await;
    let paths: Vec<String> = (0..12).map(|i| format!("/slow/{}", 100 + i)).collect();
    let hooks = Hooks::builder()
        .warm_up(WarmUp::paths(paths).concurrency(3))
        .build();
    let started = Instant::now();
    let report = hooks.warm_up(&server.target()).await.unwrap();
    assert_eq!((report.done, report.failed), (12, 0), "{report:?}");
    let peak = server.peak.load(Ordering::SeqCst);
    assert!((2..=3).contains(&peak), "at most 3 in flight, saw {peak}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "12 requests of 100 ms, 3 at a time, take at least 4 rounds"
    );
}

#[tokio::test]
async fn a_warm_up_stops_at_its_budget_and_reports_what_it_did_not_do() {
    let server = TestServer::start().await;
    let paths: Vec<String> = (0..40).map(|_| "/slow/200".to_owned()).collect();
    let hooks = Hooks::builder()
        .warm_up(
            WarmUp::paths(paths)
                .concurrency(2)
                .budget(Duration::from_millis(500)),
        )
        .build();
    let started = Instant::now();
    let report = hooks.warm_up(&server.target()).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(900),
        "kept to its budget: {took:?}"
    );
    assert!((2..=6).contains(&report.done), "{report:?}");
    assert_eq!(report.failed, 0, "cut short is not failed: {report:?}");
    assert!(
        report.detail.contains("not done within"),
        "{}",
        report.detail
    );
    // A request slower than its own timeout is a failure.
    let hooks = Hooks::builder()
        .warm_up(WarmUp::paths(["/slow/2000", "/ok"]).request_timeout(Duration::from_millis(100)))
        .build();
    let report = hooks.warm_up(&server.target()).await.unwrap();
    assert_eq!((report.done, report.failed), (1, 1), "{report:?}");
}
