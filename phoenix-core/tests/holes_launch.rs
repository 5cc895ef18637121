//! The holes the safety review found in launching, terminating and
//! resuming (issue 11: holes 3, 4, 5, 6, 7, 12, 14 and the launch-answer
//! check of 17), one test each, refereed on the simulated world's ground
//! truth. `scripts/mutate-guards` removes each guard and shows its test
//! failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{custom_plan, edit_pool, live, r, world, world_with};
use phoenix_core::events::Outcome;
use phoenix_core::id::{IdempotencyToken, ServerId};
use phoenix_core::labels::Labels;
use phoenix_core::model::{DiscardedServer, LostLaunch, Slot, SlotState};
use phoenix_core::ops::ReconcileOptions;
use phoenix_core::plan::Step;
use phoenix_core::ports::{
    BootPayload, Compute, ComputeCapabilities, LaunchRequest, PortError, StateStore,
};
use phoenix_core::sim::{CrashOn, CrashPoint, Faults, SimBootConfig, SimCloud, SimConfig};

/// Launches a server the way Phoenix would have for `slot` of `pool`
/// (same labels and token), outside Phoenix: a launch whose answer was
/// lost.
async fn lost_launch(
    w: &common::World,
    pool: &phoenix_core::id::PoolId,
    slot: u32,
    token: &IdempotencyToken,
) -> ServerId {
    let image = w.cloud.certified_image("web", "lost");
    let labels = Labels::for_server(
        &w.shop,
        &"prod".parse().unwrap(),
        &w.web,
        &r("v1"),
        pool,
        slot,
        token,
    );
    w.cloud
        .compute()
        .launch(&[LaunchRequest {
            name: format!("{pool}-{slot}"),
            image: image.id,
            flavor: None,
            boot: BootPayload::Local {
                files: vec![],
                env: Default::default(),
            },
            labels,
            token: token.clone(),
        }])
        .await
        .remove(0)
        .unwrap()
        .id
}

/// Hole 3: a terminate that lists by token while the provider still lags
/// must not conclude that the server does not exist: "not found" inside
/// the consistency window is unknown.
#[tokio::test(start_paused = true)]
async fn hole_03_terminate_waits_out_the_consistency_window() {
    let w = world(SimConfig::default(), 2).await;
    w.deploy("v1").await;
    let v1 = live(&w).await;
    // A slot whose launch answer was lost: requested just now, and its
    // server is not listed for another 20 seconds.
    let op = phoenix_core::id::OperationId::new("op-lost").unwrap();
    let mut slot = Slot::pending(&op, &v1, 5, None);
    slot.state = SlotState::Requested;
    slot.requested_at = Some(w.cloud.now());
    let token = slot.token.clone();
    edit_pool(&w, &v1, |p| p.add_slot(slot)).await;
    w.cloud.set_faults(Faults {
        not_found_after_launch: 1.0,
        ..Faults::none()
    });
    let server = lost_launch(&w, &v1, 5, &token).await;
    w.cloud.set_faults(Faults::none());
    let plan = custom_plan(
        &w,
        vec![Step::Terminate {
            pool: v1,
            slots: vec![5],
        }],
    )
    .await;
    w.apply(plan).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(
        !w.cloud.servers().iter().any(|s| s.id == server),
        "the server that appeared late was terminated, not leaked"
    );
}

/// Hole 4: a server the records call terminated but that lives on (the
/// provider answered "not found" before it listed it) is nobody's: an
/// orphan that reconcile reports and removes, not a server owned forever.
#[tokio::test(start_paused = true)]
async fn hole_04_a_server_recorded_terminated_that_lives_on_is_an_orphan() {
    let w = world(SimConfig::default(), 2).await;
    w.deploy("v1").await;
    let v1 = live(&w).await;
    let token = IdempotencyToken::new("late-one").unwrap();
    let server = lost_launch(&w, &v1, 9, &token).await;
    edit_pool(&w, &v1, |p| {
        p.discarded.push(DiscardedServer {
            server: server.clone(),
            slot: 9,
            attempt: 0,
            reason: "stuck in BUILD".into(),
            terminated: true,
            endpoint: None,
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (report, plan) = w
        .phoenix
        .plan_reconcile(
            &w.shop,
            &w.web,
            ReconcileOptions {
                remove_orphans: true,
                ..ReconcileOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(report.orphans.contains(&server), "{report}");
    w.apply(plan).await;
    assert!(!w.cloud.servers().iter().any(|s| s.id == server));
}

/// Hole 5a: on a provider that does not de-duplicate, a token is never
/// sent twice: once the consistency window passed without an answer, the
/// slot gets a new token and the old one is remembered, so a server that
/// appears later still is terminated.
#[tokio::test(start_paused = true)]
async fn hole_05_a_token_is_never_sent_twice_to_a_provider_that_does_not_deduplicate() {
    // Servers the provider lists late are replaced like any other failure:
    // a budget that lets the step ride them out.
    let w = world_with(SimConfig::default(), 3, |mut p| {
        p.provision.replace_budget = 20;
        p
    })
    .await;
    w.cloud.strict();
    w.cloud.set_faults(Faults {
        lost_response: 0.6,
        lag_beyond_window: 0.5,
        ..Faults::none()
    });
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v1"))
        .await
        .unwrap();
    w.apply(plan).await;
    w.cloud.set_faults(Faults::none());
    tokio::time::sleep(Duration::from_secs(600)).await;
    let (_, plan) = w
        .phoenix
        .plan_reconcile(
            &w.shop,
            &w.web,
            ReconcileOptions {
                remove_orphans: true,
                ..ReconcileOptions::default()
            },
        )
        .await
        .unwrap();
    w.apply(plan).await;
    assert_eq!(w.cloud.servers().len(), 3, "late servers were removed");
    assert!(w.cloud.stats().faults_injected > 0);
    w.assert_no_violations();
}

/// Hole 5b: on a provider that de-duplicates by token (EC2's ClientToken),
/// a token sent again must carry the payload it was first sent with. A
/// payload rendered again after a crash (a secret rotated since) would be
/// refused as a mismatch and orphan the first server: the slot gets a new
/// token instead, and the first server is found by its old one.
#[tokio::test(start_paused = true)]
async fn hole_05_a_payload_rendered_again_is_never_sent_under_the_old_token() {
    let cloud = SimCloud::new(SimConfig {
        idempotent_launch: true,
        ..SimConfig::default()
    })
    .with_boot(
        SimBootConfig::default()
            .with_secret("prod".parse().unwrap(), "DB_PASSWORD", "s3cret")
            .rotating(Duration::from_secs(10)),
    );
    let phoenix = cloud
        .phoenix()
        .lease_ttl(Duration::from_secs(10))
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
    // The orchestrator dies right after its launch call, before it
    // records the servers it got; the answers were lost anyway, and the
    // provider does not list them for a while.
    cloud.set_faults(Faults {
        lost_response: 1.0,
        lag_beyond_window: 1.0,
        ..Faults::none()
    });
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v1"))
        .await
        .unwrap();
    cloud.store().arm(CrashPoint {
        commit: 1,
        after_write: false,
        on: CrashOn::After("launch_requested"),
    });
    let crashed = cloud.store().crashed();
    tokio::select! {
        biased;
        _ = crashed.notified() => {}
        r = w.phoenix.apply(plan) => panic!("finished without crashing: {r:?}"),
    }
    cloud.store().disarm();
    cloud.set_faults(Faults::none());
    // Past the dead orchestrator's lease, and past a secret rotation.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let next = cloud.phoenix_as("successor").build().unwrap();
    let report = next.resume(&w.shop).await.unwrap().unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded);
    let history = cloud
        .store()
        .inner()
        .events("deployments/shop", 0, usize::MAX)
        .await
        .unwrap();
    let mismatches = history
        .iter()
        .filter(|e| String::from_utf8_lossy(&e.payload).contains("different parameters"))
        .count();
    assert_eq!(mismatches, 0, "no token was sent with another payload");
    let relaunched = history
        .iter()
        .filter(|e| String::from_utf8_lossy(&e.payload).contains("payload changed"))
        .count();
    assert!(
        relaunched > 0,
        "the re-rendered payload went out under new tokens"
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
    let (report, plan) = next
        .plan_reconcile(
            &w.shop,
            &w.web,
            ReconcileOptions {
                remove_orphans: true,
                ..ReconcileOptions::default()
            },
        )
        .await
        .unwrap();
    next.apply(plan).await.unwrap();
    assert_eq!(cloud.servers().len(), 2, "{report}");
    w.assert_no_violations();
}

/// Hole 6: a step that failed must never run again after a crash or a
/// store failure: its failure is committed with the start of its
/// rollback, in one write.
#[tokio::test(start_paused = true)]
async fn hole_06_a_resumed_operation_never_retries_its_failed_step() {
    let w = world(SimConfig::default(), 2).await;
    w.deploy("v1").await;
    // v2's smoke test is flaky: it fails now, would pass the next time.
    w.cloud.set_faults(Faults {
        flaky_smoke: 1.0,
        ..Faults::none()
    });
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v2"))
        .await
        .unwrap();
    // The orchestrator dies right after the failure is written.
    w.cloud.store().arm(CrashPoint {
        commit: 1,
        after_write: true,
        on: CrashOn::Event("step_failed"),
    });
    let crashed = w.cloud.store().crashed();
    tokio::select! {
        biased;
        _ = crashed.notified() => {}
        r = w.phoenix.apply(plan) => panic!("finished without crashing: {r:?}"),
    }
    w.cloud.store().disarm();
    w.cloud.set_faults(Faults::none());
    tokio::time::sleep(Duration::from_secs(120)).await;
    let next = w.cloud.phoenix_as("successor").build().unwrap();
    let err = next.resume(&w.shop).await.unwrap_err();
    let report = err.report().expect("it ran");
    assert_ne!(report.outcome, Outcome::Succeeded, "{err}");
    assert_eq!(w.serving().await.get("v1"), Some(&2));
    assert_eq!(w.serving().await.get("v2"), None);
}

/// Holes 7 and 12: calls that hang (far longer than the lease) are cut at
/// their deadline and retried; no call of an orchestrator goes out without
/// its lease, and the operation ends in bounded time.
#[tokio::test(start_paused = true)]
async fn hole_07_12_hung_calls_are_cut_before_the_lease_could_lapse() {
    let w = world(SimConfig::default(), 3).await;
    w.cloud.strict();
    w.cloud.set_faults(Faults {
        hang: 0.3,
        ..Faults::none()
    });
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v1"))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(3 * 3600), w.phoenix.apply(plan))
        .await
        .expect("it ends within hours, not at the hangs' pace");
    w.cloud.set_faults(Faults::none());
    assert!(w.cloud.stats().faults_injected > 0, "calls hung");
    println!(
        "{:?} after {:?}",
        result.as_ref().map(|r| r.outcome),
        started.elapsed()
    );
    w.assert_no_violations();
}

/// Hole 12: the launch replacement budget is the step's, as the policy
/// says (see also `invariant_7`): stuck servers in several slots share it.
#[tokio::test(start_paused = true)]
async fn hole_12_the_replacement_budget_is_per_step() {
    let w = world_with(SimConfig::default(), 4, |mut p| {
        p.provision.replace_budget = 2;
        p
    })
    .await;
    w.cloud.set_faults(Faults {
        stuck_in_build: 1.0,
        ..Faults::none()
    });
    let plan = w
        .phoenix
        .plan_deploy(&w.shop, &w.web, &r("v1"))
        .await
        .unwrap();
    let err = w.phoenix.apply(plan).await.unwrap_err();
    assert!(err.to_string().contains("its whole budget"), "{err}");
    assert!(
        w.cloud.stats().servers_launched <= 4 + 2,
        "{} launched",
        w.cloud.stats().servers_launched
    );
}

/// Hole 14: a server's age is the first time it was seen; a provider that
/// reports a start as a new launch (EC2) never makes it younger, so a
/// refresh still replaces it.
#[tokio::test(start_paused = true)]
async fn hole_14_age_never_moves_forward() {
    let w = world_with(SimConfig::default(), 2, |mut p| {
        p.retention.keep = 1;
        p.retention.hot = 0;
        p.refresh.max_age = Duration::from_secs(3 * 3600);
        p
    })
    .await;
    w.cloud.set_faults(Faults {
        start_resets_launch_time: true,
        ..Faults::none()
    });
    w.deploy("v1").await;
    w.deploy("v2").await;
    // v1 becomes a cold standby (stopped), then serves again after a
    // rollback: its servers were started, and their provider launch time
    // reset.
    let plan = w.phoenix.plan_reap(&w.shop, &w.web).await.unwrap();
    w.apply(plan).await;
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    let plan = w
        .phoenix
        .plan_rollback(&w.shop, &w.web, None)
        .await
        .unwrap();
    w.apply(plan).await;
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    let v1 = snap.live_pool(&w.web).unwrap().clone();
    assert_eq!(v1.release, r("v1"));
    for s in v1.in_service() {
        let id = s.server.clone().unwrap();
        let reported = w
            .cloud
            .servers()
            .into_iter()
            .find(|x| x.id == id)
            .and_then(|x| x.launched_at)
            .unwrap();
        let first = s.launched_at.unwrap();
        assert!(
            first < reported,
            "slot {} keeps its first launch ({first}), not the start ({reported})",
            s.index
        );
    }
    tokio::time::sleep(Duration::from_secs(3600 + 600)).await;
    // v1's servers are now over three hours old.
    let plan = w.phoenix.plan_refresh(&w.shop, &w.web).await.unwrap();
    assert!(
        plan.steps
            .iter()
            .any(|s| matches!(s, Step::AddSlots { pool, .. } if *pool == v1.id)),
        "the refresh replaces the serving v1 servers: {plan}"
    );
}

/// Hole 17: launch answers are matched to requests only when there is one
/// per request; otherwise the outcome is unknown and tokens tell.
#[tokio::test(start_paused = true)]
async fn hole_17_launch_answers_that_do_not_match_requests_are_not_trusted() {
    let cloud = SimCloud::new(SimConfig::default());
    let phoenix = cloud
        .phoenix()
        .compute(Arc::new(LastAnswerOnly(cloud.compute())) as Arc<dyn Compute>)
        .build()
        .unwrap();
    let (shop, web) = cloud.demo_deployment(&phoenix, 3).await.unwrap();
    let plan = phoenix.plan_deploy(&shop, &web, &r("v1")).await.unwrap();
    phoenix.apply(plan).await.unwrap();
    let snap = phoenix.snapshot(&shop).await.unwrap();
    let pool = snap.live_pool(&web).unwrap();
    for s in pool.in_service() {
        let server = cloud
            .servers()
            .into_iter()
            .find(|x| Some(&x.id) == s.server.as_ref())
            .unwrap();
        assert_eq!(
            server.labels.token().as_ref(),
            Some(&s.token),
            "slot {} holds the server launched with its token",
            s.index
        );
    }
    assert_eq!(cloud.servers().len(), 3, "one server per slot");
}

/// A buggy adapter: it launches every request of a batch but answers for
/// the last one only (an answer the executor must not give to the first).
struct LastAnswerOnly(Arc<phoenix_core::sim::SimCompute>);

#[async_trait::async_trait]
impl Compute for LastAnswerOnly {
    fn capabilities(&self) -> ComputeCapabilities {
        ComputeCapabilities {
            max_launch_batch: 10,
            ..self.0.capabilities()
        }
    }
    async fn launch(
        &self,
        requests: &[LaunchRequest],
    ) -> Vec<Result<phoenix_core::model::Server, PortError>> {
        self.0
            .launch(requests)
            .await
            .into_iter()
            .skip(requests.len().saturating_sub(1))
            .collect()
    }
    async fn describe(
        &self,
        ids: &[ServerId],
    ) -> Result<Vec<phoenix_core::model::Server>, PortError> {
        self.0.describe(ids).await
    }
    async fn list(
        &self,
        selector: &phoenix_core::labels::LabelSelector,
    ) -> Result<Vec<phoenix_core::model::Server>, PortError> {
        self.0.list(selector).await
    }
    async fn stop(&self, id: &ServerId) -> Result<(), PortError> {
        self.0.stop(id).await
    }
    async fn start(&self, id: &ServerId) -> Result<(), PortError> {
        self.0.start(id).await
    }
    async fn terminate(&self, id: &ServerId) -> Result<(), PortError> {
        self.0.terminate(id).await
    }
}

/// Seeds 10916, 27097, 39798 and 42469 of 100,000: a token given up after
/// it went out (its payload changed across a crash) was looked for only
/// while its consistency window was open. A step that ended after the
/// window never listed the pool again, so the server that had appeared
/// for the old token meanwhile ran on, held by nobody, until a reconcile.
#[tokio::test(start_paused = true)]
async fn a_token_given_up_is_looked_for_once_its_window_has_passed() {
    let w = world(SimConfig::default(), 2).await;
    w.deploy("v1").await;
    let v1 = live(&w).await;
    // Slot 0's first token was given up a while ago, its server not yet
    // listed then; its window (the call's timeout and the provider's
    // consistency window) has passed, and the server is listed now.
    let token = IdempotencyToken::new("given-up").unwrap();
    let server = lost_launch(&w, &v1, 0, &token).await;
    let window =
        w.cloud.compute().capabilities().consistency_window + w.cloud.policy().calls.timeout;
    let requested_at = w.cloud.now() - (window + Duration::from_secs(30));
    edit_pool(&w, &v1, |p| {
        p.lost.push(LostLaunch {
            slot: 0,
            attempt: 0,
            token: token.clone(),
            requested_at: Some(requested_at),
        })
    })
    .await;
    let plan = custom_plan(&w, vec![Step::CleanUpDiscarded { pool: v1.clone() }]).await;
    w.apply(plan).await;
    assert!(
        !w.cloud.servers().iter().any(|s| s.id == server),
        "the server of a given-up token is terminated once it shows"
    );
    let snap = w.phoenix.snapshot(&w.shop).await.unwrap();
    assert!(
        snap.pools[&v1].value.lost.is_empty(),
        "the token is settled"
    );
}

/// Seed 27097 of 100,000: a slow launch call took effect a while after
/// it was sent, its answer was lost, and the provider listed the server
/// within its window of making it, but after the window counted from the
/// request: the launch was given up as never made while its server was
/// about to show. A request's window now also covers the call's timeout.
#[tokio::test(start_paused = true)]
async fn a_slow_launch_whose_answer_was_lost_is_not_given_up_before_it_can_show() {
    let w = world(SimConfig::default(), 2).await;
    w.deploy("v1").await;
    let v1 = live(&w).await;
    let window = w.cloud.compute().capabilities().consistency_window;
    let timeout = w.cloud.policy().calls.timeout;
    assert!(
        timeout > window / 2,
        "a call may outlast part of the window"
    );
    // A token sent a window and a bit ago, given up on; its call took
    // effect only now (within the call's timeout), and the provider will
    // list the server within its window of now.
    let token = IdempotencyToken::new("slow-one").unwrap();
    let requested_at = w.cloud.now() - (window + timeout / 4);
    edit_pool(&w, &v1, |p| {
        p.lost.push(LostLaunch {
            slot: 0,
            attempt: 0,
            token: token.clone(),
            requested_at: Some(requested_at),
        })
    })
    .await;
    w.cloud.set_faults(Faults {
        not_found_after_launch: 1.0,
        ..Faults::none()
    });
    let server = lost_launch(&w, &v1, 0, &token).await;
    w.cloud.set_faults(Faults::none());
    let plan = custom_plan(&w, vec![Step::CleanUpDiscarded { pool: v1.clone() }]).await;
    w.apply(plan).await;
    tokio::time::sleep(window * 2).await;
    assert!(
        !w.cloud.servers().iter().any(|s| s.id == server),
        "the slow launch's server is found and terminated, not forgotten"
    );
}
