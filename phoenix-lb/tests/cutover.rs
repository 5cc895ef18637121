//! Zero failed requests across blue-green switches and rollbacks under
//! steady load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{wait_healthy, Backend, Spec};
use phoenix_core::id::ServerId;
use phoenix_core::ports::{LoadBalancer, Target};
use phoenix_lb::embedded::EmbeddedBalancer;
use phoenix_lb::loadgen::{LoadGen, LoadGenConfig};
use tokio::time::Instant;

const SWITCHES: usize = 100;
/// Long enough that no connection is ever closed by a drain timeout: the
/// load generator's kept-alive connections live 300 ms at most.
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

/// Control time of one balancer call.
async fn timed<F: std::future::Future<Output = Result<(), phoenix_core::ports::PortError>>>(
    times: &mut Vec<Duration>,
    call: F,
) {
    let start = Instant::now();
    call.await.unwrap();
    times.push(start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_and_rollbacks_under_load_lose_no_request() {
    let blue = pool("blue").await;
    let green = pool("green").await;
    let lb = EmbeddedBalancer::builder()
        .check_interval(Duration::from_millis(20))
        .check_timeout(Duration::from_millis(500))
        .rise(2)
        .fall(3)
        .connect_timeout(Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    let settle = Duration::from_secs(5);
    lb.attach(&blue.targets).await.unwrap();
    wait_healthy(&lb, &blue.ids, settle).await;

    let load = LoadGen::start(LoadGenConfig {
        rate: 200,
        duration: Duration::from_secs(60),
        concurrency: 8,
        fresh_ratio: 0.3,
        keepalive_max_requests: 5,
        keepalive_max_age: Duration::from_millis(300),
        request_timeout: Duration::from_secs(2),
        ..LoadGenConfig::new(lb.local_addr())
    })
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut control = Vec::new();
    let started = Instant::now();
    for i in 0..SWITCHES {
        // Blue-green switch: attach green, wait until healthy, drain blue.
        timed(&mut control, lb.attach(&green.targets)).await;
        wait_healthy(&lb, &green.ids, settle).await;
        timed(&mut control, lb.detach(&blue.ids, DRAIN)).await;
        tokio::time::sleep(DWELL).await;
        // Rollback to blue: alternately one atomic swap (blue may be
        // unchecked yet: it serves as `Unknown`), and attach + wait +
        // detach.
        if i % 2 == 0 {
            timed(&mut control, lb.swap(&blue.targets, &green.ids, DRAIN)).await;
        } else {
            timed(&mut control, lb.attach(&blue.targets)).await;
            wait_healthy(&lb, &blue.ids, settle).await;
            timed(&mut control, lb.detach(&green.ids, DRAIN)).await;
        }
        tokio::time::sleep(DWELL).await;
    }
    let cycles = started.elapsed();
    let report = load.stop_and_finish().await.unwrap();
    let stats = lb.stats();
    control.sort();
    eprintln!(
        "{SWITCHES} switches + {SWITCHES} rollbacks in {cycles:.2?}; control time median {:?}, max {:?}",
        control[control.len() / 2],
        control[control.len() - 1]
    );
    eprintln!("{report}");
    eprintln!(
        "balancer: accepted {}, unserved {}, forced closes {}",
        stats.accepted, stats.unserved, stats.forced_closes
    );

    assert!(
        report.sent >= 500,
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
    assert_eq!(stats.unserved, 0);
    assert_eq!(stats.forced_closes, 0, "drains ended by themselves");
    lb.shutdown().await;
}
