//! The `LoadBalancer` contract against a real haproxy, through its runtime
//! API, with real HTTP backends on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(all(feature = "haproxy", feature = "embedded"))]

mod common;
mod haproxy_common;

use std::time::Duration;

use common::{get, wait_healthy, Backend, Spec};
use haproxy_common::haproxy;
use phoenix_core::conformance::load_balancer::{run, LbFixture};
use phoenix_core::ports::LoadBalancer;
use phoenix_lb::haproxy::{ConnectionMode, HaproxyBalancer, LocalHaproxy, Mode, ServerCheck};

struct Backends {
    a: Backend,
    b: Backend,
    c: Backend,
    bad: Backend,
}

async fn backends(prefix: &str) -> Backends {
    Backends {
        a: Backend::start(&format!("{prefix}-a"), Spec::release("v1")).await,
        b: Backend::start(&format!("{prefix}-b"), Spec::release("v1")).await,
        c: Backend::start(&format!("{prefix}-c"), Spec::release("v1")).await,
        bad: Backend::start(&format!("{prefix}-bad"), Spec::release("v1").health(500)).await,
    }
}

fn fixture(b: &Backends) -> LbFixture {
    LbFixture {
        healthy: vec![b.a.target(), b.b.target(), b.c.target()],
        unhealthy: Some(b.bad.target()),
        settle: Duration::from_secs(5),
        drain: Duration::from_millis(300),
        poll: Duration::from_millis(10),
    }
}

async fn conforms(lb: &HaproxyBalancer, b: &Backends) {
    let caps = lb.capabilities();
    assert!(!caps.atomic_swap, "HAProxy has no multi-server transaction");
    assert!(caps.drain && caps.reports_connections);
    tokio::time::timeout(Duration::from_secs(30), run(lb, &fixture(b)))
        .await
        .expect("the suite finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy: run the full test script"]
async fn haproxy_conforms_over_its_unix_socket_in_http_mode() {
    let b = backends("conf").await;
    let h = haproxy(Mode::Http).await;
    let lb = h
        .balancer()
        .check(Some(ServerCheck::new(Duration::from_millis(50), 1, 2)))
        .build()
        .unwrap();
    conforms(&lb, &b).await;

    // Traffic goes where the members say.
    lb.attach(&[b.c.target()]).await.unwrap();
    wait_healthy(&lb, std::slice::from_ref(&b.c.id), Duration::from_secs(5)).await;
    let before = b.c.hits();
    for _ in 0..5 {
        let (status, release) = get(h.frontend_addr(), "/").await.unwrap();
        assert_eq!((status, release.as_deref()), (200, Some("v1")));
    }
    assert_eq!(b.c.hits(), before + 5);
    lb.detach(std::slice::from_ref(&b.c.id), Duration::from_millis(300))
        .await
        .unwrap();
    assert!(lb.members().await.unwrap().is_empty());
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy: run the full test script"]
async fn haproxy_conforms_over_tcp_one_connection_per_command_in_tcp_mode() {
    let b = backends("conf-tcp").await;
    let h = haproxy_common::start(LocalHaproxy::builder().mode(Mode::Tcp).admin_tcp(true)).await;
    let lb = HaproxyBalancer::builder()
        .runtime_api(h.admin_tcp().unwrap())
        .backend(h.backend())
        .connection_mode(ConnectionMode::PerCommand)
        .check(Some(ServerCheck::new(Duration::from_millis(50), 1, 2)))
        .build()
        .unwrap();
    conforms(&lb, &b).await;
    h.stop().await.unwrap();
}
