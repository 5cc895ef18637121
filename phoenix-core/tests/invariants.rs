//! One test per safety invariant of the design. Each drives the executor
//! into the situation its guard exists for (often with a hand-made plan
//! that a planner would never produce) and checks the guard held, against
//! the simulated world's own record of what happened. Removing the guard
//! makes the test fail (see scripts/mutate-guards).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{custom_plan, r, world, world_with};
use phoenix_core::events::{Invariant, Outcome};
use phoenix_core::executor::{ExecError, Interruption, StepError};
use phoenix_core::labels::Labels;
use phoenix_core::plan::{PlanError, Step};
use phoenix_core::ports::{
    BootPayload, Commit, Compute, LaunchRequest, LoadBalancer, StateStore, StoreError, Target,
};
use phoenix_core::sim::{Faults, SimBootConfig, SimConfig};
use phoenix_core::store_layer::{CommitInterceptor, Intercepted};

fn guard_of(err: &ExecError) -> Option<Invariant> {
    let report = err.report()?;
    let text = report.error.as_deref()?;
    [
        Invariant::NoServingTermination,
        Invariant::CapacityFloor,
        Invariant::DoneMeansDone,
        Invariant::Retention,
    ]
    .into_iter()
    .find(|i| text.contains(&i.to_string()))
}

#[tokio::test(start_paused = true)]
async fn invariant_1_never_terminate_or_stop_a_serving_server() {
    let w = world(SimConfig::default(), 3).await;
    w.deploy("v1").await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let live = snap.live_pool(&w.web).unwrap().id.clone();
    for step in [
        Step::Terminate {
            pool: live.clone(),
            slots: vec![0],
        },
        Step::Stop {
            pool: live.clone(),
            slots: vec![1],
        },
    ] {
        let plan = custom_plan(&w, vec![step]).await;
        let err = w.phoenix.apply(plan).await.unwrap_err();
        assert_eq!(
            guard_of(&err),
            Some(Invariant::NoServingTermination),
            "{err}"
        );
    }
    assert_eq!(w.serving().await.get("v1"), Some(&3));
    w.assert_no_violations();
}

#[tokio::test(start_paused = true)]
async fn invariant_2_capacity_floor_and_replacements_first() {
    let w = world(SimConfig::default(), 3).await;
    w.deploy("v1").await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let live = snap.live_pool(&w.web).unwrap().id.clone();
    // Detaching a live server with nothing in its place breaks the floor.
    let plan = custom_plan(
        &w,
        vec![Step::Detach {
            pool: live.clone(),
            slots: vec![0],
            replacements: vec![],
        }],
    )
    .await;
    let err = w.phoenix.apply(plan).await.unwrap_err();
    assert_eq!(guard_of(&err), Some(Invariant::CapacityFloor), "{err}");
    // A replacement that is attached and healthy but not baked is not
    // enough either.
    let plan = custom_plan(
        &w,
        vec![
            Step::AddSlots {
                pool: live.clone(),
                slots: vec![phoenix_core::plan::NewSlot {
                    index: 3,
                    replaces: Some(0),
                }],
            },
            Step::Launch {
                pool: live.clone(),
                slots: vec![3],
            },
            Step::Verify {
                pool: live.clone(),
                slots: vec![3],
            },
            Step::Attach {
                pool: live.clone(),
                slots: vec![3],
            },
            Step::AwaitHealthy {
                pool: live.clone(),
                slots: vec![3],
            },
            Step::Detach {
                pool: live.clone(),
                slots: vec![0],
                replacements: vec![phoenix_core::plan::SlotRef {
                    pool: live.clone(),
                    slot: 3,
                }],
            },
        ],
    )
    .await;
    let err = w.phoenix.apply(plan).await.unwrap_err();
    assert_eq!(guard_of(&err), Some(Invariant::CapacityFloor), "{err}");
    assert!(err
        .report()
        .unwrap()
        .error
        .as_deref()
        .unwrap()
        .contains("baked: false"));
    assert_eq!(
        w.cloud
            .members()
            .iter()
            .filter(|m| m.is_serving_healthy())
            .count(),
        4
    );
    w.assert_no_violations();
}

#[tokio::test(start_paused = true)]
async fn invariant_3_blast_radius_rejects_before_any_call() {
    let w = world_with(SimConfig::default(), 6, |mut p| {
        p.rollout.batch_size = 2;
        p
    })
    .await;
    w.deploy("v1").await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let live = snap.live_pool(&w.web).unwrap().id.clone();
    let plan = custom_plan(
        &w,
        vec![Step::Detach {
            pool: live,
            slots: vec![0, 1, 2],
            replacements: vec![],
        }],
    )
    .await;
    let before = w.cloud.stats();
    match w.phoenix.apply(plan).await {
        Err(ExecError::Plan(PlanError::BlastRadius {
            changes: 3,
            limit: 2,
            ..
        })) => {}
        other => panic!("expected a blast radius refusal, got {other:?}"),
    }
    let after = w.cloud.stats();
    assert_eq!(before.lb_calls, after.lb_calls, "no API call was made");
    assert_eq!(before.describe_calls, after.describe_calls);
    // Every planner honours the batch.
    let plan = w
        .phoenix
        .plan_rolling_replace(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    assert!(plan.steps.iter().all(|s| s.changes() <= 2));
    plan.validate().unwrap();
}

#[tokio::test(start_paused = true)]
async fn invariant_4_halt_and_restore_full_capacity_before_removal() {
    // A rolling replacement whose third batch fails: the old pool must be
    // back at full capacity (relaunched) before any new server leaves.
    let w = world_with(SimConfig::default(), 6, |mut p| {
        p.rollout.batch_size = 2;
        p.rollout.max_surge = 2;
        p
    })
    .await;
    w.deploy("v1").await;
    // v2 fails its smoke test from its fifth server on (the third batch).
    w.cloud.set_faults(Faults {
        smoke_fails_after: [(r("v2"), 4)].into_iter().collect(),
        ..Faults::none()
    });
    let plan = w
        .phoenix
        .plan_rolling_replace(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    let err = w.phoenix.apply(plan).await.unwrap_err();
    w.cloud.set_faults(Faults::none());
    let report = err.report().unwrap();
    assert_eq!(report.outcome, Outcome::RolledBack, "{err}");
    assert_eq!(
        w.serving().await,
        [("v1".to_owned(), 6)].into_iter().collect()
    );
    // The world checked the floor at every detach.
    w.assert_no_violations();
}

#[tokio::test(start_paused = true)]
async fn invariant_5_one_writer_and_fenced_stale_holders() {
    let w = world(SimConfig::default(), 2).await;
    w.deploy("v1").await;
    // A second orchestrator on the same store is refused while the first
    // holds the deployment.
    let other = w
        .cloud
        .phoenix()
        .holder("other-orchestrator")
        .build()
        .unwrap();
    let plan_a = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    let plan_b = other.plan_deploy(&w.shop, &w.web, &r("v3")).await.unwrap();
    let (a, b) = tokio::join!(w.phoenix.apply(plan_a), async {
        tokio::task::yield_now().await;
        other.apply(plan_b).await
    });
    a.unwrap();
    match b {
        Err(ExecError::Busy { holder, .. }) => assert_eq!(holder, "sim-orchestrator"),
        other => panic!("expected Busy, got {other:?}"),
    }

    // A holder whose balancer calls hang far past its lease never acts
    // without it: every call's deadline ends before the lease could lapse,
    // the lease is renewed between calls, and nobody else gets the
    // deployment in the meantime. The referee checks every change to the
    // cloud or the balancer is made by a holder of a live lease.
    w.cloud.strict();
    let slow = w
        .cloud
        .phoenix_as("stalled")
        .lease_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    let plan = slow.plan_deploy(&w.shop, &w.web, &r("v3")).await.unwrap();
    let mut f = Faults::none();
    f.lb_slow = Duration::from_secs(120);
    w.cloud.set_faults(f);
    let thief = w.cloud.phoenix_as("thief").build().unwrap();
    let thief_store = thief.records().store().clone();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (result, stolen) = tokio::join!(
        async {
            let r = slow.apply(plan).await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        },
        async {
            // The thief tries for as long as the slow holder runs (bounded, in
            // case it never ends).
            let mut stolen = 0;
            for _ in 0..20_000 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                if thief_store
                    .acquire_lease("deployments/shop", "thief", Duration::from_secs(1))
                    .await
                    .is_ok()
                {
                    stolen += 1;
                }
            }
            stolen
        }
    );
    assert!(
        done.load(std::sync::atomic::Ordering::SeqCst),
        "the slow holder ended"
    );
    w.cloud.set_faults(Faults::none());
    let err = result.unwrap_err();
    assert!(err.to_string().contains("no answer within"), "{err}");
    assert_eq!(stolen, 0, "the slow holder kept its lease throughout");
    w.assert_no_violations();
    let _ = w.phoenix.resume(&w.shop).await;

    // The window only the fence closes: a holder frozen inside a commit (a
    // GC pause, a stopped process) while its lease lapses and another
    // orchestrator takes over. When it wakes, its commit carries a stale
    // token and must not land. The freeze is real: the holder's future is
    // not polled at all while time passes.
    let stalling = StallingStore::new(Arc::new(w.cloud.store().clone()), Stall::default());
    let paused = w
        .cloud
        .phoenix()
        .store(Arc::new(stalling.clone()))
        .holder("paused")
        .lease_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    let plan = paused.plan_rollback(&w.shop, &w.web, None).await.unwrap();
    stall_commit(&stalling, 3);
    let reached = stalling.interceptor().reached.clone();
    let mut frozen = Box::pin(paused.apply(plan));
    tokio::select! {
        r = &mut frozen => panic!("finished before its third commit: {r:?}"),
        _ = reached.notified() => {}
    }
    tokio::time::sleep(Duration::from_secs(120)).await;
    let lease = w
        .cloud
        .store()
        .acquire_lease("deployments/shop", "successor", Duration::from_secs(3600))
        .await
        .expect("the frozen holder's lease lapsed");
    let generation = w.phoenix.snapshot(&w.shop).await.unwrap().generation();
    stalling.interceptor().open.notify_one();
    match frozen.await {
        Err(ExecError::Interrupted {
            source: Interruption::LeaseLost(_),
            ..
        }) => {}
        other => panic!("the frozen holder must be fenced off, got {other:?}"),
    }
    assert_eq!(
        w.phoenix.snapshot(&w.shop).await.unwrap().generation(),
        generation,
        "no write of the frozen holder landed after the takeover"
    );
    w.cloud.store().release_lease(&lease).await.unwrap();
}

/// Holds one chosen commit at a gate, as a process frozen mid-write.
#[derive(Clone, Default)]
struct Stall {
    at: Arc<std::sync::Mutex<Option<u64>>>,
    reached: Arc<tokio::sync::Notify>,
    open: Arc<tokio::sync::Notify>,
}

type StallingStore = Intercepted<Stall>;

/// Holds the `k`-th commit from now until the gate opens.
fn stall_commit(store: &StallingStore, k: u64) {
    *store.interceptor().at.lock().unwrap() = Some(store.commits() + k);
}

#[async_trait::async_trait]
impl CommitInterceptor for Stall {
    async fn commit(
        &self,
        n: u64,
        commit: Commit,
        next: &dyn StateStore,
    ) -> Result<Vec<u64>, StoreError> {
        let hold = *self.at.lock().unwrap() == Some(n);
        if hold {
            self.reached.notify_one();
            self.open.notified().await;
        }
        next.commit(commit).await
    }
}

#[tokio::test(start_paused = true)]
async fn invariant_6_lost_launch_answers_make_no_duplicates() {
    let w = world(
        SimConfig {
            faults: Faults {
                lost_response: 0.5,
                ..Faults::none()
            },
            ..SimConfig::default()
        },
        5,
    )
    .await;
    w.deploy("v1").await;
    w.cloud.set_faults(Faults::none());
    assert!(w.cloud.stats().faults_injected > 0, "answers were lost");
    let servers = w.cloud.servers();
    assert_eq!(
        servers.len(),
        5,
        "one server per slot, no duplicate: {servers:#?}"
    );
    assert_eq!(
        w.cloud.stats().servers_launched,
        5,
        "every lost answer was found by its token, none launched again"
    );
    let tokens: std::collections::BTreeSet<_> =
        servers.iter().map(|s| s.labels.token().unwrap()).collect();
    assert_eq!(tokens.len(), 5);
    let (report, _) = w
        .phoenix
        .plan_reconcile(&w.shop, &w.web, Default::default())
        .await
        .unwrap();
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(start_paused = true)]
async fn invariant_7_stuck_servers_are_replaced_a_bounded_number_of_times() {
    let w = world(SimConfig::default(), 2).await;
    w.cloud.set_faults(Faults {
        stuck_in_build: 1.0,
        ..Faults::none()
    });
    let start = tokio::time::Instant::now();
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v1"))
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(24 * 3600), w.phoenix.apply(plan))
        .await
        .expect("the operation ends by itself")
        .unwrap_err();
    let elapsed = start.elapsed();
    let policy = w.phoenix.policy();
    // The budget is the step's, as the policy documents: both slots' first
    // launches, then `replace_budget` replacements between them.
    let budget = policy.provision.replace_budget as u64;
    assert!(err.to_string().contains("its whole budget"), "{err}");
    let launched = w.cloud.stats().servers_launched;
    assert!(
        launched > 2 && launched <= 2 + budget,
        "{launched} launched, budget {budget}"
    );
    let bound = policy.provision.server_deadline * (budget as u32 + 2);
    assert!(elapsed <= bound, "took {elapsed:?}, bound {bound:?}");
    assert!(
        w.cloud.servers().is_empty(),
        "every stuck server was terminated"
    );
}

/// Launches a server outside Phoenix with `labels` and puts it behind the
/// default balancer, as a person or another tool would.
async fn stray_member(
    w: &common::World,
    name: &str,
    labels: Labels,
) -> phoenix_core::model::Server {
    let image = w.cloud.certified_image("web", name);
    let stray = w
        .cloud
        .compute()
        .launch(&[LaunchRequest {
            name: name.into(),
            image: image.id,
            flavor: None,
            boot: BootPayload::Local {
                files: vec![],
                env: Default::default(),
            },
            labels,
            token: phoenix_core::id::IdempotencyToken::new(name).unwrap(),
        }])
        .await
        .remove(0)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    w.cloud
        .balancer()
        .attach(&[Target {
            server: stray.id.clone(),
            endpoint: stray.endpoint(8080).unwrap(),
        }])
        .await
        .unwrap();
    stray
}

#[tokio::test(start_paused = true)]
async fn invariant_8_done_only_when_every_serving_member_runs_the_target() {
    let w = world(SimConfig::default(), 2).await;
    w.deploy("v1").await;
    // A server of this deployment that no recorded pool owns serves too.
    let mut labels = Labels::new();
    labels.insert("phoenix-deployment", "shop");
    labels.insert("phoenix-role", "web");
    let stray = stray_member(&w, "stray", labels).await;
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    let err = w.phoenix.apply(plan).await.unwrap_err();
    assert_eq!(guard_of(&err), Some(Invariant::DoneMeansDone), "{err}");
    assert!(
        err.report()
            .unwrap()
            .error
            .as_deref()
            .unwrap()
            .contains("no recorded pool"),
        "{err}"
    );
    assert_eq!(err.report().unwrap().outcome, Outcome::RolledBack);
    w.cloud
        .balancer()
        .detach(std::slice::from_ref(&stray.id), Duration::ZERO)
        .await
        .unwrap();

    // A member of another deployment sharing the balancer is not this
    // deployment's: it neither counts nor blocks.
    let mut labels = Labels::new();
    labels.insert("phoenix-deployment", "elsewhere");
    stray_member(&w, "neighbour", labels).await;
    let report = w.deploy("v2").await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    w.assert_no_violations();
}

#[tokio::test(start_paused = true)]
async fn invariant_9_retention_keeps_rollback_pools() {
    let w = world_with(SimConfig::default(), 2, |mut p| {
        p.retention.keep = 1;
        p
    })
    .await;
    w.deploy("v1").await;
    w.deploy("v2").await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let standby = snap.pools_of(&w.web).next().unwrap().id.clone();
    // Retiring the only standby pool would leave none.
    let plan = custom_plan(
        &w,
        vec![Step::SetPoolState {
            pool: standby,
            to: phoenix_core::model::PoolState::Retired,
        }],
    )
    .await;
    let err = w.phoenix.apply(plan).await.unwrap_err();
    assert_eq!(guard_of(&err), Some(Invariant::Retention), "{err}");
    // The planner keeps it too.
    let plan = w.phoenix.plan_reap(&w.shop, &w.web).await.unwrap();
    assert!(plan.steps.is_empty(), "{plan}");
}

#[tokio::test(start_paused = true)]
async fn invariant_10_secrets_never_leave_their_boot_payload() {
    use std::io::Write as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    const CANARY: &str = "canary-5f0e2d7c-never-log-me";

    #[derive(Clone, Default)]
    struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_ansi(false),
    );
    let _guard = tracing::subscriber::set_default(
        subscriber.with(tracing_subscriber::filter::LevelFilter::TRACE),
    );

    let cloud = phoenix_core::sim::SimCloud::new(SimConfig::default()).with_boot(
        SimBootConfig::default().with_secret("prod".parse().unwrap(), "DB_PASSWORD", CANARY),
    );
    let phoenix = cloud.phoenix().build().unwrap();
    let (shop, web) = cloud.demo_deployment(&phoenix, 2).await.unwrap();
    let mut rx = phoenix.subscribe();
    let mut texts = Vec::new();
    for release in ["v1", "v2"] {
        let plan = phoenix.plan_deploy(&shop, &web, &r(release)).await.unwrap();
        texts.push(plan.to_string());
        texts.push(serde_json::to_string(&plan).unwrap());
        texts.push(format!("{:?}", phoenix.apply(plan).await));
    }
    cloud.set_faults(Faults {
        bad_releases: [r("v3")].into_iter().collect(),
        ..Faults::none()
    });
    let plan = phoenix.plan_deploy(&shop, &web, &r("v3")).await.unwrap();
    let err = phoenix.apply(plan).await.unwrap_err();
    texts.push(format!("{err} {err:?}"));
    while let Ok(e) = rx.try_recv() {
        texts.push(serde_json::to_string(&e).unwrap());
        texts.push(format!("{e:?}"));
    }
    for (key, value) in cloud.store().inner().dump() {
        texts.push(key);
        texts.push(String::from_utf8_lossy(&value).into_owned());
    }
    let _ = capture.clone().flush();
    texts.push(String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned());
    assert!(
        texts.iter().map(String::len).sum::<usize>() > 10_000,
        "we looked at real output"
    );
    for t in &texts {
        assert!(
            !t.contains(CANARY),
            "the canary leaked into: {}",
            &t[..t.len().min(300)]
        );
    }
    // Positive control: the canary does reach the server of its environment.
    let payload = phoenix_core::ports::BootConfig::render(
        &SimBootConfig::default().with_secret("prod".parse().unwrap(), "DB_PASSWORD", CANARY),
        &phoenix_core::ports::BootContext {
            deployment: shop.clone(),
            environment: "prod".parse().unwrap(),
            role: web.clone(),
            release: r("v1"),
            image: "img-0001".parse().unwrap(),
            pool: "p".parse().unwrap(),
            server_name: "s".into(),
            index: 0,
        },
        phoenix_core::ports::BootFormat::Local,
    )
    .await
    .unwrap();
    let phoenix_core::ports::BootPayload::Local { env, .. } = payload else {
        panic!("local payload")
    };
    use secrecy::ExposeSecret;
    assert_eq!(env["DB_PASSWORD"].expose_secret(), CANARY);
}

#[allow(dead_code)]
fn _step_error_is_public(e: StepError) -> String {
    e.chain()
}
