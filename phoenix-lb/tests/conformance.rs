//! The `LoadBalancer` contract, against the embedded balancer and real
//! HTTP backends on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{quick_lb, Backend, HeldOpen, Spec};
use phoenix_core::conformance::load_balancer::{run_all, LbExtras, LbFixture};
use phoenix_core::ports::LoadBalancer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_balancer_conforms() {
    let a = Backend::start("conf-a", Spec::release("v1")).await;
    let b = Backend::start("conf-b", Spec::release("v1")).await;
    let c = Backend::start("conf-c", Spec::release("v1")).await;
    let bad = Backend::start("conf-bad", Spec::release("v1").health(500)).await;
    let lb = Arc::new(quick_lb(Duration::from_millis(50)).start().await.unwrap());

    let caps = lb.capabilities();
    assert!(caps.atomic_swap && caps.drain && caps.reports_connections);

    let fixture = LbFixture {
        healthy: vec![a.target(), b.target(), c.target()],
        unhealthy: Some(bad.target()),
        settle: Duration::from_secs(5),
        drain: Duration::from_millis(300),
        poll: Duration::from_millis(10),
    };
    let held = HeldOpen::new(lb.clone());
    let extras = LbExtras {
        out_of_band: Some(&held),
        ..LbExtras::default()
    };
    tokio::time::timeout(
        Duration::from_secs(30),
        run_all(lb.as_ref(), &fixture, &extras),
    )
    .await
    .expect("the suite finishes in time");
    lb.shutdown().await;
}
