//! Zero failed requests across blue-green switches and rollbacks under
//! steady load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{assert_lossless, cutover_load, median_max, pool, timed, wait_healthy};
use phoenix_core::ports::LoadBalancer;
use phoenix_lb::embedded::EmbeddedBalancer;
use phoenix_lb::loadgen::LoadGen;
use tokio::time::Instant;

const SWITCHES: usize = 100;
/// Long enough that no connection is ever closed by a drain timeout: the
/// load generator's kept-alive connections live 300 ms at most.
const DRAIN: Duration = Duration::from_secs(3);
/// Time each pool serves alone before the next cutover.
const DWELL: Duration = Duration::from_millis(15);

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

    let load = LoadGen::start(cutover_load(lb.local_addr(), Duration::from_secs(60))).unwrap();
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
    let (median, max) = median_max(control);
    eprintln!(
        "{SWITCHES} switches + {SWITCHES} rollbacks in {cycles:.2?}; control time median {median:?}, max {max:?}"
    );
    eprintln!("{report}");
    eprintln!(
        "balancer: accepted {}, unserved {}, forced closes {}",
        stats.accepted, stats.unserved, stats.forced_closes
    );

    assert_lossless(&report, 500);
    assert_eq!(stats.unserved, 0);
    assert_eq!(stats.forced_closes, 0, "drains ended by themselves");
    lb.shutdown().await;
}
