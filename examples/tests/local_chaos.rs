//! A chaos drill on the local stack under live traffic: ten live servers
//! killed with SIGKILL one after the other (seeded), each detected by the
//! embedded balancer's checks and replaced by heal, with no failed
//! request. It prints the time to detect and to restore of every kill.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use examples::local::{BalancerChoice, LocalStack};
use phoenix::chaos::LocalChaos;
use phoenix_core::chaos::ChaosDrill;
use phoenix_core::policy::Capacity;
use phoenix_core::ports::LoadBalancer;
use support::{assert_no_orphans, load, options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_kills_under_load_are_each_healed_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let stack = LocalStack::open(options(
        dir.path(),
        BalancerChoice::Embedded {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: None,
        },
    ))
    .await
    .unwrap();
    stack.release("v1").await.unwrap();
    let (d, role) = (stack.deployment.clone(), stack.role.clone());
    let plan = stack
        .phoenix
        .plan_deploy(&d, &role, &"v1".parse().unwrap())
        .await
        .unwrap();
    stack.phoenix.apply(plan).await.unwrap();
    let gen = load(stack.listen_addr().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Three servers, a floor of two: one victim at a time.
    let drill = ChaosDrill::kills(2026, 10)
        .min_healthy(Capacity::Absolute(2))
        .interval(Duration::from_millis(300))
        .deadlines(Duration::from_secs(10), Duration::from_secs(60));
    let report = stack
        .phoenix
        .chaos_drill(&d, &role, &drill, &LocalChaos::new(&stack))
        .await
        .unwrap_or_else(|h| panic!("{h}: {:?}\n{}", h.error, h.report));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let traffic = gen.stop_and_finish().await.unwrap();
    println!("{report}");
    println!("traffic: {traffic}");
    println!(
        "figures: kills={} sent={} failed={} max_detect_ms={} max_restore_ms={}",
        report.failures.len(),
        traffic.sent,
        traffic.failed,
        report.max_detect().unwrap_or_default().as_millis(),
        report.max_restore().unwrap_or_default().as_millis()
    );

    assert_eq!(report.failures.len(), 10, "{report}");
    let victims: std::collections::BTreeSet<_> =
        report.failures.iter().map(|f| &f.victims[0]).collect();
    assert_eq!(victims.len(), 10, "each kill takes a different server");
    assert!(report.failures.iter().all(|f| !f.heals.is_empty()));
    assert!(traffic.sent > 1000, "{traffic}");
    assert_eq!(
        traffic.failed, 0,
        "no request failed: {traffic}: {:?}",
        traffic.failure_samples
    );
    let members = stack.balancer.members().await.unwrap();
    assert_eq!(members.iter().filter(|m| m.is_serving_healthy()).count(), 3);
    assert!(members
        .iter()
        .all(|m| report.failures.iter().all(|f| f.victims[0] != m.server)));
    assert_no_orphans(&stack).await;
    stack.teardown().await.unwrap();
}
