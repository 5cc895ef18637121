//! Planned failures on the simulated cloud, under the paused clock: the
//! floor, one failure domain at a time, heal restoring the pool, and
//! seeded determinism.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{world, world_with, World};
use phoenix_core::chaos::{ChaosDrill, ChaosError, ChaosTarget, DrillReport, FailureKind};
use phoenix_core::model::Server;
use phoenix_core::policy::Capacity;
use phoenix_core::ports::PortError;
use phoenix_core::sim::{SimCloud, SimConfig};

async fn live_world(size: usize) -> World {
    let w = world(SimConfig::default(), size).await;
    w.deploy("v1").await;
    w
}

fn healthy_live(w: &World) -> usize {
    w.cloud
        .members()
        .iter()
        .filter(|m| m.is_serving_healthy())
        .count()
}

#[tokio::test(start_paused = true)]
async fn heal_restores_the_pool_after_every_kill_and_times_are_reported() {
    let w = live_world(3).await;
    let drill = ChaosDrill::kills(11, 3).min_healthy(Capacity::Absolute(2));
    let report = w
        .phoenix
        .chaos_drill(&w.shop, &w.web, &drill, &w.cloud)
        .await
        .unwrap();
    assert_eq!(report.failures.len(), 3, "{report}");
    for f in &report.failures {
        assert_eq!(f.victims.len(), 1);
        assert!(f.time_to_detect > Duration::ZERO, "{report}");
        assert!(f.time_to_restore > f.time_to_detect, "{report}");
        assert!(!f.heals.is_empty(), "heal ran: {report}");
        assert_eq!(f.healthy_before, 3);
        assert_eq!(f.floor, 2);
        // The victim is gone from the balancer and the cloud.
        assert!(w.cloud.members().iter().all(|m| m.server != f.victims[0]));
        assert!(w.cloud.servers().iter().all(|s| s.id != f.victims[0]));
    }
    assert_eq!(healthy_live(&w), 3);
    assert_eq!(w.serving().await.get("v1"), Some(&3));
    w.assert_no_violations();
    // The report is JSON for machines.
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["failures"][0]["time_to_detect_ms"].as_u64().unwrap() > 0);
    let back: DrillReport = serde_json::from_value(json).unwrap();
    assert_eq!(back.failures.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_floor_forbids_a_failure_and_nothing_is_injected() {
    // The sim's policy keeps min_healthy at 100%: no planned loss at all.
    let w = live_world(3).await;
    let drill = ChaosDrill::kills(1, 2);
    let halted = w
        .phoenix
        .chaos_drill(&w.shop, &w.web, &drill, &w.cloud)
        .await
        .unwrap_err();
    assert!(
        matches!(
            halted.error,
            ChaosError::FloorWouldBreak {
                healthy: 3,
                victims: 1,
                floor: 3,
                ..
            }
        ),
        "{:?}",
        halted.error
    );
    assert!(halted.report.failures.is_empty());
    assert!(
        w.cloud.truth().iter().all(|t| t.alive),
        "nothing was killed"
    );

    // Two victims at once under a floor of 2 of 3: refused as well.
    let drill = ChaosDrill::kills(1, 1)
        .min_healthy(Capacity::Absolute(2))
        .victims_per_failure(2);
    let halted = w
        .phoenix
        .chaos_drill(&w.shop, &w.web, &drill, &w.cloud)
        .await
        .unwrap_err();
    assert!(matches!(
        halted.error,
        ChaosError::FloorWouldBreak { victims: 2, .. }
    ));
    assert!(
        w.cloud.truth().iter().all(|t| t.alive),
        "nothing was killed"
    );
    assert_eq!(healthy_live(&w), 3);
}

/// The simulated cloud with two failure domains (by slot parity), and a
/// log of every injection.
struct Zoned {
    cloud: SimCloud,
    injected: Arc<Mutex<Vec<(String, tokio::time::Instant)>>>,
}

fn zone(server: &Server) -> String {
    match server.labels.slot() {
        Some(i) if i % 2 == 0 => "zone-a".into(),
        Some(_) => "zone-b".into(),
        None => "none".into(),
    }
}

#[async_trait]
impl ChaosTarget for Zoned {
    fn name(&self) -> &str {
        "zoned simulation"
    }
    async fn inject(&self, server: &Server, kind: FailureKind) -> Result<(), PortError> {
        self.injected
            .lock()
            .unwrap()
            .push((zone(server), tokio::time::Instant::now()));
        self.cloud.inject(server, kind).await
    }
    fn domain(&self, server: &Server, _key: &str) -> String {
        zone(server)
    }
}

#[tokio::test(start_paused = true)]
async fn victims_of_a_failure_share_one_domain_and_failures_never_overlap() {
    let w = world_with(SimConfig::default(), 6, |mut p| {
        p.rollout.batch_size = 2;
        p
    })
    .await;
    w.deploy("v1").await;
    let target = Zoned {
        cloud: w.cloud.clone(),
        injected: Arc::default(),
    };
    let drill = ChaosDrill::kills(5, 4)
        .victims_per_failure(2)
        .min_healthy(Capacity::Absolute(4));
    let report = w
        .phoenix
        .chaos_drill(&w.shop, &w.web, &drill, &target)
        .await
        .unwrap();
    assert_eq!(report.failures.len(), 4, "{report}");
    let injected = target.injected.lock().unwrap().clone();
    assert_eq!(injected.len(), 8);
    for (f, pair) in report.failures.iter().zip(injected.chunks(2)) {
        assert_eq!(f.victims.len(), 2);
        assert_eq!(pair[0].0, pair[1].0, "one domain per failure");
        assert_eq!(pair[0].0, f.domain);
    }
    for pair in report.failures.windows(2) {
        assert!(
            pair[0].restored_at <= pair[1].injected_at,
            "a failure starts after the previous one is restored: {report}"
        );
    }
    assert_eq!(healthy_live(&w), 6);
    w.assert_no_violations();
}

async fn victims_of(seed: u64) -> (Vec<String>, Vec<Duration>) {
    let w = live_world(4).await;
    let drill = ChaosDrill::kills(seed, 3).min_healthy(Capacity::Percent(75));
    let report = w
        .phoenix
        .chaos_drill(&w.shop, &w.web, &drill, &w.cloud)
        .await
        .unwrap();
    let slots = report
        .failures
        .iter()
        .map(|f| f.victims[0].to_string())
        .collect();
    let times = report.failures.iter().map(|f| f.time_to_restore).collect();
    (slots, times)
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_fails_the_same_servers_in_the_same_times() {
    let a = victims_of(42).await;
    let b = victims_of(42).await;
    assert_eq!(a, b);
    assert_eq!(a.0.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_host_is_seen_and_replaced() {
    let w = live_world(3).await;
    let drill = ChaosDrill::kills(3, 2)
        .kind(FailureKind::Stop)
        .min_healthy(Capacity::Absolute(2));
    let report = w
        .phoenix
        .chaos_drill(&w.shop, &w.web, &drill, &w.cloud)
        .await
        .unwrap();
    assert_eq!(report.failures.len(), 2);
    assert!(report.failures.iter().all(|f| f.kind == FailureKind::Stop));
    assert_eq!(healthy_live(&w), 3);
    w.assert_no_violations();
}

#[tokio::test(start_paused = true)]
async fn a_restore_past_its_deadline_halts_the_drill() {
    let w = live_world(3).await;
    let drill = ChaosDrill::kills(3, 5)
        .min_healthy(Capacity::Absolute(2))
        .deadlines(Duration::from_secs(60), Duration::from_millis(1));
    let halted = w
        .phoenix
        .chaos_drill(&w.shop, &w.web, &drill, &w.cloud)
        .await
        .unwrap_err();
    assert!(
        matches!(halted.error, ChaosError::RestoreDeadline { failure: 1, .. }),
        "{:?}",
        halted.error
    );
    assert!(halted.report.failures.is_empty());
    assert!(halted.to_string().contains("after 0 of 5"), "{halted}");
}

fn caps(stop_start: bool) -> phoenix_core::ports::ComputeCapabilities {
    phoenix_core::ports::ComputeCapabilities {
        max_launch_batch: 1,
        max_describe_batch: 10,
        max_terminate_batch: 1,
        stop_start,
        idempotent_launch: false,
        consistency_window: Duration::ZERO,
        boot_format: phoenix_core::ports::BootFormat::CloudInit,
    }
}

#[tokio::test]
async fn the_compute_target_terminates_for_a_kill_and_stops_only_where_it_can() {
    use phoenix_core::chaos::ComputeTarget;
    use phoenix_core::ports::MockCompute;

    let server = Server {
        id: "srv-1".parse().unwrap(),
        name: "web-1".into(),
        addresses: Vec::new(),
        service_port: None,
        status: phoenix_core::model::ServerStatus::Active,
        launched_at: None,
        image: None,
        labels: phoenix_core::labels::Labels::new(),
    };
    let mut m = MockCompute::new();
    m.expect_terminate().times(1).returning(|_| Ok(()));
    m.expect_stop().times(1).returning(|_| Ok(()));
    m.expect_capabilities().returning(|| caps(true));
    let target = ComputeTarget::new(Arc::new(m));
    target.inject(&server, FailureKind::Kill).await.unwrap();
    target.inject(&server, FailureKind::Stop).await.unwrap();
    assert_eq!(target.domain(&server, "zone"), "unlabelled");

    let mut m = MockCompute::new();
    m.expect_stop().never();
    m.expect_capabilities().returning(|| caps(false));
    let target = ComputeTarget::new(Arc::new(m));
    let e = target.inject(&server, FailureKind::Stop).await.unwrap_err();
    assert!(e.to_string().contains("cannot stop"), "{e}");
}
