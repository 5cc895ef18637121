//! HAProxy's per-server counters (`show stat`: `hrsp_5xx`, `rtime`, …) as
//! a canary gate reads them, and canary weights (`set server … weight N%`),
//! against a real haproxy.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(all(feature = "haproxy", feature = "embedded"))]

mod common;
mod haproxy_common;

use std::time::Duration;

use common::{get, wait_healthy, Backend, Spec};
use haproxy_common::haproxy;
use phoenix_core::ports::LoadBalancer;
use phoenix_lb::haproxy::{HaproxyBalancer, Mode, ServerCheck};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy: run the full test script"]
async fn haproxy_counts_answers_5xx_and_response_time_per_server() {
    let a = Backend::start("a", Spec::release("v1")).await;
    let b = Backend::start("b", Spec::release("v2")).await;
    let h = haproxy(Mode::Http).await;
    let lb: HaproxyBalancer = h
        .balancer()
        .check(Some(ServerCheck::new(Duration::from_millis(20), 1, 3)))
        .build()
        .unwrap();
    lb.attach(&[a.target()]).await.unwrap();
    wait_healthy(&lb, std::slice::from_ref(&a.id), Duration::from_secs(5)).await;
    let before = lb.traffic_stats(std::slice::from_ref(&a.id)).await.unwrap();
    for i in 0..10 {
        let path = if i % 5 == 0 { "/fail" } else { "/" };
        let (status, _) = get(h.frontend_addr(), path).await.unwrap();
        assert_eq!(status, if path == "/fail" { 500 } else { 200 });
    }
    let seen = lb
        .traffic_stats(std::slice::from_ref(&a.id))
        .await
        .unwrap()
        .since(&before);
    assert_eq!(seen.requests, 10, "{seen}");
    assert_eq!(seen.errors, 2, "{seen}");
    assert!(seen.mean_latency.is_some(), "rtime is read: {seen}");
    // Not a member: nothing counted.
    let none = lb.traffic_stats(std::slice::from_ref(&b.id)).await.unwrap();
    assert_eq!((none.requests, none.errors), (0, 0));

    // Weights: a canary at 10% of a normal member, then restored; HAProxy
    // refuses a server it does not hold.
    LoadBalancer::set_weight(&lb, std::slice::from_ref(&a.id), 10)
        .await
        .unwrap();
    LoadBalancer::set_weight(&lb, std::slice::from_ref(&a.id), 100)
        .await
        .unwrap();
    assert!(
        LoadBalancer::set_weight(&lb, std::slice::from_ref(&b.id), 10)
            .await
            .is_err()
    );
    lb.detach(std::slice::from_ref(&a.id), Duration::from_millis(100))
        .await
        .unwrap();
    h.stop().await.unwrap();
}
