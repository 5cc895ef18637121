//! Issue 16: the deployment's records (its header and its pools) stay the
//! same size however many operations run; the history of every operation
//! is in the event log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::world;
use phoenix_core::events::{Event, EventKind};
use phoenix_core::ports::StateStore;
use phoenix_core::sim::SimConfig;

/// Bytes of the deployment's header and pool records as stored.
async fn record_bytes(w: &common::World) -> usize {
    let store = w.cloud.store().inner();
    let header = store.get("deployments/shop").await.unwrap().unwrap();
    let pools = store.list("deployments/shop/pools/").await.unwrap();
    header.value.len() + pools.iter().map(|(_, v)| v.value.len()).sum::<usize>()
}

async fn roll_back(w: &common::World) {
    let plan = w
        .phoenix
        .plan_rollback(&w.shop, &w.web, None)
        .await
        .unwrap();
    w.apply(plan).await;
}

/// Deploys and rollbacks, alternately, flip two pools between live and
/// standby. After the first few operations the records must not grow:
/// every state change of every pool is an event, not an entry in the pool.
#[tokio::test(start_paused = true)]
async fn records_do_not_grow_with_operations() {
    let w = world(SimConfig::default(), 2).await;
    w.deploy("v1").await;
    w.deploy("v2").await;
    // Past the header's short list of recent operations.
    for _ in 0..40 {
        roll_back(&w).await;
    }
    let after_40 = record_bytes(&w).await;
    for _ in 0..60 {
        roll_back(&w).await;
    }
    let after_100 = record_bytes(&w).await;
    // Only counters may gain a digit (the generation: 3 → 4 digits).
    assert!(
        after_100 <= after_40 + 16,
        "the records grew from {after_40} to {after_100} bytes over 60 rollbacks"
    );
    // The history is in the event log: every rollback changed two pools.
    let events = w
        .cloud
        .store()
        .inner()
        .events("deployments/shop", 0, usize::MAX)
        .await
        .unwrap();
    let changes = events
        .iter()
        .map(|e| serde_json::from_slice::<Event>(&e.payload).unwrap())
        .filter(|e| matches!(e.kind, EventKind::PoolStateChanged { .. }))
        .count();
    assert!(changes >= 2 * 100, "{changes} pool state changes recorded");
    w.assert_no_violations();
}
