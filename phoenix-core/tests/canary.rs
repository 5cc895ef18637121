//! The canary stage on the simulated cloud, under the paused clock: a
//! share of the new pool serves next to the live pool for the analysis
//! window; the gate reads the balancer's counters (the simulated balancer
//! measures per-release error rates and latencies) and the user's check.
//! A failing gate takes the canary out and leaves the live pool serving,
//! untouched; a passing one lets the switch or rollout go on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{live, r, world_with, World};
use phoenix_core::canary::{
    CanaryCheck, CanaryCheckOutcome, CanaryContext, CanaryPolicy, CanaryShare,
};
use phoenix_core::events::{EventKind, Outcome};
use phoenix_core::executor::{ExecError, FailureCause, OperationReport, PortFailure};
use phoenix_core::model::PoolState;
use phoenix_core::plan::{Plan, Step};
use phoenix_core::policy::Policy;
use phoenix_core::sim::{ReleaseTraffic, SimConfig};

const WINDOW: Duration = Duration::from_secs(60);

fn canary_policy(mut p: Policy) -> Policy {
    p.rollout.batch_size = 2;
    p.rollout.max_surge = 2;
    p.canary = Some(CanaryPolicy {
        share: CanaryShare::Count(1),
        window: WINDOW,
        max_error_rate: 0.01,
        max_p99_latency: Some(Duration::from_millis(500)),
        min_requests: 100,
        ..CanaryPolicy::default()
    });
    p
}

/// A cloud whose release `bad` fails `error_rate` of its requests.
fn config(bad: &str, error_rate: f64) -> SimConfig {
    let mut c = SimConfig::default();
    c.traffic.releases.insert(
        r(bad),
        ReleaseTraffic {
            error_rate,
            ..ReleaseTraffic::default()
        },
    );
    c
}

async fn v1_live(config: SimConfig) -> World {
    let w = world_with(config, 4, canary_policy).await;
    w.cloud.strict();
    let first = w.deploy("v1").await;
    assert_eq!(first.outcome, Outcome::Succeeded);
    w
}

async fn plan_v2(w: &World, rolling: bool) -> Plan {
    if rolling {
        w.phoenix
            .plan_rolling_replace(&w.shop, &w.web, &r("v2"))
            .await
            .unwrap()
    } else {
        w.phoenix
            .plan_deploy(&w.shop, &w.web, &r("v2"))
            .await
            .unwrap()
    }
}

fn canary_step(plan: &Plan) -> Option<usize> {
    plan.steps
        .iter()
        .position(|s| matches!(s, Step::Canary { .. }))
}

/// Applies a plan expected to fail; returns its report.
async fn apply_failing(w: &World, plan: Plan) -> OperationReport {
    match w.phoenix.apply(plan).await {
        Ok(report) => panic!("the operation succeeded: {report:?}"),
        Err(ExecError::Failed { report, .. }) => *report,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// What a bad release does to the fleet with the gate in the plan, or
/// with it taken out (`gate: false`): the release the fleet serves after.
async fn bad_release_outcome(
    gate: bool,
) -> (
    World,
    Result<OperationReport, ExecError>,
    Vec<phoenix_core::events::Event>,
) {
    let w = v1_live(config("v2", 0.2)).await;
    let mut plan = plan_v2(&w, false).await;
    assert!(canary_step(&plan).is_some(), "a canary step:\n{plan}");
    if !gate {
        plan.steps.retain(|s| !matches!(s, Step::Canary { .. }));
    }
    let mut rx = w.phoenix.subscribe();
    let result = w.phoenix.apply(plan).await;
    (w, result, common::drain(&mut rx))
}

#[tokio::test(start_paused = true)]
async fn plans_put_the_canary_before_the_new_pool_takes_traffic() {
    let w = v1_live(SimConfig::default()).await;
    for rolling in [false, true] {
        let plan = plan_v2(&w, rolling).await;
        let at = canary_step(&plan).unwrap_or_else(|| panic!("a canary step:\n{plan}"));
        let Step::Canary {
            slots,
            baseline,
            window,
            ..
        } = &plan.steps[at]
        else {
            unreachable!()
        };
        assert_eq!(slots.len(), 1, "one canary server:\n{plan}");
        assert_eq!(baseline.len(), 4, "compared with the 4 live members");
        assert_eq!(*window, WINDOW);
        assert!(
            matches!(&plan.steps[at - 2], Step::Attach { slots: s, .. } if s == slots)
                && matches!(&plan.steps[at - 1], Step::AwaitHealthy { .. }),
            "attach the canary, wait healthy, then the gate:\n{plan}"
        );
        let first_traffic = plan
            .steps
            .iter()
            .position(|s| {
                matches!(
                    s,
                    Step::Attach { .. } | Step::Stage { .. } | Step::Detach { .. }
                )
            })
            .unwrap();
        assert_eq!(first_traffic, at - 2, "nothing moves before the canary");
        let text = plan.to_string();
        assert!(text.contains("canary: 1 server(s) for 1m"), "{text}");
        plan.validate().unwrap();
    }
    // No canary without a live pool to compare with, nor without the
    // policy section.
    let fresh = world_with(SimConfig::default(), 2, canary_policy).await;
    let first = fresh
        .phoenix
        .plan_deploy(&fresh.shop, &fresh.web, &r("v1"))
        .await
        .unwrap();
    assert!(canary_step(&first).is_none(), "{first}");
    let plain = world_with(SimConfig::default(), 2, |p| p).await;
    plain.deploy("v1").await;
    let second = plain
        .phoenix
        .plan_deploy(&plain.shop, &plain.web, &r("v2"))
        .await
        .unwrap();
    assert!(canary_step(&second).is_none(), "{second}");
}

#[tokio::test(start_paused = true)]
async fn a_healthy_canary_passes_and_the_switch_and_rollout_go_on() {
    for rolling in [false, true] {
        let w = v1_live(SimConfig::default()).await;
        let plan = plan_v2(&w, rolling).await;
        let started = tokio::time::Instant::now();
        let report = w.apply(plan).await;
        assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
        assert!(started.elapsed() >= WINDOW, "the window was waited out");
        assert_eq!(
            w.serving().await,
            [("v2".to_owned(), 4)].into_iter().collect()
        );
        w.assert_no_violations();
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_canary_leaves_and_the_live_pool_keeps_serving_untouched() {
    let (w, result, events) = bad_release_outcome(true).await;
    let report = match result {
        Err(ExecError::Failed { report, .. }) => *report,
        other => panic!("the canary must fail: {other:?}"),
    };
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:?}");
    let Some(FailureCause::Canary {
        canary,
        baseline,
        reason,
        ..
    }) = &report.cause
    else {
        panic!("a canary cause: {:?}", report.cause)
    };
    assert!(reason.contains("error rate"), "{reason}");
    // One member at 10 requests/s for 60 s, 20% failing; the live pool's
    // four members failed nothing in the same window.
    assert_eq!(canary.requests, 600, "{canary}");
    assert_eq!(canary.errors, 120, "{canary}");
    assert_eq!(baseline.requests, 2400, "{baseline}");
    assert_eq!(baseline.errors, 0, "{baseline}");
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 4)].into_iter().collect(),
        "v1 keeps serving, v2 left"
    );
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let v1 = live(&w).await;
    assert_eq!(snap.pool(&v1).unwrap().release, r("v1"));
    let v2 = snap
        .pools_of(&w.web)
        .find(|p| p.release == r("v2"))
        .unwrap();
    assert_eq!(v2.state, PoolState::Failed);
    // The live pool was never touched: none of its members left.
    let detached = |of: &phoenix_core::id::PoolId| {
        common::count(
            &events,
            |k| matches!(k, EventKind::ServerDetached { pool, .. } if pool == of),
        )
    };
    assert_eq!(detached(&v2.id), 1, "the canary left");
    assert_eq!(detached(&v1), 0, "no live member left");
    w.assert_no_violations();
}

/// The gate is what stops the bad release: the same scenario with the
/// gate step taken out of the plan ends with the bad release serving
/// everything, which the test above refuses.
#[tokio::test(start_paused = true)]
async fn without_the_gate_the_bad_release_takes_the_fleet() {
    let (w, result, _) = bad_release_outcome(false).await;
    let report = result.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(
        w.serving().await,
        [("v2".to_owned(), 4)].into_iter().collect(),
        "without the gate v2 serves everything"
    );
}

struct Verdict(bool);

#[async_trait]
impl CanaryCheck for Verdict {
    async fn check(&self, canary: &CanaryContext) -> CanaryCheckOutcome {
        assert_eq!(canary.servers.len(), 1);
        assert_eq!(canary.release, r("v2"));
        if self.0 {
            CanaryCheckOutcome::pass("checkout works")
        } else {
            CanaryCheckOutcome::fail(format!(
                "checkout broken after {} requests",
                canary.canary.requests
            ))
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_users_check_can_fail_a_canary_the_balancer_passes() {
    for pass in [true, false] {
        let cloud = phoenix_core::sim::SimCloud::new(SimConfig::default());
        let phoenix = cloud
            .phoenix()
            .policy(canary_policy(cloud.policy()))
            .canary_check(Arc::new(Verdict(pass)))
            .build()
            .unwrap();
        let (shop, web) = cloud.demo_deployment(&phoenix, 4).await.unwrap();
        let w = World {
            cloud,
            phoenix,
            shop,
            web,
        };
        w.deploy("v1").await;
        let plan = plan_v2(&w, true).await;
        if pass {
            assert_eq!(w.apply(plan).await.outcome, Outcome::Succeeded);
            continue;
        }
        let report = apply_failing(&w, plan).await;
        let Some(FailureCause::Canary { reason, .. }) = &report.cause else {
            panic!("{:?}", report.cause)
        };
        assert!(reason.contains("checkout broken after 600"), "{reason}");
        assert_eq!(
            w.serving().await,
            [("v1".to_owned(), 4)].into_iter().collect()
        );
    }
}

/// A balancer that keeps no counters gives the gate no evidence: it fails
/// closed, and the canary still leaves.
#[tokio::test(start_paused = true)]
async fn no_counters_fail_the_gate_closed() {
    let mut c = SimConfig::default();
    c.traffic.reports = false;
    let w = v1_live(c).await;
    let report = apply_failing(&w, plan_v2(&w, false).await).await;
    assert!(
        matches!(
            &report.cause,
            Some(FailureCause::Port {
                kind: PortFailure::Unsupported,
                ..
            })
        ),
        "{:?}",
        report.cause
    );
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 4)].into_iter().collect()
    );
}

/// The orchestrator dies half-way through the analysis window; a new one
/// resumes from the journal, runs the window again from a fresh read, and
/// the gate decides as it would have: the bad canary leaves, v1 serves.
#[tokio::test(start_paused = true)]
async fn a_crash_during_the_window_resumes_and_the_gate_still_decides() {
    let w = v1_live(config("v2", 0.2)).await;
    let plan = plan_v2(&w, false).await;
    let at = canary_step(&plan).unwrap();
    let first = w.cloud.phoenix_as("first").build().unwrap();
    let mut events = first.subscribe();
    let run = tokio::spawn(async move { first.apply(plan).await });
    loop {
        let e = events.recv().await.unwrap();
        if matches!(e.kind, EventKind::StepStarted { index, rollback: false, .. } if index == at) {
            break;
        }
    }
    tokio::time::sleep(WINDOW / 2).await;
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled(), "killed mid-window");
    // The canary serves still; the live pool too.
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 4), ("v2".to_owned(), 1)]
            .into_iter()
            .collect()
    );
    let next = w.cloud.phoenix_as("successor").build().unwrap();
    let report = loop {
        match next.resume(&w.shop).await {
            Ok(Some(report)) => panic!("the canary passed: {report:?}"),
            Ok(None) => panic!("nothing to resume"),
            Err(ExecError::Busy { .. }) => tokio::time::sleep(Duration::from_secs(15)).await,
            Err(ExecError::Failed { report, .. }) => break *report,
            Err(e) => panic!("resume failed: {e}"),
        }
    };
    assert!(report.resumed);
    let Some(FailureCause::Canary { canary, .. }) = &report.cause else {
        panic!("{:?}", report.cause)
    };
    assert_eq!(canary.requests, 600, "a full window read afresh: {canary}");
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 4)].into_iter().collect()
    );
    w.assert_no_violations();
}

/// With an atomic cutover on a balancer that stages, the canary serves
/// before the new pool is staged; a good canary is switched with the rest
/// of the pool in the one switch call, a bad one leaves and v1 stays.
#[tokio::test(start_paused = true)]
async fn the_canary_comes_before_an_atomic_switch() {
    for bad in [false, true] {
        let mut c = if bad {
            config("v2", 0.5)
        } else {
            SimConfig::default()
        };
        c.stages = true;
        c.keeps_standby = true;
        let w = world_with(c, 4, |p| {
            let mut p = canary_policy(p);
            p.rollout.cutover = phoenix_core::policy::Cutover::Switch;
            p
        })
        .await;
        w.cloud.strict();
        w.deploy("v1").await;
        let plan = plan_v2(&w, false).await;
        let at = canary_step(&plan).unwrap_or_else(|| panic!("{plan}"));
        let switch = plan
            .steps
            .iter()
            .position(|s| matches!(s, Step::Switch { .. }))
            .unwrap_or_else(|| panic!("{plan}"));
        assert!(at < switch, "{plan}");
        let expected = if bad { "v1" } else { "v2" };
        if bad {
            let report = apply_failing(&w, plan).await;
            assert!(matches!(report.cause, Some(FailureCause::Canary { .. })));
        } else {
            assert_eq!(w.apply(plan).await.outcome, Outcome::Succeeded);
        }
        assert_eq!(
            w.serving().await,
            [(expected.to_owned(), 4)].into_iter().collect(),
            "bad: {bad}"
        );
        w.assert_no_violations();
    }
}
