//! The embedded balancer's traffic counters, as a canary gate reads them:
//! HTTP responses per member, 5xx apart, and the mean response time.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "embedded")]

mod common;

use std::time::Duration;

use common::{get, quick_lb, wait_healthy, Backend, Spec};
use phoenix_core::ports::LoadBalancer;

#[tokio::test]
async fn the_balancer_counts_answers_and_5xx_per_member() {
    let a = Backend::start("a", Spec::release("v1")).await;
    let b = Backend::start("b", Spec::release("v2")).await;
    let lb = quick_lb(Duration::from_millis(20)).start().await.unwrap();
    lb.attach(&[a.target()]).await.unwrap();
    wait_healthy(&lb, std::slice::from_ref(&a.id), Duration::from_secs(5)).await;
    let before = lb.traffic_stats(std::slice::from_ref(&a.id)).await.unwrap();
    for i in 0..10 {
        let path = if i % 5 == 0 { "/fail" } else { "/" };
        let (status, _) = get(lb.local_addr(), path).await.unwrap();
        assert_eq!(status, if path == "/fail" { 500 } else { 200 });
    }
    let seen = lb
        .traffic_stats(std::slice::from_ref(&a.id))
        .await
        .unwrap()
        .since(&before);
    assert_eq!(seen.requests, 10, "{seen}");
    assert_eq!(seen.errors, 2, "{seen}");
    assert!(seen.mean_latency.is_some(), "{seen}");
    // A server that is not a member counted nothing.
    let none = lb.traffic_stats(std::slice::from_ref(&b.id)).await.unwrap();
    assert_eq!((none.requests, none.errors), (0, 0));
    lb.shutdown().await;
}
