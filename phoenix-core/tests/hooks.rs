//! Drain and warm-up hooks run at the steps that move servers, in order,
//! and a failure blocks the move or is recorded, as the policy says; a
//! second orchestrator can wait for the deployment instead of failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{drain, r};
use phoenix_core::events::{EventKind, HookKind, Outcome};
use phoenix_core::executor::ExecError;
use phoenix_core::id::ServerId;
use phoenix_core::policy::HookFailure;
use phoenix_core::ports::{HookReport, HookTarget, PortError, ServerHooks};
use phoenix_core::sim::{SimCloud, SimConfig};

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(HookKind, ServerId, String)>>,
    /// Drains of this release fail.
    failing_drain: Option<&'static str>,
}

#[async_trait]
impl ServerHooks for Recorder {
    async fn warm_up(&self, t: &HookTarget) -> Result<HookReport, PortError> {
        self.calls.lock().unwrap().push((
            HookKind::WarmUp,
            t.server.clone(),
            t.release.to_string(),
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(HookReport {
            done: 25,
            failed: 0,
            detail: "25 URLs warmed".into(),
        })
    }

    async fn drain(&self, t: &HookTarget) -> Result<HookReport, PortError> {
        self.calls
            .lock()
            .unwrap()
            .push((HookKind::Drain, t.server.clone(), t.release.to_string()));
        if self.failing_drain == Some(t.release.as_str()) {
            return Err(PortError::temporary("POST /drain", "HTTP 503"));
        }
        Ok(HookReport {
            done: 3,
            failed: 0,
            detail: "3 sessions handed over".into(),
        })
    }
}

async fn world(hooks: Arc<Recorder>, on_failure: HookFailure) -> (SimCloud, phoenix_core::Phoenix) {
    let cloud = SimCloud::new(SimConfig::default());
    let mut policy = cloud.policy();
    policy.hooks.on_failure = on_failure;
    let phoenix = cloud.phoenix().policy(policy).hooks(hooks).build().unwrap();
    (cloud, phoenix)
}

#[tokio::test(start_paused = true)]
async fn warm_up_before_attach_and_drain_before_detach_and_reap() {
    let hooks = Arc::new(Recorder::default());
    let (cloud, phoenix) = world(hooks.clone(), HookFailure::Block).await;
    let (shop, web) = cloud.demo_deployment(&phoenix, 3).await.unwrap();
    let mut rx = phoenix.subscribe();
    for v in ["v1", "v2", "v3"] {
        let plan = phoenix.plan_deploy(&shop, &web, &r(v)).await.unwrap();
        phoenix.apply(plan).await.unwrap();
    }
    let events = drain(&mut rx);
    // Every server is warmed before it is attached and drained before it
    // is detached.
    let mut warmed = BTreeSet::new();
    let mut drained = BTreeSet::new();
    for e in &events {
        match &e.kind {
            EventKind::HookRan {
                hook: HookKind::WarmUp,
                server,
                ok: true,
                ..
            } => {
                warmed.insert(server.clone());
            }
            EventKind::HookRan {
                hook: HookKind::Drain,
                server,
                ok: true,
                ..
            } => {
                drained.insert(server.clone());
            }
            EventKind::ServerAttached { server, .. } => {
                assert!(
                    warmed.contains(server),
                    "{server} attached before its warm-up"
                )
            }
            EventKind::ServerDetached { server, .. } => {
                assert!(
                    drained.contains(server),
                    "{server} detached before its drain"
                )
            }
            _ => {}
        }
    }
    assert_eq!(warmed.len(), 9);
    assert_eq!(drained.len(), 6, "v1 and v2 servers left the balancer");
    // Reaping v1 (kept as standby after it left) does not drain it twice.
    let before = hooks.calls.lock().unwrap().len();
    let plan = phoenix.plan_reap(&shop, &web).await.unwrap();
    phoenix.apply(plan).await.unwrap();
    let calls = hooks.calls.lock().unwrap();
    assert_eq!(calls.len(), before, "already drained when it was detached");
}

#[tokio::test(start_paused = true)]
async fn a_failing_drain_blocks_the_switch_or_is_recorded() {
    // Block: the old servers keep serving, the switch rolls back.
    let hooks = Arc::new(Recorder {
        failing_drain: Some("v1"),
        ..Recorder::default()
    });
    let (cloud, phoenix) = world(hooks, HookFailure::Block).await;
    let (shop, web) = cloud.demo_deployment(&phoenix, 2).await.unwrap();
    let plan = phoenix.plan_deploy(&shop, &web, &r("v1")).await.unwrap();
    phoenix.apply(plan).await.unwrap();
    let plan = phoenix.plan_deploy(&shop, &web, &r("v2")).await.unwrap();
    match phoenix.apply(plan).await {
        Err(ExecError::Failed { report, cause }) => {
            assert_eq!(report.outcome, Outcome::RolledBack);
            assert!(
                matches!(
                    cause,
                    phoenix_core::executor::FailureCause::Hook {
                        hook: phoenix_core::events::HookKind::Drain,
                        ..
                    }
                ),
                "{cause:?}"
            );
            assert_eq!(report.cause.as_ref(), Some(&cause));
            assert!(
                report
                    .error
                    .as_deref()
                    .unwrap()
                    .contains("drain hook failed"),
                "{report:?}"
            );
        }
        other => panic!("expected a blocked switch, got {other:?}"),
    }
    let snap = phoenix.snapshot(&shop).await.unwrap();
    assert_eq!(snap.live_pool(&web).unwrap().release, r("v1"));
    assert!(cloud.violations().is_empty());

    // Proceed: the switch completes and the failure is an event.
    let hooks = Arc::new(Recorder {
        failing_drain: Some("v1"),
        ..Recorder::default()
    });
    let (cloud, phoenix) = world(hooks, HookFailure::Proceed).await;
    let (shop, web) = cloud.demo_deployment(&phoenix, 2).await.unwrap();
    let plan = phoenix.plan_deploy(&shop, &web, &r("v1")).await.unwrap();
    phoenix.apply(plan).await.unwrap();
    let mut rx = phoenix.subscribe();
    let plan = phoenix.plan_deploy(&shop, &web, &r("v2")).await.unwrap();
    phoenix.apply(plan).await.unwrap();
    let failed_drains = drain(&mut rx)
        .into_iter()
        .filter(|e| matches!(&e.kind, EventKind::HookRan { hook: HookKind::Drain, ok: false, detail, .. } if detail.contains("503")))
        .count();
    assert_eq!(failed_drains, 2);
}

#[tokio::test(start_paused = true)]
async fn a_second_orchestrator_waits_for_the_lease_when_asked() {
    let cloud = SimCloud::new(SimConfig::default());
    let first = cloud.phoenix().holder("first").build().unwrap();
    let (shop, web) = cloud.demo_deployment(&first, 2).await.unwrap();
    let patient = cloud
        .phoenix()
        .holder("patient")
        .lease_wait(Duration::from_secs(3600))
        .build()
        .unwrap();
    // Both plan against the same state; the first applies.
    let plan_a = first.plan_deploy(&shop, &web, &r("v1")).await.unwrap();
    let plan_b = patient.plan_deploy(&shop, &web, &r("v2")).await.unwrap();
    let a = tokio::spawn(async move { first.apply(plan_a).await });
    tokio::task::yield_now().await;
    // The second waits for the lease rather than failing with Busy, then
    // finds its plan stale.
    let started = tokio::time::Instant::now();
    match patient.apply(plan_b).await {
        Err(ExecError::Stale { .. }) => {}
        other => panic!("the patient orchestrator waited, then found the plan stale: {other:?}"),
    }
    assert!(started.elapsed() > Duration::from_secs(60), "it waited");
    a.await.unwrap().unwrap();
    let plan_b = patient.plan_deploy(&shop, &web, &r("v2")).await.unwrap();
    patient.apply(plan_b).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_blocking_hook_never_stops_a_rollback() {
    // Every drain fails and the policy blocks: the switch stops before the
    // old pool leaves, and the rollback still takes the new pool out (its
    // failed drains recorded) so the old one serves alone.
    #[derive(Default)]
    struct AlwaysFailingDrain;
    #[async_trait]
    impl ServerHooks for AlwaysFailingDrain {
        async fn warm_up(&self, _: &HookTarget) -> Result<HookReport, PortError> {
            Ok(HookReport::default())
        }
        async fn drain(&self, _: &HookTarget) -> Result<HookReport, PortError> {
            Err(PortError::temporary("POST /drain", "HTTP 503"))
        }
    }
    let cloud = SimCloud::new(SimConfig::default());
    let mut policy = cloud.policy();
    policy.hooks.on_failure = HookFailure::Block;
    let phoenix = cloud
        .phoenix()
        .policy(policy)
        .hooks(Arc::new(AlwaysFailingDrain))
        .build()
        .unwrap();
    let (shop, web) = cloud.demo_deployment(&phoenix, 2).await.unwrap();
    let plan = phoenix.plan_deploy(&shop, &web, &r("v1")).await.unwrap();
    phoenix.apply(plan).await.unwrap();
    let mut rx = phoenix.subscribe();
    let plan = phoenix.plan_deploy(&shop, &web, &r("v2")).await.unwrap();
    let err = phoenix.apply(plan).await.unwrap_err();
    assert_eq!(err.report().unwrap().outcome, Outcome::RolledBack, "{err}");
    let members = cloud.members();
    let snap = phoenix.snapshot(&shop).await.unwrap();
    assert!(members
        .iter()
        .filter(|m| m.state == phoenix_core::ports::MemberState::Active)
        .all(|m| snap.owner_of(&m.server).unwrap().0.release == r("v1")));
    let rollback_drains = drain(&mut rx)
        .into_iter()
        .filter(|e| matches!(&e.kind, EventKind::HookRan { hook: HookKind::Drain, ok: false, pool, .. } if pool.as_str().contains("v2")))
        .count();
    assert_eq!(
        rollback_drains, 2,
        "the new pool's failed drains are recorded"
    );
}
