//! Every operation, end to end, on the simulated cloud.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{count, drain, r, world, world_with};
use phoenix_core::events::{EventKind, Outcome};
use phoenix_core::executor::ExecError;
use phoenix_core::model::{PoolState, SlotState};
use phoenix_core::ops::ReconcileOptions;
use phoenix_core::plan::Step;
use phoenix_core::sim::{Faults, SimConfig};

#[tokio::test(start_paused = true)]
async fn blue_green_rollback_redeploy_and_reap() {
    let w = world(SimConfig::default(), 3).await;
    w.deploy("v1").await;
    assert_eq!(w.serving().await.get("v1"), Some(&3));
    let report = w.deploy("v2").await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(w.serving().await.get("v2"), Some(&3));
    assert_eq!(w.serving().await.get("v1"), None);

    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let states: Vec<PoolState> = snap.pools_of(&w.web).map(|p| p.state).collect();
    assert_eq!(states, vec![PoolState::HOT, PoolState::Live]);

    // Roll back: the hot standby is revalidated and serves again; nothing
    // new is launched.
    let launched = w.cloud.stats().servers_launched;
    let plan = w
        .phoenix
        .plan_rollback(&w.shop, &w.web, None)
        .await
        .unwrap();
    assert!(plan
        .steps
        .iter()
        .all(|s| !matches!(s, Step::CreatePool { .. } | Step::AddSlots { .. })));
    w.apply(plan).await;
    assert_eq!(w.serving().await.get("v1"), Some(&3));
    assert_eq!(w.cloud.stats().servers_launched, launched);

    // Deploy v2 again: its standby pool is reused.
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    assert!(!plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::CreatePool { .. })));
    w.apply(plan).await;
    assert_eq!(w.serving().await.get("v2"), Some(&3));

    // v3, then reap with keep = 1: v1's pool goes, v2's stays hot.
    w.deploy("v3").await;
    let plan = w.phoenix.plan_reap(&w.shop, &w.web).await.unwrap();
    println!("{plan}");
    w.apply(plan).await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let states: Vec<(String, PoolState)> = snap
        .pools_of(&w.web)
        .map(|p| (p.release.to_string(), p.state))
        .collect();
    // A deleted pool leaves the records (its history is in the events).
    assert_eq!(
        states,
        vec![
            ("v2".into(), PoolState::HOT),
            ("v3".into(), PoolState::Live)
        ]
    );
    assert_eq!(snap.pools.len(), 2, "the deleted pool's record is gone");
    assert_eq!(
        w.running_by_release().get("v1"),
        None,
        "v1 servers terminated"
    );
    assert_eq!(w.running_by_release().get("v2"), Some(&3));
    w.assert_no_violations();
}

#[tokio::test(start_paused = true)]
async fn rolling_replace_respects_batch_and_floor() {
    let w = world_with(SimConfig::default(), 6, |mut p| {
        p.rollout.batch_size = 2;
        p.rollout.max_surge = 2;
        p
    })
    .await;
    w.deploy("v1").await;
    let mut rx = w.phoenix.subscribe();
    let plan = w
        .phoenix
        .plan_rolling_replace(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    println!("{plan}");
    let report = w.apply(plan).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(w.serving().await.get("v2"), Some(&6));
    assert_eq!(w.running_by_release().get("v1"), None);
    let events = drain(&mut rx);
    // No step attached, detached or terminated more than two servers.
    let mut per_step = 0;
    for e in &events {
        match &e.kind {
            EventKind::StepStarted { .. } => per_step = 0,
            EventKind::ServerAttached { .. }
            | EventKind::ServerDetached { .. }
            | EventKind::ServerTerminated { .. } => {
                per_step += 1;
                assert!(per_step <= 2, "a step changed more than the batch");
            }
            _ => {}
        }
    }
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let pools: Vec<_> = snap.pools_of(&w.web).collect();
    assert_eq!(pools.len(), 1, "the replaced pool was deleted");
    assert_eq!(pools[0].release, r("v2"));
    w.assert_no_violations();
}

#[tokio::test(start_paused = true)]
async fn failed_provisioning_cleans_up_everything() {
    let w = world(SimConfig::default(), 3).await;
    w.deploy("v1").await;
    w.cloud.set_faults(Faults {
        stuck_in_build: 1.0,
        ..Faults::none()
    });
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    let err = w.phoenix.apply(plan).await.unwrap_err();
    let report = err.report().expect("it ran");
    assert!(
        report
            .error
            .as_deref()
            .unwrap_or("")
            .contains("stuck in BUILD"),
        "{err}"
    );
    w.cloud.set_faults(Faults::none());
    assert_eq!(w.running_by_release().get("v2"), None, "no v2 server left");
    assert_eq!(w.serving().await.get("v1"), Some(&3), "v1 untouched");
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let failed = snap.pools_of(&w.web).last().unwrap();
    assert_eq!(failed.state, PoolState::Failed);
    // The first attempt of every slot, and `replace_budget` replacements
    // for the whole step.
    let budget = w.phoenix.policy().provision.replace_budget;
    assert_eq!(failed.discarded.len(), 3 + budget);
    assert!(failed.discarded.iter().all(|d| d.terminated));
    assert!(failed
        .slots
        .iter()
        .all(|s| s.state == SlotState::Abandoned || s.state == SlotState::Terminated));
    w.assert_no_violations();
}

#[tokio::test(start_paused = true)]
async fn a_release_that_fails_its_smoke_test_never_serves() {
    let w = world(SimConfig::default(), 3).await;
    w.deploy("v1").await;
    w.cloud.set_faults(Faults {
        bad_releases: [r("v2")].into_iter().collect(),
        ..Faults::none()
    });
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    let err = w.phoenix.apply(plan).await.unwrap_err();
    assert!(err.to_string().contains("Smoke"), "{err}");
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 3)].into_iter().collect()
    );
    assert_eq!(
        w.running_by_release().get("v2"),
        None,
        "never served: cleaned up"
    );
    w.assert_no_violations();
}

#[tokio::test(start_paused = true)]
async fn a_failure_during_bake_rolls_back_to_full_capacity() {
    let w = world(SimConfig::default(), 3).await;
    w.deploy("v1").await;
    let mut rx = w.phoenix.subscribe();
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    let cloud = w.cloud.clone();
    // Kill one v2 server once the pool is healthy behind the balancer.
    let killer = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if let EventKind::ServerHealthy { server, pool, .. } = e.kind {
                        if pool.as_str().contains("v2") {
                            tokio::time::sleep(Duration::from_secs(20)).await;
                            cloud.kill(&server);
                            return;
                        }
                    }
                }
                Err(_) => return,
            }
        }
    });
    let err = w.phoenix.apply(plan).await.unwrap_err();
    killer.await.unwrap();
    let report = err.report().unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{err}");
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 3)].into_iter().collect()
    );
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let states: Vec<PoolState> = snap.pools_of(&w.web).map(|p| p.state).collect();
    assert_eq!(states, vec![PoolState::Live, PoolState::Failed]);
    // Kept for inspection (keep_failed): its servers still run.
    assert_eq!(w.running_by_release().get("v2"), Some(&3));
    w.assert_no_violations();
    // Reaping removes the failed pool.
    let plan = w.phoenix.plan_reap(&w.shop, &w.web).await.unwrap();
    w.apply(plan).await;
    assert_eq!(w.running_by_release().get("v2"), None);
}

#[tokio::test(start_paused = true)]
async fn refresh_replaces_old_servers_within_the_rate_budget() {
    let w = world_with(SimConfig::default(), 4, |mut p| {
        p.refresh.max_age = Duration::from_secs(3600);
        p.refresh.max_replacements = 2;
        p.refresh.window = Duration::from_secs(1800);
        p.rollout.batch_size = 2;
        p
    })
    .await;
    w.deploy("v1").await;
    let before: BTreeSet<_> = w.cloud.members().into_iter().map(|m| m.server).collect();
    let plan = w.phoenix.plan_refresh(&w.shop, &w.web).await.unwrap();
    assert!(plan.steps.is_empty(), "nothing is old yet: {plan}");
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    let mut rx = w.phoenix.subscribe();
    let plan = w.phoenix.plan_refresh(&w.shop, &w.web).await.unwrap();
    println!("{plan}");
    let start = tokio::time::Instant::now();
    w.apply(plan).await;
    let after: BTreeSet<_> = w.cloud.members().into_iter().map(|m| m.server).collect();
    assert_eq!(after.len(), 4);
    assert!(after.is_disjoint(&before), "every server replaced");
    let events = drain(&mut rx);
    assert!(count(&events, |k| matches!(k, EventKind::RateLimited { .. })) >= 1);
    // 4 replacements at 2 per 30 minutes: the second batch waited.
    assert!(start.elapsed() >= Duration::from_secs(1800));
    assert_eq!(w.serving().await.get("v1"), Some(&4));
    w.assert_no_violations();
}

#[tokio::test(start_paused = true)]
async fn heal_replaces_a_dead_member() {
    let w = world(SimConfig::default(), 3).await;
    w.deploy("v1").await;
    let victim = w.cloud.members()[1].server.clone();
    w.cloud.kill(&victim);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let plan = w.phoenix.plan_heal(&w.shop, &w.web).await.unwrap();
    println!("{plan}");
    assert!(plan.notes.iter().any(|n| n.contains(victim.as_str())));
    w.apply(plan).await;
    let members = w.cloud.members();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m.server != victim));
    assert!(members.iter().all(|m| m.is_serving_healthy()));
    assert!(!w.cloud.servers().iter().any(|s| s.id == victim));
    w.assert_no_violations();
    // Healthy again: nothing to heal.
    let plan = w.phoenix.plan_heal(&w.shop, &w.web).await.unwrap();
    assert!(plan.steps.is_empty());
}

#[tokio::test(start_paused = true)]
async fn reconcile_reports_and_repairs_on_request() {
    use phoenix_core::labels::Labels;
    use phoenix_core::ports::{BootPayload, Compute, LaunchRequest};
    let w = world(SimConfig::default(), 3).await;
    w.deploy("v1").await;
    w.deploy("v2").await;
    // An orphan: a server with this deployment's labels that no pool owns.
    let mut labels = Labels::new();
    labels.insert(phoenix_core::labels::keys::DEPLOYMENT, "shop");
    labels.insert(phoenix_core::labels::keys::ROLE, "web");
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let image = snap.releases[&r("v1")].images[&w.web].clone();
    let orphan = w
        .cloud
        .compute()
        .launch(&[LaunchRequest {
            name: "stray".into(),
            image,
            flavor: None,
            boot: BootPayload::Local {
                files: vec![],
                env: Default::default(),
            },
            labels,
            token: phoenix_core::id::IdempotencyToken::new("stray").unwrap(),
        }])
        .await
        .remove(0)
        .unwrap();
    // A missing server: a standby's server vanishes behind our back.
    let standby = snap.pools_of(&w.web).next().unwrap();
    let gone = standby.slots[0].server.clone().unwrap();
    w.cloud.compute().terminate(&gone).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;

    let (report, plan) = w
        .phoenix
        .plan_reconcile(&w.shop, &w.web, ReconcileOptions::default())
        .await
        .unwrap();
    println!("{report}");
    assert_eq!(report.orphans, vec![orphan.id.clone()]);
    assert_eq!(report.missing.len(), 1);
    assert_eq!(report.missing[0].2, gone);
    assert!(plan.steps.is_empty(), "report only unless asked");

    let (_, plan) = w
        .phoenix
        .plan_reconcile(
            &w.shop,
            &w.web,
            ReconcileOptions {
                remove_orphans: true,
                record_missing: true,
                restore_members: false,
            },
        )
        .await
        .unwrap();
    w.apply(plan).await;
    assert!(!w.cloud.servers().iter().any(|s| s.id == orphan.id));
    let (report, _) = w
        .phoenix
        .plan_reconcile(&w.shop, &w.web, ReconcileOptions::default())
        .await
        .unwrap();
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn cold_standby_is_started_for_rollback() {
    let w = world_with(SimConfig::default(), 2, |mut p| {
        p.retention.keep = 2;
        p.retention.hot = 1;
        p
    })
    .await;
    w.deploy("v1").await;
    w.deploy("v2").await;
    w.deploy("v3").await;
    let plan = w.phoenix.plan_reap(&w.shop, &w.web).await.unwrap();
    w.apply(plan).await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let states: Vec<PoolState> = snap.pools_of(&w.web).map(|p| p.state).collect();
    assert_eq!(
        states,
        vec![PoolState::COLD, PoolState::HOT, PoolState::Live]
    );
    let plan = w
        .phoenix
        .plan_rollback(&w.shop, &w.web, Some(&r("v1")))
        .await
        .unwrap();
    assert!(plan.steps.iter().any(|s| matches!(s, Step::Start { .. })));
    w.apply(plan).await;
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 2)].into_iter().collect()
    );
    w.assert_no_violations();
}

#[tokio::test(start_paused = true)]
async fn rollback_to_a_reaped_release_provisions_it_again() {
    let w = world(SimConfig::default(), 2).await;
    w.deploy("v1").await;
    w.deploy("v2").await;
    w.deploy("v3").await;
    let plan = w.phoenix.plan_reap(&w.shop, &w.web).await.unwrap();
    w.apply(plan).await;
    let plan = w
        .phoenix
        .plan_rollback(&w.shop, &w.web, Some(&r("v1")))
        .await
        .unwrap();
    assert!(plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::CreatePool { .. })));
    w.apply(plan).await;
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 2)].into_iter().collect()
    );
}

#[tokio::test(start_paused = true)]
async fn stale_busy_and_unknown_inputs_are_refused() {
    let w = world(SimConfig::default(), 2).await;
    w.deploy("v1").await;
    let stale = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    w.deploy("v3").await;
    let calls = w.cloud.stats();
    match w.phoenix.apply(stale).await {
        Err(ExecError::Stale { planned, current }) => assert!(current > planned),
        other => panic!("expected a stale plan refusal, got {other:?}"),
    }
    assert_eq!(w.cloud.stats().launch_calls, calls.launch_calls);

    let err = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("nope"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("release nope is not recorded"),
        "{err}"
    );
    let err = w
        .phoenix
        .plan_deploy(
            &w.shop,
            &phoenix_core::id::RoleName::new("db").unwrap(),
            &r("v1"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("role db"), "{err}");
    // Already live: an empty plan.
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v3"))
        .await
        .unwrap();
    assert!(plan.is_noop());
}

#[tokio::test(start_paused = true)]
async fn uncertified_images_never_reach_production() {
    let w = world(SimConfig::default(), 2).await;
    let mut image = w.cloud.certified_image("web", "v9");
    image.state = phoenix_core::model::ImageState::Built;
    // Register it as merely built (the provider's copy says certified).
    w.phoenix.register_image(&image).await.unwrap();
    let err = w
        .phoenix
        .create_release(
            &w.shop,
            r("v9"),
            [(w.web.clone(), image.id.clone())].into_iter().collect(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("production only launches certified images"),
        "{err}"
    );
    let err = w
        .phoenix
        .create_release(
            &w.shop,
            r("v10"),
            [(
                w.web.clone(),
                phoenix_core::id::ImageId::new("img-missing").unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_standby_server_that_died_is_replaced_before_rollback() {
    let w = world(SimConfig::default(), 3).await;
    w.deploy("v1").await;
    w.deploy("v2").await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let standby = snap.pools_of(&w.web).next().unwrap();
    let dead = standby.slots[1].server.clone().unwrap();
    w.cloud.kill(&dead);
    let plan = w
        .phoenix
        .plan_rollback(&w.shop, &w.web, None)
        .await
        .unwrap();
    w.apply(plan).await;
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 3)].into_iter().collect()
    );
    assert!(w.cloud.members().iter().all(|m| m.server != dead));
    assert!(
        !w.cloud.servers().iter().any(|s| s.id == dead),
        "the dead one is terminated"
    );
    w.assert_no_violations();
}

#[tokio::test(start_paused = true)]
async fn a_halted_rolling_replace_is_continued_or_reverted() {
    let w = world_with(SimConfig::default(), 4, |mut p| {
        p.rollout.batch_size = 1;
        p.rollout.max_surge = 1;
        p.rollout.auto_rollback = false;
        p
    })
    .await;
    w.deploy("v1").await;
    // v2 fails its smoke test from its third server on: the replacement
    // halts with two pools live.
    w.cloud.set_faults(Faults {
        smoke_fails_after: [(r("v2"), 2)].into_iter().collect(),
        ..Faults::none()
    });
    let plan = w
        .phoenix
        .plan_rolling_replace(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    let err = w.phoenix.apply(plan).await.unwrap_err();
    assert_eq!(err.report().unwrap().outcome, Outcome::Failed);
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 2), ("v2".to_owned(), 2)]
            .into_iter()
            .collect()
    );
    // Heal leaves a mixed state alone (only sick servers are replaced).
    let plan = w.phoenix.plan_heal(&w.shop, &w.web).await.unwrap();
    assert!(plan.steps.is_empty(), "{plan}");
    // The fix is in: continuing the replacement finishes it.
    w.cloud.set_faults(Faults::none());
    let plan = w
        .phoenix
        .plan_rolling_replace(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    println!("{plan}");
    assert!(!plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::CreatePool { .. })));
    w.apply(plan).await;
    assert_eq!(
        w.serving().await,
        [("v2".to_owned(), 4)].into_iter().collect()
    );
    w.assert_no_violations();
}

#[tokio::test(start_paused = true)]
async fn reconcile_restores_members_a_balancer_lost() {
    use phoenix_core::ports::LoadBalancer;
    let w = world(SimConfig::default(), 3).await;
    w.deploy("v1").await;
    // The balancer restarts empty (as an in-process balancer does when its
    // process restarts).
    let lost: Vec<_> = w.cloud.members().into_iter().map(|m| m.server).collect();
    w.cloud
        .balancer()
        .detach(&lost, Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(w.cloud.members().is_empty());
    let (report, plan) = w
        .phoenix
        .plan_reconcile(
            &w.shop,
            &w.web,
            ReconcileOptions {
                restore_members: true,
                ..ReconcileOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(report.drift.len(), 3, "{report}");
    w.apply(plan).await;
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 3)].into_iter().collect()
    );
    assert!(w.cloud.members().iter().all(|m| m.is_serving_healthy()));
}
