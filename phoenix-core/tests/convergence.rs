//! Convergence gaps the simulation found when its draws changed (seeds
//! 73, 852, 595 and 811 of the 1,000 at the time): each left the
//! deployment short of "the live release serves at its size" although no
//! invariant broke. One test each, on the simulated world's ground truth.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{custom_plan, live, r, server_of, world, world_with};
use phoenix_core::events::Outcome;
use phoenix_core::plan::Step;
use phoenix_core::ports::LoadBalancer;
use phoenix_core::sim::SimConfig;

/// A pool one server over its size (a halted refresh left it) with one
/// sick server: the heal replaces the sick one and trims the extra one in
/// the same operation, instead of leaving the pool over its size.
#[tokio::test(start_paused = true)]
async fn a_heal_trims_the_surplus_its_own_replacement_makes() {
    let w = world(SimConfig::default(), 3).await;
    w.cloud.strict();
    w.deploy("v1").await;
    let v1 = live(&w).await;
    // A refresh halted after its first replacement served: one server
    // more than the pool's size.
    let mut policy = w.phoenix.policy().clone();
    policy.rollout.batch_size = 1;
    policy.refresh.max_age = Duration::ZERO;
    let refresh = w
        .phoenix
        .plan_refresh_with(&w.shop, &w.web, &policy)
        .await
        .unwrap();
    let cut = refresh
        .steps
        .iter()
        .position(|s| matches!(s, Step::Detach { .. }))
        .unwrap();
    w.apply(custom_plan(&w, refresh.steps[..cut].to_vec()).await)
        .await;
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 4)].into_iter().collect()
    );
    let sick = server_of(&w, &v1, 1).await.server.unwrap();
    w.cloud.kill(&sick);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let plan = w.phoenix.plan_heal(&w.shop, &w.web).await.unwrap();
    assert!(
        plan.summary.contains("replace 1 sick") && plan.summary.contains("remove 1 surplus"),
        "{plan}"
    );
    w.apply(plan).await;
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 3)].into_iter().collect()
    );
    w.assert_no_violations();
}

/// A standby server whose host failed after an earlier operation launched
/// it: a rollback under a zero replacement budget replaces it once, free of
/// the budget (this step did not launch it), instead of failing forever.
#[tokio::test(start_paused = true)]
async fn a_server_an_earlier_operation_left_broken_is_replaced_free_of_budget() {
    let w = world_with(SimConfig::default(), 3, |mut p| {
        p.provision.replace_budget = 0;
        p.retention.hot = 1;
        p
    })
    .await;
    w.cloud.strict();
    w.deploy("v1").await;
    let v1 = live(&w).await;
    w.deploy("v2").await;
    let broken = server_of(&w, &v1, 0).await.server.unwrap();
    w.cloud.fail_host(&broken);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let plan = w
        .phoenix
        .plan_rollback(&w.shop, &w.web, None)
        .await
        .unwrap();
    let report = w.apply(plan).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 3)].into_iter().collect()
    );
    let slot = server_of(&w, &v1, 0).await;
    assert_ne!(
        slot.server.as_ref(),
        Some(&broken),
        "slot 0 has a new server"
    );
    assert_eq!(slot.attempt, 1);
    w.assert_no_violations();
}

/// The balancer lost every member of the live pool (a hand drained them on
/// a balancer that lets drained members go): deploying the live release
/// attaches them again instead of reporting "already live".
#[tokio::test(start_paused = true)]
async fn deploying_the_live_release_reattaches_what_the_balancer_lost() {
    let w = world(
        SimConfig {
            reactivates_draining: false,
            ..SimConfig::default()
        },
        2,
    )
    .await;
    w.cloud.strict();
    w.deploy("v1").await;
    let members: Vec<_> = w.cloud.members().into_iter().map(|m| m.server).collect();
    w.cloud
        .balancer()
        .detach(&members, Duration::from_secs(5))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(w.cloud.members().is_empty());
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v1"))
        .await
        .unwrap();
    assert!(!plan.is_noop(), "not already live:\n{plan}");
    w.apply(plan).await;
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 2)].into_iter().collect()
    );
    w.assert_no_violations();
}
