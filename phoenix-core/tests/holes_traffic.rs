//! The holes the safety review found in how traffic moves (issue 11:
//! holes 1, 2, 8, 9, 10, 13 and 15), one test each. Each drives the
//! executor into the sequence that broke an invariant and checks, on the
//! simulated world's ground truth (strict refereeing), that it holds now.
//! `scripts/mutate-guards` removes each guard and shows its test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{custom_plan, live, r, server_of, world, world_with};
use phoenix_core::events::{Invariant, Outcome};
use phoenix_core::labels::Labels;
use phoenix_core::model::PoolState;
use phoenix_core::ops::{Drift, PlanningError, ReconcileOptions};
use phoenix_core::plan::{SlotRef, Step};
use phoenix_core::ports::{
    BootPayload, Compute, HookReport, HookTarget, LaunchRequest, LoadBalancer, MemberState,
    PortError, ServerHooks, Target,
};
use phoenix_core::sim::{Faults, SimCloud, SimConfig, SurgeWatch};

fn stuck_draining() -> Faults {
    Faults {
        stuck_draining: 1.0,
        ..Faults::none()
    }
}

/// Hole 1: a member left draining by a detach that failed part-way is
/// recorded as attached; a restore (and reconcile) must activate it again
/// on the balancer's fresh view, not trust the records.
#[tokio::test(start_paused = true)]
async fn hole_01_a_restore_reactivates_members_left_draining() {
    let w = world(SimConfig::default(), 3).await;
    w.cloud.strict();
    w.deploy("v1").await;
    let v1 = live(&w).await;
    // The first v1 member is left draining, as a failed detach leaves it;
    // the records still say attached.
    let slot0 = server_of(&w, &v1, 0).await;
    w.cloud.set_faults(stuck_draining());
    w.cloud
        .balancer()
        .detach(slot0.server.as_slice(), Duration::from_secs(5))
        .await
        .unwrap();
    w.cloud.set_faults(Faults::none());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (report, _) = w
        .phoenix
        .plan_reconcile(&w.shop, &w.web, ReconcileOptions::default())
        .await
        .unwrap();
    assert!(
        report
            .drift
            .iter()
            .any(|d| matches!(d, Drift::InactiveMember { slot: 0, .. })),
        "reconcile reports the member that takes no traffic: {report}"
    );
    // v2 fails its smoke test: the rollback restores v1 at full capacity,
    // the draining member included.
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
    assert_eq!(err.report().unwrap().outcome, Outcome::RolledBack, "{err}");
    let active = w
        .cloud
        .members()
        .iter()
        .filter(|m| m.state == MemberState::Active && m.is_serving_healthy())
        .count();
    assert_eq!(active, 3, "every v1 member serves again");
    w.assert_no_violations();
}

/// Hole 1 on a balancer that drains to the end (ELBv2: a deregistered
/// target drains for its whole delay and cannot be re-activated before,
/// `reactivates_draining: false`): the rollback still restores full
/// capacity, attaching the member once its four-minute drain has ended.
#[tokio::test(start_paused = true)]
async fn hole_01_on_a_balancer_that_drains_to_the_end_the_restore_still_completes() {
    let w = world_with(
        SimConfig {
            reactivates_draining: false,
            stages: false,
            // Long-lived connections: the member drains for four minutes.
            drain_time: Duration::from_secs(240),
            ..SimConfig::default()
        },
        3,
        |mut p| {
            p.rollout.drain = Duration::from_secs(300);
            p
        },
    )
    .await;
    w.cloud.strict();
    w.deploy("v1").await;
    let v1 = live(&w).await;
    let slot0 = server_of(&w, &v1, 0).await;
    // A detach that failed part-way left it draining; the records still
    // say attached.
    w.cloud
        .balancer()
        .detach(slot0.server.as_slice(), Duration::from_secs(300))
        .await
        .unwrap();
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
    assert_eq!(err.report().unwrap().outcome, Outcome::RolledBack, "{err}");
    let active = w
        .cloud
        .members()
        .iter()
        .filter(|m| m.state == MemberState::Active && m.is_serving_healthy())
        .count();
    assert_eq!(
        active, 3,
        "every v1 member serves again, once its drain ended"
    );
    w.assert_no_violations();
}

/// Drain hooks that take minutes; during the first one, the replacement
/// the detach relies on dies.
struct SlowDrain {
    cloud: SimCloud,
    victim: std::sync::Mutex<Option<phoenix_core::id::ServerId>>,
}

#[async_trait::async_trait]
impl ServerHooks for SlowDrain {
    async fn warm_up(&self, _: &HookTarget) -> Result<HookReport, PortError> {
        Ok(HookReport::default())
    }

    async fn drain(&self, _: &HookTarget) -> Result<HookReport, PortError> {
        if let Some(v) = self.victim.lock().unwrap().take() {
            self.cloud.kill(&v);
        }
        tokio::time::sleep(Duration::from_secs(50)).await;
        Ok(HookReport::default())
    }
}

/// Hole 2: the capacity guard read the balancer before the drain hooks,
/// which may take minutes, and detached on that stale read. It must read
/// again right before the call.
#[tokio::test(start_paused = true)]
async fn hole_02_the_floor_is_checked_again_after_the_drain_hooks() {
    let cloud = SimCloud::new(SimConfig::default());
    let hooks = Arc::new(SlowDrain {
        cloud: cloud.clone(),
        victim: std::sync::Mutex::new(None),
    });
    let phoenix = cloud
        .phoenix()
        .hooks(hooks.clone())
        .policy({
            let mut p = cloud.policy();
            p.rollout.batch_size = 1;
            p.rollout.max_surge = 1;
            p.provision.health_timeout = Duration::from_secs(120);
            p
        })
        .build()
        .unwrap();
    let (shop, web) = cloud.demo_deployment(&phoenix, 2).await.unwrap();
    cloud.strict();
    let plan = phoenix.plan_deploy(&shop, &web, &r("v1")).await.unwrap();
    phoenix.apply(plan).await.unwrap();
    // A rolling replacement: the first new server will die during the
    // drain hook of the old server it replaces.
    let plan = phoenix
        .plan_rolling_replace(&shop, &web, &r("v2"))
        .await
        .unwrap();
    let cloud2 = cloud.clone();
    let hooks2 = hooks.clone();
    let watch = async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let v2 = cloud2
                .servers()
                .into_iter()
                .find(|s| s.labels.release() == Some(r("v2")));
            if let Some(s) = v2 {
                *hooks2.victim.lock().unwrap() = Some(s.id);
                return;
            }
        }
    };
    let (result, ()) = tokio::join!(phoenix.apply(plan), watch);
    let err = result.unwrap_err();
    assert!(
        err.to_string()
            .contains(&Invariant::CapacityFloor.to_string()),
        "the detach is refused on the fresh read: {err}"
    );
    assert!(
        cloud.violations().is_empty(),
        "no detach on a stale read, nothing below the floor: {:#?}",
        cloud.violations()
    );
}

/// A balancer whose next reads answer late (a watched floating IP behind a
/// congested API); everything else goes straight through.
struct SlowReads {
    inner: Arc<dyn LoadBalancer>,
    slow_left: std::sync::atomic::AtomicUsize,
    delay: Duration,
}

#[async_trait::async_trait]
impl LoadBalancer for SlowReads {
    fn capabilities(&self) -> phoenix_core::ports::LbCapabilities {
        self.inner.capabilities()
    }

    async fn members(&self) -> Result<Vec<phoenix_core::ports::Member>, PortError> {
        use std::sync::atomic::Ordering;
        let slow = self
            .slow_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if slow {
            tokio::time::sleep(self.delay).await;
        }
        self.inner.members().await
    }

    async fn attach(&self, targets: &[Target]) -> Result<(), PortError> {
        self.inner.attach(targets).await
    }

    async fn detach(
        &self,
        servers: &[phoenix_core::id::ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        self.inner.detach(servers, drain).await
    }
}

/// Hole 2, the other way a read goes stale: the balancers are read at
/// once, but one answers late, and the other's answer is old by the time
/// the destructive call could go out. A read that took longer than
/// `calls.fresh_read` to gather is taken again; so is one that aged while
/// earlier calls ran.
#[tokio::test(start_paused = true)]
async fn hole_02_a_read_that_took_long_to_gather_is_taken_again() {
    let cloud = SimCloud::new(SimConfig::default());
    let fip = Arc::new(SlowReads {
        inner: cloud.balancer_named("fip"),
        slow_left: std::sync::atomic::AtomicUsize::new(0),
        delay: Duration::from_secs(20),
    });
    let policy = {
        let mut p = cloud.policy();
        p.retention.keep = 0;
        p
    };
    let phoenix = cloud
        .phoenix()
        .watch_balancer(fip.clone())
        .policy(policy)
        .build()
        .unwrap();
    let (shop, web) = cloud.demo_deployment(&phoenix, 2).await.unwrap();
    let w = common::World {
        cloud: cloud.clone(),
        phoenix,
        shop,
        web,
    };
    cloud.strict();
    w.deploy("v1").await;
    w.deploy("v2").await;
    // Reap terminates v1's servers; the first read of the floating IP
    // takes 20 s, while the role's balancer answers at once.
    let plan = w.phoenix.plan_reap(&w.shop, &w.web).await.unwrap();
    fip.slow_left.store(1, std::sync::atomic::Ordering::SeqCst);
    let report = w.phoenix.apply(plan).await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(
        fip.slow_left.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the slow read happened"
    );
    assert!(
        cloud.stats().terminate_calls >= 2,
        "v1's servers were terminated"
    );
    w.assert_no_violations();
}

/// Hole 8: a server still serving behind another balancer the deployment
/// knows (a floating IP pointed at it by hand) is never terminated.
#[tokio::test(start_paused = true)]
async fn hole_08_a_server_behind_a_watched_balancer_is_never_terminated() {
    let cloud = SimCloud::new(SimConfig::default());
    let policy = {
        let mut p = cloud.policy();
        p.retention.keep = 0;
        p
    };
    let phoenix = cloud
        .phoenix()
        .watch_balancer(cloud.balancer_named("fip"))
        .policy(policy)
        .build()
        .unwrap();
    let (shop, web) = cloud.demo_deployment(&phoenix, 2).await.unwrap();
    let w = common::World {
        cloud: cloud.clone(),
        phoenix,
        shop,
        web,
    };
    cloud.strict();
    w.deploy("v1").await;
    let v1 = live(&w).await;
    w.deploy("v2").await;
    // The floating IP still points at one of v1's servers.
    let s = server_of(&w, &v1, 0).await;
    cloud
        .balancer_named("fip")
        .attach(&[Target {
            server: s.server.clone().unwrap(),
            endpoint: s.endpoint.unwrap(),
        }])
        .await
        .unwrap();
    let plan = w.phoenix.plan_reap(&w.shop, &w.web).await.unwrap();
    assert!(
        plan.notes.iter().any(|n| n.contains("served")),
        "reap refuses the pool: {plan}"
    );
    // Even a hand-made plan cannot terminate it.
    let plan = custom_plan(
        &w,
        vec![Step::Terminate {
            pool: v1.clone(),
            slots: vec![0],
        }],
    )
    .await;
    let err = w.phoenix.apply(plan).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&Invariant::NoServingTermination.to_string()),
        "{err}"
    );
    w.assert_no_violations();
}

/// Hole 9: a balancer that reports a member under a stand-in id (an
/// adapter that lost its address map) must not make the server look
/// detached: members are matched by id and endpoint.
#[tokio::test(start_paused = true)]
async fn hole_09_members_reported_under_stand_in_ids_are_recognised() {
    let w = world(
        SimConfig {
            faults: Faults {
                stand_in_ids: 1.0,
                ..Faults::none()
            },
            ..SimConfig::default()
        },
        3,
    )
    .await;
    w.cloud.strict();
    w.deploy("v1").await;
    let v1 = live(&w).await;
    let read = w.cloud.balancer().members().await.unwrap();
    assert!(
        read.iter().all(|m| m.server.as_str().contains("-node-")),
        "every member is reported under a stand-in id: {read:?}"
    );
    for step in [
        Step::Terminate {
            pool: v1.clone(),
            slots: vec![0],
        },
        Step::Stop {
            pool: v1.clone(),
            slots: vec![1],
        },
    ] {
        let plan = custom_plan(&w, vec![step]).await;
        let err = w.phoenix.apply(plan).await.unwrap_err();
        assert!(
            err.to_string()
                .contains(&Invariant::NoServingTermination.to_string()),
            "{err}"
        );
    }
    // And a blue-green switch works end to end under stand-in ids.
    w.deploy("v2").await;
    assert_eq!(w.serving().await.get("v2"), Some(&3));
    w.assert_no_violations();
}

/// Hole 10: members of another deployment sharing the balancer are not
/// this role's capacity.
#[tokio::test(start_paused = true)]
async fn hole_10_the_floor_counts_only_the_roles_own_members() {
    let w = world(SimConfig::default(), 3).await;
    w.cloud.strict();
    w.deploy("v1").await;
    // Two healthy servers of another deployment share the balancer.
    let image = w.cloud.certified_image("other", "1");
    let requests: Vec<LaunchRequest> = (0..2)
        .map(|i| {
            let mut labels = Labels::new();
            labels.insert("phoenix-deployment", "other");
            LaunchRequest {
                name: format!("other-{i}"),
                image: image.id.clone(),
                flavor: None,
                boot: BootPayload::Local {
                    files: vec![],
                    env: Default::default(),
                },
                labels,
                token: phoenix_core::id::IdempotencyToken::new(format!("other-{i}")).unwrap(),
            }
        })
        .collect();
    let others: Vec<_> = w
        .cloud
        .compute()
        .launch(&requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let targets: Vec<Target> = others
        .iter()
        .map(|s| Target {
            server: s.id.clone(),
            endpoint: s.endpoint(8080).unwrap(),
        })
        .collect();
    w.cloud.balancer().attach(&targets).await.unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Detaching a v1 member with nothing in its place would leave web two
    // healthy members of three: below the floor, whatever else serves.
    let v1 = live(&w).await;
    let plan = custom_plan(
        &w,
        vec![Step::Detach {
            pool: v1,
            slots: vec![0],
            replacements: vec![],
        }],
    )
    .await;
    let err = w.phoenix.apply(plan).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&Invariant::CapacityFloor.to_string()),
        "{err}"
    );
    w.assert_no_violations();
}

/// Hole 13: `max_surge` caps every server running above the desired
/// count, draining ones included: a rolling replacement with
/// `max_surge = batch` never overlaps one batch's boot with the previous
/// batch's drain.
#[tokio::test(start_paused = true)]
async fn hole_13_max_surge_caps_every_running_server() {
    for surge in [2, 4] {
        let w = world_with(SimConfig::default(), 6, |mut p| {
            p.rollout.batch_size = 2;
            p.rollout.max_surge = surge;
            p
        })
        .await;
        w.deploy("v1").await;
        let v1 = live(&w).await;
        let plan = w
            .phoenix
            .plan_rolling_replace(&w.shop, &w.web, &r("v2"))
            .await
            .unwrap();
        let new = plan
            .steps
            .iter()
            .find_map(|s| match s {
                Step::CreatePool { pool, .. } => Some(pool.clone()),
                _ => None,
            })
            .unwrap();
        w.cloud.strict();
        w.cloud.watch_surge(vec![SurgeWatch {
            pools: [v1, new].into_iter().collect(),
            limit: 6 + surge,
            what: format!("the rolling replacement with max_surge {surge}"),
            journal: None,
        }]);
        w.apply(plan).await;
        assert_eq!(w.serving().await.get("v2"), Some(&6));
        w.assert_no_violations();
    }
}

/// Hole 13, found by the simulation: a hot standby that serves by mistake
/// is detached by a rolling replacement but kept running for rollback, so
/// pairing the new batches with its servers freed no surge while every
/// server of the live pool still ran. The live pool's servers leave first.
#[tokio::test(start_paused = true)]
async fn hole_13_a_standby_serving_by_mistake_does_not_use_up_the_surge() {
    let w = world_with(SimConfig::default(), 4, |mut p| {
        p.rollout.batch_size = 2;
        p.rollout.max_surge = 2;
        p.retention.keep = 1;
        p.retention.hot = 1;
        p
    })
    .await;
    w.deploy("v1").await;
    let v1 = live(&w).await;
    w.deploy("v2").await;
    let v2 = live(&w).await;
    // Someone puts v1's standby servers back behind the balancer.
    let mut targets = Vec::new();
    for i in 0..4 {
        let s = server_of(&w, &v1, i).await;
        targets.push(Target {
            server: s.server.clone().unwrap(),
            endpoint: s.endpoint.unwrap(),
        });
    }
    w.cloud.balancer().attach(&targets).await.unwrap();
    // ... as a halted operation would have, with the records saying so.
    common::edit_pool(&w, &v1, |p| {
        for s in &mut p.slots {
            s.traffic = phoenix_core::model::Traffic::Attached;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let plan = w
        .phoenix
        .plan_rolling_replace(&w.shop, &w.web, &r("v3"))
        .await
        .unwrap();
    let new = plan
        .steps
        .iter()
        .find_map(|s| match s {
            Step::CreatePool { pool, .. } => Some(pool.clone()),
            _ => None,
        })
        .unwrap();
    w.cloud.strict();
    w.cloud.watch_surge(vec![SurgeWatch {
        pools: [v2, new].into_iter().collect(),
        limit: 4 + 2,
        what: "the rolling replacement beside a serving standby".into(),
        journal: None,
    }]);
    w.apply(plan).await;
    assert_eq!(w.serving().await.get("v3"), Some(&4));
    w.assert_no_violations();
}

/// Hole 15: heal planned on an empty balancer read (a balancer that
/// restarted empty) and would replace the whole fleet. Planning fails
/// closed; a member the balancer merely lost is re-attached by reconcile,
/// not replaced.
#[tokio::test(start_paused = true)]
async fn hole_15_heal_never_plans_on_an_empty_read() {
    let w = world(SimConfig::default(), 3).await;
    w.deploy("v1").await;
    w.cloud.set_faults(Faults {
        lb_empty_read: 1.0,
        ..Faults::none()
    });
    match w.phoenix.plan_heal(&w.shop, &w.web).await {
        Err(PlanningError::UntrustedRead(why)) => assert!(why.contains("no member"), "{why}"),
        other => panic!("expected a refusal to plan, got {other:?}"),
    }
    w.cloud.set_faults(Faults::none());
    // The balancer loses one member (removed by hand): heal leaves it to
    // reconcile, which puts it back.
    let v1 = live(&w).await;
    let s = server_of(&w, &v1, 1).await;
    w.cloud
        .balancer()
        .detach(s.server.as_slice(), Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let plan = w.phoenix.plan_heal(&w.shop, &w.web).await.unwrap();
    assert!(plan.steps.is_empty(), "nothing to replace: {plan}");
    let (_, plan) = w
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
    w.apply(plan).await;
    assert_eq!(w.serving().await.get("v1"), Some(&3));
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    assert_eq!(snap.pool(&v1).unwrap().state, PoolState::Live);
    let _ = SlotRef { pool: v1, slot: 0 };
    w.assert_no_violations();
}

/// Seeds 12450 and 22691 of 100,000: a launch step recorded a server
/// stuck in BUILD as discarded, then its orchestrator died before
/// terminating it. The resumed step launched the replacement first, so
/// the stuck server, the replacement and the pool it replaces ran at
/// once: one over `max_surge`. Servers given up on now go before any
/// replacement is asked for.
#[tokio::test(start_paused = true)]
async fn a_resumed_launch_step_removes_what_it_gave_up_on_before_it_replaces_it() {
    use phoenix_core::sim::{CrashOn, CrashPoint};
    let cloud = SimCloud::new(SimConfig::default());
    let phoenix = cloud
        .phoenix()
        .lease_ttl(Duration::from_secs(10))
        .policy({
            let mut p = cloud.policy();
            p.rollout.batch_size = 1;
            p.rollout.max_surge = 1;
            p
        })
        .build()
        .unwrap();
    let (shop, web) = cloud.demo_deployment(&phoenix, 3).await.unwrap();
    let w = common::World {
        cloud: cloud.clone(),
        phoenix,
        shop,
        web,
    };
    w.deploy("v1").await;
    let v1 = live(&w).await;
    let plan = w
        .phoenix
        .plan_rolling_replace(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    let new = plan
        .steps
        .iter()
        .find_map(|s| match s {
            Step::CreatePool { pool, .. } => Some(pool.clone()),
            _ => None,
        })
        .unwrap();
    cloud.strict();
    cloud.watch_surge(vec![SurgeWatch {
        pools: [v1, new].into_iter().collect(),
        limit: 3 + 1,
        what: "the rolling replacement with max_surge 1".into(),
        journal: None,
    }]);
    // The first new server sticks in BUILD; the orchestrator dies right
    // after it records giving up on it.
    cloud.set_faults(Faults {
        stuck_in_build: 1.0,
        ..Faults::none()
    });
    cloud.store().arm(CrashPoint {
        commit: 1,
        after_write: true,
        on: CrashOn::Event("launch_failed"),
    });
    let crashed = cloud.store().crashed();
    let calm = async {
        while cloud.stats().launch_calls == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cloud.set_faults(Faults::none());
        std::future::pending::<()>().await;
    };
    tokio::select! {
        biased;
        _ = crashed.notified() => {}
        r = w.phoenix.apply(plan) => panic!("finished without crashing: {r:?}"),
        () = calm => {}
    }
    cloud.store().disarm();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let next = cloud.phoenix_as("successor").build().unwrap();
    let report = next.resume(&w.shop).await.unwrap().unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded);
    w.assert_no_violations();
}
