//! Routing, counters, and the balancer's lifetime (shutdown, drop).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{get, quick_lb, wait_health, wait_healthy, Backend, Spec};
use phoenix_core::ports::{LoadBalancer, MemberHealth};
use phoenix_lb::embedded::{EmbeddedBalancer, EmbeddedError, HealthCheck};
use phoenix_lb::loadgen::{LoadGen, LoadGenConfig};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const SETTLE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_is_spread_and_counted() {
    let backends = [
        Backend::start("spread-a", Spec::release("v1")).await,
        Backend::start("spread-b", Spec::release("v1")).await,
        Backend::start("spread-c", Spec::release("v1")).await,
    ];
    let lb = quick_lb(Duration::from_millis(50)).start().await.unwrap();
    let targets: Vec<_> = backends.iter().map(Backend::target).collect();
    lb.attach(&targets).await.unwrap();
    let ids: Vec<_> = targets.iter().map(|t| t.server.clone()).collect();
    wait_healthy(&lb, &ids, SETTLE).await;

    let report = LoadGen::run(LoadGenConfig {
        rate: 300,
        duration: Duration::from_millis(700),
        fresh_ratio: 0.5,
        ..LoadGenConfig::new(lb.local_addr())
    })
    .await
    .unwrap();
    eprintln!("{report}");
    assert_eq!(report.failed, 0, "{:?}", report.failure_samples);
    assert!(report.sent >= 100, "{report}");

    // Counters settle as the proxy sees each connection end.
    let stats = common::eventually("every proxied connection ended", SETTLE, || async {
        let stats = lb.stats();
        stats
            .members
            .iter()
            .all(|m| m.connections_active == 0)
            .then_some(stats)
    })
    .await;
    let total: u64 = stats.members.iter().map(|m| m.connections_total).sum();
    assert_eq!(total, report.connections_opened);
    assert_eq!(stats.accepted, report.connections_opened);
    for (b, m) in backends.iter().zip(&stats.members) {
        assert!(b.hits() > 0, "every member served");
        assert!(
            m.connections_total > 0 && m.bytes_in > 0 && m.bytes_out > 0,
            "{m:?}"
        );
        assert_eq!(m.connect_failures, 0);
        assert!(m.checks_passed >= 2);
    }
    let served: u64 = backends.iter().map(Backend::hits).sum();
    assert_eq!(served, report.sent);
    let bytes_out: u64 = stats.members.iter().map(|m| m.bytes_out).sum();
    assert!(
        bytes_out > report.body_bytes,
        "heads and bodies went through"
    );
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_first_then_unchecked_never_unhealthy() {
    let good = Backend::start("route-good", Spec::release("good")).await;
    let sick = Backend::start("route-sick", Spec::release("sick").health(500)).await;
    // Checks every 10 s: after the first (immediate) check, members stay
    // `Unknown` (rise 2) for the whole test.
    let lb = quick_lb(Duration::from_secs(10))
        .fall(1)
        .start()
        .await
        .unwrap();
    lb.attach(&[good.target()]).await.unwrap();
    let (status, release) = get(lb.local_addr(), "/").await.unwrap();
    assert_eq!(
        (status, release.as_deref()),
        (200, Some("good")),
        "an unchecked member serves"
    );
    let m = lb.members().await.unwrap();
    assert_eq!(m[0].health, MemberHealth::Unknown);

    // `fall(1)`: the first check marks the sick one down.
    lb.attach(&[sick.target()]).await.unwrap();
    wait_health(&lb, &sick.id, MemberHealth::Unhealthy, SETTLE).await;
    for _ in 0..10 {
        let (_, release) = get(lb.local_addr(), "/").await.unwrap();
        assert_eq!(release.as_deref(), Some("good"));
    }
    assert_eq!(sick.hits(), 0, "an unhealthy member takes no traffic");

    // With no eligible member, the client connection is closed unserved.
    lb.detach(std::slice::from_ref(&good.id), Duration::ZERO)
        .await
        .unwrap();
    let mut client = TcpStream::connect(lb.local_addr()).await.unwrap();
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(SETTLE, client.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)));
    assert_eq!(lb.stats().unserved, 1);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_everything() {
    let b = Backend::start("life-a", Spec::release("v1")).await;
    let lb = quick_lb(Duration::from_millis(20)).start().await.unwrap();
    let addr = lb.local_addr();
    lb.attach(&[b.target()]).await.unwrap();
    wait_healthy(&lb, std::slice::from_ref(&b.id), SETTLE).await;
    let mut open = TcpStream::connect(addr).await.unwrap();
    common::eventually("connected through", SETTLE, || async {
        (lb.stats().members[0].connections_active == 1).then_some(())
    })
    .await;

    tokio::time::timeout(SETTLE, lb.shutdown())
        .await
        .expect("shutdown completes");
    assert!(lb.is_shut_down());
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(SETTLE, open.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "open connections are closed"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
    assert!(lb.attach(&[b.target()]).await.is_err());
    let checks = b.health_hits();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.health_hits(), checks, "health checks stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_or_cancelling_stops_everything() {
    let b = Backend::start("life-b", Spec::release("v1")).await;
    let lb = quick_lb(Duration::from_millis(20)).start().await.unwrap();
    let addr = lb.local_addr();
    lb.attach(&[b.target()]).await.unwrap();
    wait_healthy(&lb, std::slice::from_ref(&b.id), SETTLE).await;
    drop(lb);
    common::eventually("the listener closes", SETTLE, || async {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let checks = b.health_hits();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.health_hits(), checks, "health checks stopped");

    let token = CancellationToken::new();
    let lb = EmbeddedBalancer::builder()
        .health_check(HealthCheck::TcpConnect)
        .shutdown_token(token.clone())
        .start()
        .await
        .unwrap();
    let addr = lb.local_addr();
    token.cancel();
    assert!(lb.is_shut_down());
    common::eventually("the listener closes", SETTLE, || async {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_listen_beyond_loopback_by_default() {
    let err = EmbeddedBalancer::builder()
        .listen("0.0.0.0:0".parse().unwrap())
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, EmbeddedError::NotLoopback { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attaching_a_known_server_at_another_endpoint_is_a_conflict() {
    let a = Backend::start("conflict-a", Spec::release("v1")).await;
    let other = Backend::start("conflict-b", Spec::release("v1")).await;
    let lb = quick_lb(Duration::from_millis(50)).start().await.unwrap();
    lb.attach(&[a.target()]).await.unwrap();
    let mut moved = a.target();
    moved.endpoint = other.addr;
    let err = lb.attach(&[other.target(), moved]).await.unwrap_err();
    assert!(
        matches!(err.kind, phoenix_core::ports::ErrorKind::Conflict(_)),
        "{err}"
    );
    assert_eq!(lb.members().await.unwrap().len(), 1, "nothing changed");
    lb.shutdown().await;
}
