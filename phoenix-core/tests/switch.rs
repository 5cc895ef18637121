//! The atomic cutover (`cutover: switch` on a balancer that stages, as
//! ELBv2's weighted listener over two target groups): the new pool is
//! staged, found healthy by the balancer and baked there while taking no
//! traffic, then one call moves all traffic. Each test checks the
//! simulated world's ground truth under strict refereeing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{custom_plan, live, r, server_of, world_with, World};
use phoenix_core::events::{EventKind, Invariant, Outcome};
use phoenix_core::plan::{PlanError, Step};
use phoenix_core::policy::{Capacity, Cutover, Policy};
use phoenix_core::ports::{LoadBalancer, MemberState};
use phoenix_core::sim::{Faults, SimConfig};

fn staging() -> SimConfig {
    SimConfig {
        stages: true,
        ..SimConfig::default()
    }
}

fn switch_policy(mut p: Policy) -> Policy {
    p.rollout.cutover = Cutover::Switch;
    p.rollout.batch_size = 2;
    p.rollout.min_healthy = Capacity::Percent(100);
    p
}

async fn switching_world(size: usize) -> World {
    let w = world_with(staging(), size, switch_policy).await;
    w.cloud.strict();
    w
}

fn position(plan: &phoenix_core::plan::Plan, f: impl Fn(&Step) -> bool) -> Option<usize> {
    plan.steps.iter().position(f)
}

/// A deploy over a serving pool stages, bakes staged, switches in one
/// step (more servers than the batch, which the policy consents to), and
/// leaves the old pool drained as the standby.
#[tokio::test(start_paused = true)]
async fn a_deploy_stages_bakes_then_switches_all_traffic_in_one_step() {
    let w = switching_world(4).await;
    // Nothing serves yet: the first deploy attaches in batches.
    let first = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v1"))
        .await
        .unwrap();
    assert!(
        position(&first, |s| matches!(s, Step::Switch { .. })).is_none(),
        "nothing to switch away from:\n{first}"
    );
    w.apply(first).await;
    let v1 = live(&w).await;

    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    let stage = position(&plan, |s| matches!(s, Step::Stage { .. })).expect("a stage step");
    let bake = position(&plan, |s| matches!(s, Step::Bake { .. })).expect("a bake step");
    let switch = position(&plan, |s| matches!(s, Step::Switch { .. })).expect("a switch step");
    assert!(
        stage < bake && bake < switch,
        "stage, bake, switch:\n{plan}"
    );
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::Attach { .. } | Step::Detach { .. })),
        "no batched attach or detach:\n{plan}"
    );
    assert_eq!(plan.steps[switch].changes(), 8);
    plan.validate().expect("the policy consents to the switch");
    let mut batched = plan.clone();
    batched.policy.rollout.cutover = Cutover::Batched;
    assert!(
        matches!(
            batched.validate(),
            Err(PlanError::BlastRadius { changes: 8, .. })
        ),
        "without consent the switch is past the blast radius"
    );
    println!("{plan}");

    let mut rx = w.phoenix.subscribe();
    let report = w.apply(plan).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    let events = common::drain(&mut rx);
    // Every member moved inside the one switch step.
    let mut step = String::new();
    let mut moved_in = Vec::new();
    for e in &events {
        match &e.kind {
            EventKind::StepStarted { step: s, .. } => step = s.clone(),
            EventKind::ServerAttached { .. } | EventKind::ServerDetached { .. } => {
                moved_in.push(step.clone())
            }
            _ => {}
        }
    }
    assert_eq!(moved_in.len(), 8, "4 in, 4 out: {moved_in:?}");
    assert!(
        moved_in.iter().all(|s| s.starts_with("switch all traffic")),
        "{moved_in:?}"
    );
    assert_eq!(
        w.serving().await,
        [("v2".to_owned(), 4)].into_iter().collect()
    );
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    assert!(snap.pool(&v1).unwrap().state.is_rollback_candidate());
    assert_eq!(
        w.running_by_release().get("v1"),
        Some(&4),
        "v1 is the standby"
    );
    w.assert_no_violations();

    // A rollback switches back the same way.
    let back = w
        .phoenix
        .plan_rollback(&w.shop, &w.web, None)
        .await
        .unwrap();
    assert!(position(&back, |s| matches!(s, Step::Switch { .. })).is_some());
    w.apply(back).await;
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 4)].into_iter().collect()
    );
    w.assert_no_violations();
}

/// The switch guard: a staged member that fails the balancer's checks
/// after its bake (it died while a drain hook ran, say) stops the switch
/// on a fresh read; the old pool keeps all the traffic.
#[tokio::test(start_paused = true)]
async fn the_switch_refuses_a_staged_member_the_balancer_finds_unhealthy() {
    let w = switching_world(3).await;
    w.deploy("v1").await;
    let v1 = live(&w).await;
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    let switch = position(&plan, |s| matches!(s, Step::Switch { .. })).unwrap();
    let Step::Switch { pool: v2, .. } = &plan.steps[switch] else {
        unreachable!()
    };
    let v2 = v2.clone();
    // Up to the switch: staged and baked.
    let before = custom_plan(&w, plan.steps[..switch].to_vec()).await;
    w.apply(before).await;
    let staged = w.cloud.members();
    assert!(
        staged
            .iter()
            .filter(|m| m.state == MemberState::Disabled)
            .count()
            == 3,
        "v2 is staged, taking no traffic: {staged:?}"
    );
    let victim = server_of(&w, &v2, 1).await.server.unwrap();
    w.cloud.kill(&victim);
    tokio::time::sleep(Duration::from_secs(30)).await;

    let rest = custom_plan(&w, plan.steps[switch..].to_vec()).await;
    let mut rx = w.phoenix.subscribe();
    let err = w.phoenix.apply(rest).await.unwrap_err();
    assert!(
        err.to_string().contains("not staged, healthy"),
        "refused by the switch guard: {err}"
    );
    let refused = common::count(&common::drain(&mut rx), |k| {
        matches!(
            k,
            EventKind::GuardRefused {
                invariant: Invariant::CapacityFloor,
                ..
            }
        )
    }) > 0;
    assert!(refused);
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 3)].into_iter().collect(),
        "v1 keeps every member"
    );
    assert_eq!(live(&w).await, v1);
    w.assert_no_violations();
}

/// An atomic switch whose answer is lost every time (it applied, the
/// caller cannot know): the retries find it done or apply it again, and
/// when the step gives up, the rollback restores the old pool at full
/// capacity before the new one leaves.
#[tokio::test(start_paused = true)]
async fn a_switch_whose_answers_are_lost_rolls_back_to_the_old_pool_whole() {
    let w = switching_world(3).await;
    w.deploy("v1").await;
    w.cloud.set_faults(Faults {
        swap_answer_lost: 1.0,
        ..Faults::none()
    });
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    let err = w.phoenix.apply(plan).await.unwrap_err();
    let report = err.report().expect("a report");
    assert_eq!(report.outcome, Outcome::RolledBack, "{err}");
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 3)].into_iter().collect()
    );
    w.assert_no_violations();
    w.cloud.set_faults(Faults::none());
    w.deploy("v2").await;
    assert_eq!(
        w.serving().await,
        [("v2".to_owned(), 3)].into_iter().collect()
    );
    w.assert_no_violations();
}

/// `cutover: switch` on a balancer that cannot stage plans the batched
/// cutover: nothing would check the new pool before it took the traffic.
#[tokio::test(start_paused = true)]
async fn a_balancer_that_cannot_stage_gets_the_batched_cutover() {
    let w = world_with(SimConfig::default(), 3, switch_policy).await;
    assert!(!w.cloud.balancer().capabilities().stages);
    w.deploy("v1").await;
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    assert!(position(&plan, |s| matches!(s, Step::Switch { .. })).is_none());
    assert!(position(&plan, |s| matches!(s, Step::Attach { .. })).is_some());
    w.apply(plan).await;
    w.assert_no_violations();
}

/// An emergency rollback right after a switch, while the old pool still
/// drains on a balancer that drains to the end (ELBv2): the deploy is
/// pre-empted and the old pool takes all the traffic back, whole.
#[tokio::test(start_paused = true)]
async fn an_emergency_rollback_right_after_a_switch_restores_the_draining_pool() {
    let policy = |p| {
        let mut p = switch_policy(p);
        p.rollout.drain = Duration::from_secs(120);
        p
    };
    let w = world_with(
        SimConfig {
            stages: true,
            reactivates_draining: false,
            drain_time: Duration::from_secs(120),
            ..SimConfig::default()
        },
        3,
        policy,
    )
    .await;
    w.cloud.strict();
    w.deploy("v1").await;
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    let incident = w
        .cloud
        .phoenix_as("incident")
        .policy(policy(w.cloud.policy()))
        .build()
        .unwrap();
    let (deployed, rolled_back) = tokio::join!(w.phoenix.apply(plan), async {
        // Once the switch happened: v1 drains.
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let m = w.cloud.members();
            if m.iter()
                .filter(|m| m.state == MemberState::Draining)
                .count()
                == 3
            {
                break;
            }
        }
        incident
            .emergency_rollback(&w.shop, &w.web, Some(&r("v1")))
            .await
    });
    assert!(deployed.is_err(), "the deploy is pre-empted");
    let report = rolled_back.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 3)].into_iter().collect()
    );
    w.assert_no_violations();
}
