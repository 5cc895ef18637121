//! A backend killed abruptly (its listener closed and every open
//! connection reset, as a SIGKILLed server's would be) under load through
//! a real haproxy.
//!
//! `retries 3` and `option redispatch 1` in the generated configuration
//! make HAProxy retry a failed connect on another server; in `mode http`,
//! `retry-on conn-failure empty-response response-timeout` also replays a
//! request whose server connection died before any answer. So in HTTP mode
//! no client notices anything, not even a closed connection; in TCP mode a
//! connection that was inside the dead server is lost, and its `GET` is
//! repeated by the client (counted as a retry) — as with the embedded
//! balancer.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(all(feature = "haproxy", feature = "embedded"))]

mod common;
mod haproxy_common;

use std::time::Duration;

use common::{eventually, find, wait_healthy, Backend, Spec};
use haproxy_common::haproxy;
use phoenix_core::ports::{LoadBalancer, MemberHealth};
use phoenix_lb::haproxy::{member_name, Mode, ServerCheck};
use phoenix_lb::loadgen::{LoadGen, LoadGenConfig};
use tokio::time::Instant;

const INTERVAL: Duration = Duration::from_millis(100);
const FALL: u32 = 3;

async fn kill_under_load(mode: Mode) {
    let mut victim = Backend::start("kill-victim", Spec::release("v1")).await;
    let survivors = [
        Backend::start("kill-b", Spec::release("v1")).await,
        Backend::start("kill-c", Spec::release("v1")).await,
    ];
    let h = haproxy(mode).await;
    let lb = h
        .balancer()
        .check(Some(ServerCheck::new(INTERVAL, 1, FALL)))
        .build()
        .unwrap();
    let mut targets = vec![victim.target()];
    targets.extend(survivors.iter().map(Backend::target));
    lb.attach(&targets).await.unwrap();
    let ids: Vec<_> = targets.iter().map(|t| t.server.clone()).collect();
    wait_healthy(&lb, &ids, Duration::from_secs(5)).await;

    let steady = LoadGen::start(LoadGenConfig {
        rate: 200,
        duration: Duration::from_secs(15),
        fresh_ratio: 0.3,
        keepalive_max_requests: 1000,
        keepalive_max_age: Duration::from_secs(15),
        request_timeout: Duration::from_secs(2),
        ..LoadGenConfig::new(h.frontend_addr())
    })
    .unwrap();
    eventually("the victim serves", Duration::from_secs(5), || async {
        (victim.hits() >= 20 && steady.progress().ok >= 100).then_some(())
    })
    .await;
    let open_in_victim = find(&lb.members().await.unwrap(), &victim.id)
        .and_then(|m| m.connections)
        .unwrap_or(0);

    victim.kill().await;
    let killed = Instant::now();
    // New connections only, and no client retries: any failure counts.
    let fresh = LoadGen::start(LoadGenConfig {
        rate: 200,
        duration: Duration::from_secs(10),
        fresh_ratio: 1.0,
        retry_before_response: false,
        request_timeout: Duration::from_secs(2),
        ..LoadGenConfig::new(h.frontend_addr())
    })
    .unwrap();
    eventually(
        "HAProxy marks the victim down",
        Duration::from_secs(5),
        || async {
            let members = lb.members().await.ok()?;
            (find(&members, &victim.id)?.health == MemberHealth::Unhealthy).then_some(())
        },
    )
    .await;
    let to_unhealthy = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dead = lb
        .api()
        .server_stats(lb.backend())
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == member_name(&victim.id))
        .unwrap();
    let fresh = fresh.stop_and_finish().await.unwrap();
    let steady = steady.stop_and_finish().await.unwrap();
    eprintln!(
        "{mode:?} mode: down {to_unhealthy:?} after the kill; {open_in_victim} session(s) were open in it"
    );
    eprintln!("dead member in HAProxy: {dead:?}");
    eprintln!("fresh connections, no client retry: {fresh}");
    eprintln!("steady mixed load: {steady}");

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
        dead.redispatches > 0,
        "connections were sent to the dead member and moved to another: {dead:?}"
    );
    match mode {
        Mode::Http => assert_eq!(
            steady.retried(),
            0,
            "HAProxy replays what the dead server held; clients see nothing"
        ),
        _ => assert!(
            steady.retried() <= open_in_victim + 2,
            "only requests that were inside the dead backend are repeated"
        ),
    }
    // The first failing check comes within one interval, the `FALL`th
    // marks it down; allow one more interval and scheduling on 2 cores.
    let bound = INTERVAL * (FALL + 1) + Duration::from_millis(400);
    assert!(
        to_unhealthy <= bound,
        "took {to_unhealthy:?}, more than {bound:?}"
    );
    let members = lb.members().await.unwrap();
    for s in &survivors {
        assert!(find(&members, &s.id).unwrap().is_serving_healthy());
    }
    lb.detach(&ids, Duration::from_secs(1)).await.unwrap();
    h.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy: run the full test script"]
async fn a_killed_backend_costs_no_request_in_http_mode() {
    kill_under_load(Mode::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy: run the full test script"]
async fn a_killed_backend_costs_no_request_in_tcp_mode() {
    kill_under_load(Mode::Tcp).await;
}
