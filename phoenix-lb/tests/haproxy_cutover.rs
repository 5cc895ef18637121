//! Zero failed requests across blue-green switches and rollbacks through a
//! real haproxy under steady load.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(all(feature = "haproxy", feature = "embedded"))]

mod common;
mod haproxy_common;

use std::time::Duration;

use common::{assert_lossless, cutover_load, median_max, pool, timed, wait_healthy};
use haproxy_common::haproxy;
use phoenix_core::ports::LoadBalancer;
use phoenix_lb::haproxy::{HaproxyBalancer, Mode, ServerCheck};
use phoenix_lb::loadgen::{LoadGen, LoadReport};
use tokio::time::Instant;

/// Longer than any client connection lives (300 ms), so no drain ends by
/// force.
const DRAIN: Duration = Duration::from_secs(3);
/// Time each pool serves alone before the next cutover.
const DWELL: Duration = Duration::from_millis(15);

/// `switches` blue→green switches, each followed by a rollback to blue,
/// under steady mixed load: attach the other pool, wait until HAProxy's
/// checks pass, detach (drain) the serving one.
async fn switch_under_load(mode: Mode, switches: usize) -> LoadReport {
    let blue = pool("blue").await;
    let green = pool("green").await;
    let h = haproxy(mode).await;
    let lb: HaproxyBalancer = h
        .balancer()
        .check(Some(ServerCheck::new(Duration::from_millis(20), 1, 3)))
        .build()
        .unwrap();
    let settle = Duration::from_secs(5);
    lb.attach(&blue.targets).await.unwrap();
    wait_healthy(&lb, &blue.ids, settle).await;

    let load = LoadGen::start(cutover_load(h.frontend_addr(), Duration::from_secs(120))).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (mut attach, mut detach) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..switches {
        for (to, from) in [(&green, &blue), (&blue, &green)] {
            timed(&mut attach, lb.attach(&to.targets)).await;
            wait_healthy(&lb, &to.ids, settle).await;
            timed(&mut detach, lb.detach(&from.ids, DRAIN)).await;
            tokio::time::sleep(DWELL).await;
        }
    }
    let cycles = started.elapsed();
    let report = load.stop_and_finish().await.unwrap();
    let (am, ax) = median_max(attach);
    let (dm, dx) = median_max(detach);
    eprintln!(
        "{mode:?} mode: {switches} switches + {switches} rollbacks in {cycles:.2?}; \
         attach median {am:?} max {ax:?}; detach (with drain) median {dm:?} max {dx:?}"
    );
    eprintln!("{report}");

    let members = lb.members().await.unwrap();
    assert_eq!(members.len(), 2, "only blue is left: {members:?}");
    assert!(members.iter().all(|m| blue.ids.contains(&m.server)));
    lb.detach(&blue.ids, DRAIN).await.unwrap();
    h.stop().await.unwrap();
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy: run the full test script"]
async fn hundred_switches_and_rollbacks_through_haproxy_lose_no_request() {
    let report = switch_under_load(Mode::Http, 100).await;
    assert_lossless(&report, 1000);
}

/// In TCP mode a client connection stays on its server until it closes, so
/// every detach really waits for sessions to drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy: run the full test script"]
async fn switches_in_tcp_mode_wait_for_client_connections_and_lose_no_request() {
    let report = switch_under_load(Mode::Tcp, 10).await;
    assert_lossless(&report, 300);
}
