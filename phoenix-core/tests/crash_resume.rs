//! The orchestrator killed at every journaled commit of a blue-green
//! switch and of a rolling replacement (with the commit landing or not),
//! then a new orchestrator resumes from the journal: it converges with no
//! duplicate pool, no orphan and no violation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{r, world_with, World};
use phoenix_core::executor::ExecError;
use phoenix_core::plan::Plan;
use phoenix_core::sim::{CrashPoint, SimConfig};
use phoenix_core::Phoenix;

enum Op {
    Deploy,
    Rolling,
}

async fn setup() -> World {
    let w = world_with(SimConfig::default(), 4, |mut p| {
        p.rollout.batch_size = 2;
        p.rollout.max_surge = 2;
        p
    })
    .await;
    w.deploy("v1").await;
    w
}

async fn plan(w: &World, op: &Op) -> Plan {
    match op {
        Op::Deploy => w
            .phoenix
            .plan_deploy(&w.shop, &w.web, &r("v2"))
            .await
            .unwrap(),
        Op::Rolling => w
            .phoenix
            .plan_rolling_replace(&w.shop, &w.web, &r("v2"))
            .await
            .unwrap(),
    }
}

/// Reruns the same command with a new orchestrator: resume whatever the
/// journal holds (waiting out the dead one's lease), then plan the same
/// intent again; it is empty when the resumed operation achieved it.
async fn rerun(w: &World, op: &Op) -> Phoenix {
    let next = w.cloud.phoenix().holder("successor").build().unwrap();
    let mut resumed = false;
    for _ in 0..20 {
        match next.resume(&w.shop).await {
            Ok(_) => {
                resumed = true;
                break;
            }
            Err(ExecError::Busy { .. }) => tokio::time::sleep(Duration::from_secs(15)).await,
            Err(e) => panic!("resume failed: {e}"),
        }
    }
    assert!(resumed, "the dead orchestrator's lease never lapsed");
    let again = match op {
        Op::Deploy => next.plan_deploy(&w.shop, &w.web, &r("v2")).await.unwrap(),
        Op::Rolling => next
            .plan_rolling_replace(&w.shop, &w.web, &r("v2"))
            .await
            .unwrap(),
    };
    if !again.is_noop() {
        next.apply(again).await.unwrap();
    }
    next
}

async fn check(w: &World, label: &str) {
    assert_eq!(
        w.serving().await,
        [("v2".to_owned(), 4)].into_iter().collect(),
        "{label}: every serving member runs v2"
    );
    w.assert_no_violations();
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    assert!(
        snap.record.value.active_operation.is_none(),
        "{label}: finished"
    );
    let v2_pools = snap
        .pools_of(&w.web)
        .filter(|p| p.release == r("v2"))
        .count();
    assert_eq!(v2_pools, 1, "{label}: no duplicate pool");
    let (report, _) = w
        .phoenix
        .plan_reconcile(&w.shop, &w.web, Default::default())
        .await
        .unwrap();
    assert!(report.is_clean(), "{label}: {report}");
    let tokens: std::collections::BTreeSet<_> = w
        .cloud
        .servers()
        .iter()
        .map(|s| s.labels.token().unwrap())
        .collect();
    assert_eq!(
        tokens.len(),
        w.cloud.servers().len(),
        "{label}: no duplicate server"
    );
}

async fn crash_everywhere(op: Op) -> usize {
    // How many commits a clean run makes.
    let w = setup().await;
    let before = w.cloud.store().commits();
    w.apply(plan(&w, &op).await).await;
    let commits = w.cloud.store().commits() - before;
    assert!(commits > 10);
    let mut runs = 0;
    for commit in 1..=commits {
        for after_write in [false, true] {
            let w = setup().await;
            let p = plan(&w, &op).await;
            w.cloud.store().arm(CrashPoint::at(commit, after_write));
            let crashed = w.cloud.store().crashed();
            let outcome = tokio::select! {
                biased;
                _ = crashed.notified() => None,
                r = w.phoenix.apply(p) => Some(r),
            };
            let label = format!("crash at commit {commit}/{commits} (written: {after_write})");
            assert!(outcome.is_none(), "{label}: the crash happened");
            let _ = rerun(&w, &op).await;
            check(&w, &label).await;
            runs += 1;
        }
    }
    runs
}

#[tokio::test(start_paused = true)]
async fn blue_green_switch_survives_a_crash_at_every_commit() {
    let runs = crash_everywhere(Op::Deploy).await;
    println!("{runs} crash points resumed and converged");
}

#[tokio::test(start_paused = true)]
async fn rolling_replace_survives_a_crash_at_every_commit() {
    let runs = crash_everywhere(Op::Rolling).await;
    println!("{runs} crash points resumed and converged");
}
