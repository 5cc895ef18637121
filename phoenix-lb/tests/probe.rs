//! The HTTP probe against real backends on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Backend, Spec};
use phoenix_core::ports::{Check, Probe, ProbeOutcome, ProbeTarget};
use phoenix_lb::probe::HttpProbe;
use tokio::net::TcpListener;
use tokio::time::Instant;

fn target(endpoint: SocketAddr, release: &str) -> ProbeTarget {
    ProbeTarget {
        server: "probe-1".parse().unwrap(),
        endpoint,
        release: release.parse().unwrap(),
        role: "web".parse().unwrap(),
    }
}

async fn check(
    probe: &HttpProbe,
    endpoint: SocketAddr,
    release: &str,
    check: Check,
) -> ProbeOutcome {
    probe
        .check(&target(endpoint, release), check)
        .await
        .expect("the probe runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_backend_passes_both_checks() {
    let b = Backend::start("p-ok", Spec::release("v1")).await;
    let probe = HttpProbe::new();
    let health = check(&probe, b.addr, "v1", Check::Health).await;
    assert!(health.passed, "{health:?}");
    assert!(
        health.detail.contains("/health") && health.detail.contains("200"),
        "{}",
        health.detail
    );
    let smoke = check(&probe, b.addr, "v1", Check::Smoke).await;
    assert!(smoke.passed, "{smoke:?}");
    assert!(smoke.detail.contains("release v1"), "{}", smoke.detail);
    assert_eq!(b.health_hits(), 1);
    assert_eq!(b.hits(), 1, "the smoke check requested /");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_fails_the_health_check() {
    let b = Backend::start("p-500", Spec::release("v1").health(500)).await;
    let outcome = check(&HttpProbe::new(), b.addr, "v1", Check::Health).await;
    assert!(!outcome.passed);
    assert!(outcome.detail.contains("500"), "{}", outcome.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_fails_without_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let probe = HttpProbe::new();
    for c in [Check::Health, Check::Smoke] {
        let outcome = check(&probe, addr, "v1", c).await;
        assert!(!outcome.passed);
        assert!(
            outcome.detail.contains("connecting to"),
            "{}",
            outcome.detail
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_release_fails_the_smoke_test_naming_both() {
    let b = Backend::start("p-v2", Spec::release("v2")).await;
    let probe = HttpProbe::new();
    let smoke = check(&probe, b.addr, "v1", Check::Smoke).await;
    assert!(!smoke.passed);
    assert!(
        smoke.detail.contains("\"v2\"") && smoke.detail.contains("\"v1\""),
        "{}",
        smoke.detail
    );
    let health = check(&probe, b.addr, "v1", Check::Health).await;
    assert!(
        health.passed,
        "the health check does not look at the release"
    );

    let unlabelled = Backend::start("p-none", Spec::unlabelled()).await;
    let smoke = check(&probe, unlabelled.addr, "v1", Check::Smoke).await;
    assert!(
        smoke.passed,
        "no release header, nothing to compare: {smoke:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_fails_at_the_timeout() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let timeout = Duration::from_millis(300);
    let probe = HttpProbe::builder().timeout(timeout).build().unwrap();
    let started = Instant::now();
    let outcome = check(&probe, addr, "v1", Check::Health).await;
    let took = started.elapsed();
    assert!(!outcome.passed);
    assert!(outcome.detail.contains("within"), "{}", outcome.detail);
    assert!(took >= timeout && took < timeout * 5, "{took:?}");
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_configurable() {
    let b = Backend::start("p-paths", Spec::release("v1").health(503)).await;
    // `/health` answers 503 here; `/ready` (any other path) answers 200.
    let probe = HttpProbe::builder()
        .health_path("/ready")
        .smoke_path("/slow")
        .build()
        .unwrap();
    assert!(check(&probe, b.addr, "v1", Check::Health).await.passed);
    let smoke = check(&probe, b.addr, "v1", Check::Smoke).await;
    assert!(smoke.passed && smoke.detail.contains("/slow"), "{smoke:?}");
    assert_eq!(b.health_hits(), 0);
}
