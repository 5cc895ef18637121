//! A backend killed abruptly under load.
//!
//! What "zero failed client requests" can truthfully mean here:
//!
//! - **New connections** never fail: the balancer connects to a member
//!   before relaying anything, so a refused connect to the dead member is
//!   retried on another one, and a `GET` the dying member took and dropped
//!   unanswered is sent to another one (`redispatch.rs`). Checked with a second load generator that
//!   opens a fresh connection per request and has client retries turned
//!   off.
//! - **Requests inside the dead backend** when it died (in flight, or on a
//!   kept-alive connection to it) lose their connection before any
//!   response byte. No proxy can finish those; an HTTP client repeats such
//!   an idempotent `GET` on a new connection (stale keep-alive handling,
//!   RFC 9110 §9.2.2), and so does the load generator: it counts those
//!   retries separately, and the requests themselves do not fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{find, wait_healthy, Backend, Spec};
use phoenix_core::ports::{LoadBalancer, MemberHealth};
use phoenix_lb::embedded::EmbeddedBalancer;
use phoenix_lb::loadgen::{LoadGen, LoadGenConfig};
use tokio::time::Instant;

const INTERVAL: Duration = Duration::from_millis(100);
const FALL: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_costs_no_request() {
    let mut victim = Backend::start("kill-victim", Spec::release("v1")).await;
    let survivors = [
        Backend::start("kill-b", Spec::release("v1")).await,
        Backend::start("kill-c", Spec::release("v1")).await,
    ];
    let lb = EmbeddedBalancer::builder()
        .check_interval(INTERVAL)
        .check_timeout(Duration::from_millis(200))
        .rise(1)
        .fall(FALL)
        .connect_timeout(Duration::from_millis(500))
        .connect_attempts(3)
        .start()
        .await
        .unwrap();
    let mut targets = vec![victim.target()];
    targets.extend(survivors.iter().map(Backend::target));
    lb.attach(&targets).await.unwrap();
    let ids: Vec<_> = targets.iter().map(|t| t.server.clone()).collect();
    wait_healthy(&lb, &ids, Duration::from_secs(5)).await;

    // Steady mixed load, kept-alive connections long-lived enough to be
    // inside the victim when it dies.
    let steady = LoadGen::start(LoadGenConfig {
        rate: 200,
        duration: Duration::from_secs(15),
        fresh_ratio: 0.3,
        keepalive_max_requests: 1000,
        keepalive_max_age: Duration::from_secs(15),
        request_timeout: Duration::from_secs(2),
        ..LoadGenConfig::new(lb.local_addr())
    })
    .unwrap();
    common::eventually("the victim serves", Duration::from_secs(5), || async {
        (victim.hits() >= 20 && steady.progress().ok >= 100).then_some(())
    })
    .await;
    let open_in_victim = lb
        .stats()
        .member(&victim.id)
        .map_or(0, |m| m.connections_active);

    victim.kill().await;
    let killed = Instant::now();
    // New connections only, and no client retries: any failure counts.
    let fresh = LoadGen::start(LoadGenConfig {
        rate: 200,
        duration: Duration::from_secs(10),
        fresh_ratio: 1.0,
        retry_before_response: false,
        request_timeout: Duration::from_secs(2),
        ..LoadGenConfig::new(lb.local_addr())
    })
    .unwrap();

    common::eventually(
        "the victim is unhealthy",
        Duration::from_secs(5),
        || async {
            let members = lb.members().await.ok()?;
            (find(&members, &victim.id)?.health == MemberHealth::Unhealthy).then_some(())
        },
    )
    .await;
    let to_unhealthy = killed.elapsed();
    // Keep going a little with the member marked down.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = fresh.stop_and_finish().await.unwrap();
    let steady = steady.stop_and_finish().await.unwrap();
    let stats = lb.stats();
    let dead = stats.member(&victim.id).unwrap().clone();
    eprintln!(
        "unhealthy {to_unhealthy:?} after the kill; {open_in_victim} connection(s) were open in it"
    );
    eprintln!("fresh connections, no client retry: {fresh}");
    eprintln!("steady mixed load: {steady}");
    eprintln!("dead member: {dead:?}");
    eprintln!(
        "balancer: accepted {}, unserved {}",
        stats.accepted, stats.unserved
    );

    assert!(fresh.sent >= 20, "{fresh}");
    assert_eq!(
        fresh.failed, 0,
        "new connections failed: {:?}",
        fresh.failure_samples
    );
    assert_eq!(
        steady.failed, 0,
        "requests failed: {:?}",
        steady.failure_samples
    );
    assert!(
        dead.connect_failures > 0,
        "new connections were routed to the dead member and retried"
    );
    assert_eq!(
        stats.unserved, 0,
        "every client connection reached a live member"
    );
    // Health: the first check after the kill fails at the next tick, the
    // `FALL`th one marks it down; allow one interval and some scheduling.
    let bound = INTERVAL * FALL + INTERVAL + Duration::from_millis(300);
    assert!(
        to_unhealthy <= bound,
        "took {to_unhealthy:?}, more than {bound:?}"
    );
    assert!(
        steady.retried() <= open_in_victim + 2,
        "only requests that were inside the dead backend are retried"
    );
    for s in &survivors {
        assert_eq!(stats.member(&s.id).unwrap().health, MemberHealth::Healthy);
    }
    lb.shutdown().await;
}
