//! The history operators ask for, after a real sequence of operations on
//! the simulated cloud in which the orchestrator dies half-way through a
//! switch and a second one finishes it: releases, pools over time,
//! operations with their holders, one operation's whole record, and its
//! JSON export.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use phoenix_core::events::{EventKind, Outcome};
use phoenix_core::executor::{ExecError, OperationStatus, StepStatus};
use phoenix_core::model::PoolState;
use phoenix_core::plan::OperationKind;
use phoenix_core::sim::{CrashPoint, SimCloud, SimConfig};
use phoenix_state::history::{self, HistoryError, EXPORT_FORMAT};

#[tokio::test(start_paused = true)]
async fn history_of_a_sequence_with_a_crash_names_both_holders() {
    let cloud = SimCloud::new(SimConfig::default());
    let first = cloud.phoenix().holder("orchestrator-1").build().unwrap();
    let (shop, web) = cloud.demo_deployment(&first, 3).await.unwrap();
    let v = |s: &str| s.parse().unwrap();
    let plan = first.plan_deploy(&shop, &web, &v("v1")).await.unwrap();
    first.apply(plan).await.unwrap();

    // The switch to v2 dies at its 6th commit (written), mid-way.
    let plan = first.plan_deploy(&shop, &web, &v("v2")).await.unwrap();
    let crashed_op = plan.id.clone();
    cloud.store().arm(CrashPoint::at(6, true));
    let crashed = cloud.store().crashed();
    tokio::select! {
        biased;
        _ = crashed.notified() => {}
        r = first.apply(plan) => panic!("the switch was meant to die, got {r:?}"),
    }
    drop(first);
    cloud.store().disarm();

    // A second orchestrator waits out the dead one's lease and resumes.
    let second = cloud.phoenix().holder("orchestrator-2").build().unwrap();
    loop {
        match second.resume(&shop).await {
            Ok(report) => {
                assert_eq!(report.unwrap().operation, crashed_op);
                break;
            }
            Err(ExecError::Busy { holder, .. }) => {
                assert_eq!(holder, "orchestrator-1");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let plan = second.plan_rollback(&shop, &web, None).await.unwrap();
    second.apply(plan).await.unwrap();

    let store = cloud.store();
    let h = history::deployment_history(store, &shop).await.unwrap();
    let labels: Vec<&str> = h.releases.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, vec!["v1", "v2", "v3"]);
    assert!(h
        .releases
        .iter()
        .all(|r| !r.fingerprint.is_empty() && r.images.len() == 1));
    assert!(h.active_operation.is_none() && h.lease.is_none());

    // Pools with their states over time: v1 went live, stood by, went live
    // again; v2 went live, then stood by.
    assert_eq!(h.pools.len(), 2);
    let states = |i: usize| -> Vec<PoolState> {
        std::iter::once(h.pools[i].transitions[0].from)
            .chain(h.pools[i].transitions.iter().map(|t| t.to))
            .collect()
    };
    assert_eq!(h.pools[0].release.as_str(), "v1");
    assert_eq!(
        states(0),
        vec![
            PoolState::Provisioning,
            PoolState::Verifying,
            PoolState::Ready,
            PoolState::Live,
            PoolState::HOT,
            PoolState::Live
        ]
    );
    assert_eq!(states(1).last(), Some(&PoolState::HOT));
    assert!(h.pools[1]
        .transitions
        .windows(2)
        .all(|w| w[0].at <= w[1].at));

    // Operations, with who held the lease when.
    let kinds: Vec<Option<OperationKind>> = h.operations.iter().map(|o| o.kind).collect();
    assert_eq!(
        kinds,
        vec![
            Some(OperationKind::Deploy),
            Some(OperationKind::Deploy),
            Some(OperationKind::Rollback)
        ]
    );
    assert!(h
        .operations
        .iter()
        .all(|o| o.outcome == Some(Outcome::Succeeded) && o.finished_at.is_some()));
    let resumed = &h.operations[1];
    assert_eq!(resumed.id, crashed_op);
    let holders: Vec<&str> = resumed.holders.iter().map(|x| x.holder.as_str()).collect();
    assert_eq!(holders, vec!["orchestrator-1", "orchestrator-2"]);
    assert!(resumed.holders[0].token < resumed.holders[1].token);
    assert!(resumed.holders[0].at < resumed.holders[1].at);
    let shown = h.to_string();
    assert!(
        shown.contains("held by orchestrator-1") && shown.contains("then orchestrator-2"),
        "{shown}"
    );

    // One operation's whole record: plan, journal, its events only.
    let op = history::operation_history(store, &shop, &crashed_op)
        .await
        .unwrap();
    assert_eq!(op.plan.id, crashed_op);
    assert_eq!(
        op.progress.status,
        OperationStatus::Finished(Outcome::Succeeded)
    );
    assert!(op
        .progress
        .steps
        .iter()
        .all(|s| s.status == StepStatus::Done));
    assert!(
        op.progress.steps.iter().any(|s| s.runs > 1),
        "the step running at the crash was run again"
    );
    assert!(op.events.windows(2).all(|w| w[0].seq < w[1].seq));
    let typed: Vec<EventKind> = op
        .events
        .iter()
        .filter_map(|e| e.typed())
        .map(|e| e.kind)
        .collect();
    assert_eq!(typed.len(), op.events.len(), "every event decodes");
    assert!(matches!(
        typed.first(),
        Some(EventKind::OperationStarted { .. })
    ));
    assert!(typed
        .iter()
        .any(|k| matches!(k, EventKind::OperationResumed { .. })));
    assert!(matches!(
        typed.last(),
        Some(EventKind::OperationFinished {
            outcome: Outcome::Succeeded,
            ..
        })
    ));

    // The export.
    let json = history::export_operation_json(store, &shop, &crashed_op)
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["format"], EXPORT_FORMAT);
    assert_eq!(doc["deployment"], "shop");
    assert_eq!(doc["operation"]["id"], crashed_op.as_str());
    assert_eq!(doc["operation"]["kind"], "deploy");
    assert_eq!(doc["operation"]["status"], "finished");
    assert_eq!(doc["operation"]["outcome"], "succeeded");
    assert_eq!(doc["operation"]["target_release"], "v2");
    assert_eq!(doc["holders"][0]["holder"], "orchestrator-1");
    assert_eq!(doc["holders"][1]["holder"], "orchestrator-2");
    assert!(doc["holders"][1]["token"].as_u64() > doc["holders"][0]["token"].as_u64());
    let steps = doc["steps"].as_array().unwrap();
    assert_eq!(steps.len(), op.plan.steps.len());
    assert_eq!(steps[0]["index"], 0);
    assert_eq!(steps[0]["status"], "done");
    assert!(steps[0]["step"].as_str().unwrap().len() > 5);
    assert!(doc["rollback"].is_null());
    let events = doc["events"].as_array().unwrap();
    assert_eq!(events.len(), op.events.len());
    assert_eq!(events[0]["event"], "operation_started");
    assert!(events.iter().all(|e| e["operation"] == crashed_op.as_str()));
    assert!(events.iter().all(|e| e["seq"].as_u64().is_some()));
    assert_eq!(doc["plan"]["id"], crashed_op.as_str());

    // Unknown things are typed errors.
    let nope = "op-nope".parse().unwrap();
    assert!(matches!(
        history::operation_history(store, &shop, &nope).await,
        Err(HistoryError::UnknownOperation { .. })
    ));
    assert!(matches!(
        history::deployment_history(store, &"nowhere".parse().unwrap()).await,
        Err(HistoryError::UnknownDeployment(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_rolled_back_operation_exports_its_rollback() {
    use phoenix_core::sim::Faults;
    let cloud = SimCloud::new(SimConfig::default());
    let phoenix = cloud.phoenix().build().unwrap();
    let (shop, web) = cloud.demo_deployment(&phoenix, 2).await.unwrap();
    let plan = phoenix
        .plan_deploy(&shop, &web, &"v1".parse().unwrap())
        .await
        .unwrap();
    phoenix.apply(plan).await.unwrap();
    // Every new server fails its smoke test: the switch to v2 rolls back.
    let mut faults = Faults::none();
    faults.bad_releases.insert("v2".parse().unwrap());
    cloud.set_faults(faults);
    let plan = phoenix
        .plan_deploy(&shop, &web, &"v2".parse().unwrap())
        .await
        .unwrap();
    let id = plan.id.clone();
    let err = phoenix.apply(plan).await.unwrap_err();
    assert!(matches!(err, ExecError::Failed { .. }), "{err}");
    let doc: serde_json::Value = serde_json::from_str(
        &history::export_operation_json(cloud.store(), &shop, &id)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(doc["operation"]["status"], "finished");
    assert_ne!(doc["operation"]["outcome"], "succeeded");
    assert!(doc["operation"]["error"].is_string());
    let rollback = &doc["rollback"];
    assert!(rollback["reason"].is_string(), "{rollback}");
    assert!(rollback["failed_step"].as_u64().is_some());
    assert!(rollback["steps"].is_array());
    let failed: Vec<&serde_json::Value> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["error"].is_string());
}
