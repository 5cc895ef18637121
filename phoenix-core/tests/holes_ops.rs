//! The holes the safety review found in operations as a whole (issue 11:
//! holes 11, 16 and the smaller ones of 17), one test each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{custom_plan, live, r, world_with};
use phoenix_core::events::{Event, EventKind, Outcome};
use phoenix_core::executor::ExecError;
use phoenix_core::model::{ImageState, PoolState, TestEvidence};
use phoenix_core::ops::{PlanningError, ReconcileOptions};
use phoenix_core::phoenix::CatalogError;
use phoenix_core::plan::{OperationKind, Step};
use phoenix_core::ports::{MemberState, StateStore};
use phoenix_core::sim::{CrashOn, CrashPoint, SimConfig};

async fn history(w: &common::World) -> Vec<Event> {
    w.cloud
        .store()
        .inner()
        .events("deployments/shop", 0, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::from_slice(&e.payload).unwrap())
        .collect()
}

/// A world whose refresh budget allows one replacement per hour, where v2
/// serves past its maximum age and v1 is the hot standby to roll back to.
async fn throttled() -> common::World {
    let w = world_with(SimConfig::default(), 3, |mut p| {
        p.refresh.max_age = Duration::from_secs(3600);
        p.refresh.max_replacements = 1;
        p.refresh.window = Duration::from_secs(3600);
        p.rollout.batch_size = 1;
        p.rollout.max_surge = 1;
        p
    })
    .await;
    w.deploy("v1").await;
    w.deploy("v2").await;
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    w
}

/// Hole 11: an emergency rollback issued while a refresh waits on its
/// replacement budget (up to an hour) pre-empts it at its next safe point
/// and moves traffic within seconds. Prints the simulated timeline.
#[tokio::test(start_paused = true)]
async fn hole_11_an_emergency_rollback_preempts_a_throttled_refresh() {
    let w = throttled().await;
    w.cloud.strict();
    let refresh = w.phoenix.plan_refresh(&w.shop, &w.web).await.unwrap();
    let incident = w.cloud.phoenix_as("incident").build().unwrap();
    let (refreshed, rolled_back) = tokio::join!(w.phoenix.apply(refresh), async {
        // Once the refresh waits on its budget for its second batch.
        tokio::time::sleep(Duration::from_secs(15 * 60)).await;
        incident.emergency_rollback(&w.shop, &w.web, None).await
    });
    match refreshed {
        Err(ExecError::Preempted { report }) => assert_eq!(report.outcome, Outcome::Preempted),
        other => panic!("the refresh is pre-empted, got {other:?}"),
    }
    let report = rolled_back.unwrap();
    assert_eq!(report.kind, OperationKind::Rollback);
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 3)].into_iter().collect()
    );

    // The timeline, from the store's history.
    let events = history(&w).await;
    let start = events
        .iter()
        .find(|e| {
            matches!(
                e.kind,
                EventKind::OperationStarted {
                    kind: OperationKind::Refresh,
                    ..
                }
            )
        })
        .unwrap()
        .at;
    let mut asked = None;
    let mut moved = None;
    println!("\n  time      operation      event");
    for e in events.iter().filter(|e| e.at >= start) {
        let t = phoenix_core::time::elapsed_between(start, e.at);
        let what = match &e.kind {
            EventKind::OperationStarted { kind, summary, .. } => {
                format!("{kind} started: {summary}")
            }
            EventKind::OperationFinished { outcome, .. } => format!("finished: {outcome:?}"),
            EventKind::RateLimited { wait_ms } => {
                format!(
                    "waits {} on the replacement budget",
                    phoenix_core::time::human(Duration::from_millis(*wait_ms))
                )
            }
            EventKind::PreemptionRequested { by, .. } => {
                asked.get_or_insert(e.at);
                format!("{by} asks to pre-empt")
            }
            EventKind::ServerAttached { pool, server, .. } => {
                if asked.is_some() {
                    moved.get_or_insert(e.at);
                }
                format!("{server} of {pool} attached")
            }
            EventKind::ServerDetached { pool, server, .. } => {
                format!("{server} of {pool} detached")
            }
            EventKind::ServingVerified { release, members } => {
                format!("{members} members serve {release}")
            }
            _ => continue,
        };
        let op = e.operation.as_ref().map_or("-".to_owned(), |o| {
            o.as_str()[o.as_str().len() - 8..].to_owned()
        });
        println!("  {:>8}  {op:<13}  {what}", phoenix_core::time::human(t));
    }
    let took = phoenix_core::time::elapsed_between(asked.unwrap(), moved.unwrap());
    println!(
        "  traffic moved {} after the emergency was asked for\n",
        phoenix_core::time::human(took)
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    w.assert_no_violations();
}

/// Hole 11: a budget charge is keyed by operation and step, so a refresh
/// resumed after a crash right after its charge does not charge twice.
#[tokio::test(start_paused = true)]
async fn hole_11_budget_charges_are_idempotent_across_crashes() {
    let w = throttled().await;
    let plan = w.phoenix.plan_refresh(&w.shop, &w.web).await.unwrap();
    w.cloud.store().arm(CrashPoint {
        commit: 1,
        after_write: true,
        on: CrashOn::After("step_started"),
    });
    let crashed = w.cloud.store().crashed();
    tokio::select! {
        biased;
        _ = crashed.notified() => {}
        r = w.phoenix.apply(plan) => panic!("finished without crashing: {r:?}"),
    }
    w.cloud.store().disarm();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    assert_eq!(
        snap.record.value.budget.len(),
        1,
        "charged once before the crash"
    );
    let next = w.cloud.phoenix_as("successor").build().unwrap();
    let resumed = tokio::time::timeout(Duration::from_secs(600), next.resume(&w.shop)).await;
    // Within ten minutes the first batch went on (its charge was not made
    // again, which the budget of one per hour would have delayed by an hour).
    drop(resumed);
    let events = history(&w).await;
    let charged_again = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::RateLimited { .. }))
        .count();
    let added = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::StepStarted { step, .. } if step.starts_with("add slots")))
        .count();
    assert!(added >= 1, "the first replacement went ahead");
    assert!(
        charged_again <= 1,
        "only the second batch waits: {charged_again}"
    );
}

/// Hole 11: a plan made with a looser budget cannot bypass the
/// orchestrator's own.
#[tokio::test(start_paused = true)]
async fn hole_11_a_plan_cannot_loosen_the_replacement_budget() {
    let w = throttled().await;
    let mut loose = w.phoenix.policy().clone();
    loose.refresh.max_replacements = 100;
    let plan = w
        .phoenix
        .plan_refresh_with(&w.shop, &w.web, &loose)
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30 * 60), w.phoenix.apply(plan)).await;
    assert!(
        result.is_err(),
        "the second replacement waits for the hour's budget"
    );
    let events = history(&w).await;
    assert!(events
        .iter()
        .any(|e| matches!(e.kind, EventKind::RateLimited { .. })));
}

/// Hole 16: an image whose provider metadata claims it is certified, with
/// no test evidence on record, is not launchable in production; evidence
/// about another digest proves nothing either.
#[tokio::test(start_paused = true)]
async fn hole_16_a_provider_claim_certifies_nothing() {
    let w = world_with(SimConfig::default(), 2, |p| p).await;
    let claimed = w.cloud.claimed_certified_image("web", "v9");
    let mut images = BTreeMap::new();
    images.insert(w.web.clone(), claimed.id.clone());
    match w.phoenix.create_release(&w.shop, r("v9"), images).await {
        Err(CatalogError::NotLaunchable { reason, .. }) => {
            assert!(reason.contains("certified"), "{reason}")
        }
        other => panic!("a claim alone certifies nothing, got {other:?}"),
    }
    // Evidence recorded for other content does not count either.
    let mut other = w.cloud.claimed_certified_image("web", "v10");
    other.state = ImageState::Certified;
    other.evidence.push(TestEvidence {
        suite: "smoke".into(),
        at: w.cloud.now(),
        passed: true,
        details: "ran against a rebuilt image".into(),
        digest: Some("another-digest".into()),
        log: None,
    });
    w.phoenix.register_image(&other).await.unwrap();
    let deployment = w
        .phoenix
        .snapshot(&w.shop)
        .await
        .unwrap()
        .deployment()
        .clone();
    match w
        .phoenix
        .check_launchable(&deployment, &other.id, w.phoenix.policy())
        .await
    {
        Err(PlanningError::ImageNotLaunchable { reason, .. }) => {
            assert!(reason.contains("digest"), "{reason}")
        }
        other => panic!("evidence for another digest proves nothing, got {other:?}"),
    }
}

/// Hole 17: a pool provisioned for a coming deploy (ready, never live) is
/// not the first to go when reaping; rollback pools are.
#[tokio::test(start_paused = true)]
async fn hole_17_reap_keeps_a_freshly_provisioned_pool() {
    let w = world_with(SimConfig::default(), 2, |mut p| {
        p.retention.keep = 1;
        p
    })
    .await;
    w.deploy("v1").await;
    w.deploy("v2").await;
    let plan = w
        .phoenix
        .plan_provision(&w.shop, &w.web, &r("v3"), None)
        .await
        .unwrap();
    w.apply(plan).await;
    let plan = w.phoenix.plan_reap(&w.shop, &w.web).await.unwrap();
    w.apply(plan).await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let states: BTreeMap<String, PoolState> = snap
        .pools_of(&w.web)
        .map(|p| (p.release.to_string(), p.state))
        .collect();
    assert_eq!(states.get("v3"), Some(&PoolState::Ready), "{states:?}");
    assert_eq!(
        states.get("v1"),
        Some(&PoolState::HOT),
        "the rollback pool is kept: {states:?}"
    );
}

/// Hole 17: missing servers are described in chunks the provider accepts.
#[tokio::test(start_paused = true)]
async fn hole_17_missing_servers_are_described_in_chunks() {
    let w = world_with(
        SimConfig {
            max_describe_batch: 2,
            ..SimConfig::default()
        },
        5,
        |p| p,
    )
    .await;
    w.deploy("v1").await;
    let v1 = live(&w).await;
    let plan = custom_plan(
        &w,
        vec![Step::MarkMissing {
            pool: v1,
            slots: vec![0, 1, 2, 3, 4],
        }],
    )
    .await;
    w.apply(plan).await;
}

/// Found by the simulation once servers could vanish (spot reclaim, an
/// operator's delete): reconcile recorded them missing but left their
/// members behind the balancer, pointing at addresses no one answers on —
/// or, once reused, someone else does. They leave the balancer first.
#[tokio::test(start_paused = true)]
async fn a_server_that_vanished_leaves_the_balancer_when_recorded_missing() {
    let w = world_with(SimConfig::default(), 3, |p| p).await;
    w.deploy("v1").await;
    let v1 = live(&w).await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let gone = snap
        .pool(&v1)
        .unwrap()
        .slot(1)
        .unwrap()
        .server
        .clone()
        .unwrap();
    w.cloud.reclaim(&gone);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(
        w.cloud.members().iter().any(|m| m.server == gone),
        "the balancer keeps it"
    );
    let (report, plan) = w
        .phoenix
        .plan_reconcile(
            &w.shop,
            &w.web,
            ReconcileOptions {
                record_missing: true,
                ..ReconcileOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(report.missing.len(), 1, "{report:?}");
    w.apply(plan).await;
    assert!(
        !w.cloud
            .members()
            .iter()
            .any(|m| m.server == gone && m.state == MemberState::Active),
        "a vanished server's member takes no more traffic: {:?}",
        w.cloud.members()
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(
        !w.cloud.members().iter().any(|m| m.server == gone),
        "and leaves: {:?}",
        w.cloud.members()
    );
}

/// Hole 17: plan_reconcile takes a policy like every other planner; its
/// batch size shapes the repairs.
#[tokio::test(start_paused = true)]
async fn hole_17_plan_reconcile_uses_its_policy() {
    let w = world_with(SimConfig::default(), 4, |p| p).await;
    w.deploy("v1").await;
    let v1 = live(&w).await;
    // The balancer lost every member.
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let servers: Vec<_> = snap
        .pool(&v1)
        .unwrap()
        .in_service()
        .filter_map(|s| s.server.clone())
        .collect();
    let lb = w.cloud.balancer();
    phoenix_core::ports::LoadBalancer::detach(lb.as_ref(), &servers, Duration::ZERO)
        .await
        .unwrap();
    let mut small = w.phoenix.policy().clone();
    small.rollout.batch_size = 1;
    let (_, plan) = w
        .phoenix
        .plan_reconcile_with(
            &w.shop,
            &w.web,
            ReconcileOptions {
                restore_members: true,
                ..ReconcileOptions::default()
            },
            &small,
        )
        .await
        .unwrap();
    let attaches = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Attach { .. }))
        .count();
    assert_eq!(attaches, 4, "one attach per server with batch 1: {plan}");
    w.apply(plan).await;
}

/// Hole 17: the deployment header does not grow with every operation and
/// every pool: history is in the event log.
#[tokio::test(start_paused = true)]
async fn hole_17_the_deployment_header_does_not_grow() {
    let w = world_with(SimConfig::default(), 1, |mut p| {
        p.retention.keep = 1;
        p
    })
    .await;
    for i in 0..20 {
        w.deploy(["v1", "v2", "v3"][i % 3]).await;
        let plan = w.phoenix.plan_reap(&w.shop, &w.web).await.unwrap();
        w.apply(plan).await;
    }
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let header = &snap.record.value;
    assert!(header.operations.len() <= 32, "{}", header.operations.len());
    assert!(header.pools.len() <= 3, "{:?}", header.pools);
    assert!(snap.pools.len() <= 3, "deleted pools' records are gone");
    let finished = history(&w)
        .await
        .iter()
        .filter(|e| matches!(e.kind, EventKind::OperationFinished { .. }))
        .count();
    assert!(
        finished >= 40,
        "the history keeps every operation: {finished}"
    );
}

/// Seed 44377 of 100,000: two servers of a pool vanished while still
/// behind the balancer; reconcile planned one detach of both, past a
/// blast radius of one, and the whole plan was rejected: nothing was
/// repaired. The detach goes in batches, as every other change does.
#[tokio::test(start_paused = true)]
async fn vanished_servers_leave_the_balancer_in_batches() {
    let w = world_with(SimConfig::default(), 3, |mut p| {
        p.rollout.batch_size = 1;
        p
    })
    .await;
    w.deploy("v1").await;
    let v1 = live(&w).await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let gone: Vec<_> = [0, 2]
        .iter()
        .map(|i| {
            snap.pool(&v1)
                .unwrap()
                .slot(*i)
                .unwrap()
                .server
                .clone()
                .unwrap()
        })
        .collect();
    for g in &gone {
        w.cloud.reclaim(g);
    }
    tokio::time::sleep(Duration::from_secs(600)).await;
    let (report, plan) = w
        .phoenix
        .plan_reconcile(
            &w.shop,
            &w.web,
            ReconcileOptions {
                record_missing: true,
                ..ReconcileOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(report.missing.len(), 2, "{report:?}");
    w.apply(plan).await;
    assert!(
        !w.cloud
            .members()
            .iter()
            .any(|m| gone.contains(&m.server) && m.state == MemberState::Active),
        "the vanished servers' members take no more traffic: {:?}",
        w.cloud.members()
    );
}
