//! Draining through a real haproxy: `detach` waits for open sessions to
//! finish, closes what is left at the drain deadline, and drains a batch
//! concurrently (the longest drain, not the sum).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(all(feature = "haproxy", feature = "embedded"))]

mod common;
mod haproxy_common;

use std::time::Duration;

use common::{find, get, wait_healthy, Backend, Spec};
use haproxy_common::haproxy;
use phoenix_core::ports::LoadBalancer;
use phoenix_lb::haproxy::{Mode, ServerCheck};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

fn check() -> Option<ServerCheck> {
    Some(ServerCheck::new(Duration::from_millis(50), 1, 2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy: run the full test script"]
async fn detach_waits_for_a_request_in_flight() {
    let slow = Backend::start("drain-slow", Spec::release("v1")).await;
    let h = haproxy(Mode::Http).await;
    let lb = h.balancer().check(check()).build().unwrap();
    lb.attach(&[slow.target()]).await.unwrap();
    wait_healthy(&lb, std::slice::from_ref(&slow.id), Duration::from_secs(5)).await;

    // `/slow` takes 300 ms.
    let frontend = h.frontend_addr();
    let request = tokio::spawn(async move { get(frontend, "/slow").await });
    common::eventually(
        "the request is in the server",
        Duration::from_secs(2),
        || async {
            let m = lb.members().await.ok()?;
            (find(&m, &slow.id)?.connections? > 0).then_some(())
        },
    )
    .await;
    let started = Instant::now();
    lb.detach(std::slice::from_ref(&slow.id), Duration::from_secs(5))
        .await
        .unwrap();
    let took = started.elapsed();
    let (status, release) = request.await.unwrap().unwrap();
    assert_eq!(
        (status, release.as_deref()),
        (200, Some("v1")),
        "the request finished"
    );
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(3),
        "detach returned after {took:?}, not once the request was done"
    );
    assert!(lb.members().await.unwrap().is_empty());
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy: run the full test script"]
async fn a_batch_drains_concurrently_and_the_deadline_closes_what_is_left() {
    let backends = [
        Backend::start("hold-a", Spec::release("v1")).await,
        Backend::start("hold-b", Spec::release("v1")).await,
        Backend::start("hold-c", Spec::release("v1")).await,
    ];
    let ids: Vec<_> = backends.iter().map(|b| b.id.clone()).collect();
    // In TCP mode a client connection is a session on its server until it
    // closes.
    let h = haproxy(Mode::Tcp).await;
    let lb = h.balancer().check(check()).build().unwrap();
    lb.attach(&backends.iter().map(Backend::target).collect::<Vec<_>>())
        .await
        .unwrap();
    wait_healthy(&lb, &ids, Duration::from_secs(5)).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(h.frontend_addr()).await.unwrap());
    }
    // `balance leastconn` puts one on each.
    common::eventually("one session per server", Duration::from_secs(2), || async {
        let m = lb.members().await.ok()?;
        ids.iter()
            .all(|id| find(&m, id).and_then(|m| m.connections) == Some(1))
            .then_some(())
    })
    .await;

    let drain = Duration::from_millis(500);
    let started = Instant::now();
    lb.detach(&ids, drain).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= drain && took < drain * 2,
        "three drains of {drain:?} took {took:?}: not concurrent, or not waited for"
    );
    assert!(lb.members().await.unwrap().is_empty());
    // HAProxy closed the sessions the deadline found.
    for mut conn in idle {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf))
            .await
            .expect("the session was closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    h.stop().await.unwrap();
}
