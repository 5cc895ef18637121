//! Zero failed requests across blue-green switches and rollbacks through a
//! real haproxy under steady load.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(all(feature = "haproxy", feature = "embedded"))]

mod common;
mod haproxy_common;

use std::time::Duration;

use common::{Backend, Spec};
use haproxy_common::{haproxy, median_max, wait_healthy};
use phoenix_core::id::ServerId;
use phoenix_core::ports::{LoadBalancer, PortError, Target};
use phoenix_lb::haproxy::{HaproxyBalancer, Mode, ServerCheck};
use phoenix_lb::loadgen::{LoadGen, LoadGenConfig, LoadReport};
use tokio::time::Instant;

/// Longer than any client connection lives (300 ms), so no drain ends by
/// force.
const DRAIN: Duration = Duration::from_secs(3);
/// Time each pool serves alone before the next cutover.
const DWELL: Duration = Duration::from_millis(15);

struct Pool {
    targets: Vec<Target>,
    ids: Vec<ServerId>,
    _backends: Vec<Backend>,
}

async fn pool(release: &str) -> Pool {
    let mut backends = Vec::new();
    for i in 0..2 {
        backends.push(Backend::start(&format!("{release}-{i}"), Spec::release(release)).await);
    }
    Pool {
        targets: backends.iter().map(Backend::target).collect(),
        ids: backends.iter().map(|b| b.id.clone()).collect(),
        _backends: backends,
    }
}

async fn timed<F: std::future::Future<Output = Result<(), PortError>>>(
    times: &mut Vec<Duration>,
    call: F,
) {
    let start = Instant::now();
    call.await.unwrap();
    times.push(start.elapsed());
}

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

    let load = LoadGen::start(LoadGenConfig {
        rate: 200,
        duration: Duration::from_secs(120),
        concurrency: 8,
        fresh_ratio: 0.3,
        keepalive_max_requests: 5,
        keepalive_max_age: Duration::from_millis(300),
        request_timeout: Duration::from_secs(2),
        ..LoadGenConfig::new(h.frontend_addr())
    })
    .unwrap();
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

fn assert_lossless(report: &LoadReport, min_sent: u64) {
    assert!(
        report.sent >= min_sent,
        "too little load to mean anything: {report}"
    );
    assert_eq!(
        report.failed, 0,
        "failed requests: {:?}",
        report.failure_samples
    );
    assert_eq!(report.ok, report.sent);
    assert_eq!(
        report.retried(),
        0,
        "no connection should close under a request during a cutover"
    );
    assert!(
        report.served_by("blue") > 0 && report.served_by("green") > 0,
        "{report}"
    );
    assert_eq!(report.unlabelled, 0);
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
