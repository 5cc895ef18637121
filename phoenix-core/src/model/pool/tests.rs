//! Pool and slot records: transitions, attempts, pruning, their JSON.

use super::*;
use crate::time::{Clock, TokioClock};

fn pool() -> Pool {
    let op = OperationId::new("op").unwrap();
    let id = PoolId::new("web-v1-1").unwrap();
    Pool {
        slots: (0..3).map(|i| Slot::pending(&op, &id, i, None)).collect(),
        next_slot: 3,
        pruned_slots: 0,
        id,
        deployment: DeploymentId::new("shop").unwrap(),
        environment: EnvironmentName::new("prod").unwrap(),
        role: RoleName::new("web").unwrap(),
        release: ReleaseLabel::new("v1").unwrap(),
        image: ImageId::new("img").unwrap(),
        state: PoolState::Provisioning,
        size: 3,
        created_at: TokioClock::fixed().now(),
        created_by: op,
        discarded: vec![],
        lost: vec![],
        last_live: None,
        left_live: None,
        history: vec![],
    }
}

#[tokio::test]
async fn illegal_transitions_are_typed_errors() {
    let now = TokioClock::fixed().now();
    let mut p = pool();
    let err = p.transition(PoolState::Live, now).unwrap_err();
    assert_eq!(err.from, "provisioning");
    assert_eq!(err.to, "live");
    assert_eq!(p.state, PoolState::Provisioning, "state untouched");
    p.transition(PoolState::Verifying, now).unwrap();
    p.transition(PoolState::Ready, now).unwrap();
    p.transition(PoolState::Live, now).unwrap();
    p.transition(PoolState::HOT, now).unwrap();
    p.transition(PoolState::COLD, now).unwrap();
    assert!(
        p.transition(PoolState::Live, now).is_err(),
        "cold must start first"
    );
    p.transition(PoolState::HOT, now).unwrap();
    p.transition(PoolState::Live, now).unwrap();
    assert_eq!(p.last_live_at(), Some(now));
    p.transition(PoolState::Retired, now).unwrap();
    p.transition(PoolState::Deleted, now).unwrap();
    assert!(p.transition(PoolState::Live, now).is_err());
    assert!(p.history.is_empty(), "the event log keeps the changes");
    assert_eq!(p.last_live_at(), Some(now));
}

#[tokio::test]
async fn an_old_records_history_is_folded_at_its_next_change() {
    let clock = TokioClock::fixed();
    let then = clock.now();
    let mut p = pool();
    p.state = PoolState::HOT;
    p.history = vec![
        PoolTransition {
            from: PoolState::Ready,
            to: PoolState::Live,
            at: then,
        },
        PoolTransition {
            from: PoolState::Live,
            to: PoolState::HOT,
            at: then,
        },
    ];
    // A record written before `last_live` existed.
    let mut json = serde_json::to_value(&p).unwrap();
    json.as_object_mut().unwrap().remove("last_live");
    let mut p: Pool = serde_json::from_value(json).unwrap();
    assert_eq!(p.last_live_at(), Some(then), "read from the old list");
    p.transition(PoolState::COLD, then).unwrap();
    assert!(p.history.is_empty());
    assert_eq!(p.last_live_at(), Some(then), "kept");
}

#[test]
fn slots_leave_out_defaults_and_read_back_whole() {
    let op = OperationId::new("op").unwrap();
    let id = PoolId::new("web-v1-1").unwrap();
    let fresh = Slot::pending(&op, &id, 4, None);
    let json = serde_json::to_value(&fresh).unwrap();
    for absent in [
        "relaunches",
        "payload",
        "warmed",
        "drained",
        "replaces",
        "last_failure",
    ] {
        assert!(json.get(absent).is_none(), "{absent} in {json}");
    }
    assert_eq!(serde_json::from_value::<Slot>(json).unwrap(), fresh);
    let mut used = Slot::pending(&op, &id, 5, Some(1));
    (used.relaunches, used.payload) = (2, Some("abc".into()));
    (used.warmed, used.drained) = (true, true);
    let json = serde_json::to_string(&used).unwrap();
    assert_eq!(serde_json::from_str::<Slot>(&json).unwrap(), used);
}

#[tokio::test]
async fn new_attempt_gets_new_token() {
    let mut p = pool();
    let op = OperationId::new("op").unwrap();
    let id = p.id.clone();
    let slot = p.slot_mut(1).unwrap();
    let first = slot.token.clone();
    slot.next_attempt(&op, &id, "stuck in BUILD".into());
    assert_eq!(slot.attempt, 1);
    assert_ne!(slot.token, first);
    assert_eq!(p.next_index(), 3);
}

#[tokio::test]
async fn pruning_never_reuses_indices() {
    let mut p = pool();
    p.slot_mut(2).unwrap().state = SlotState::Terminated;
    p.slot_mut(0).unwrap().state = SlotState::Terminated;
    assert_eq!(p.prune_terminated(), 2);
    assert_eq!(p.slots.len(), 1);
    assert_eq!(p.next_index(), 3, "index 2 stays used");
    assert!(p.was_pruned(2) && p.was_pruned(0) && !p.was_pruned(1) && !p.was_pruned(3));
    let op = OperationId::new("op").unwrap();
    let id = p.id.clone();
    p.add_slot(Slot::pending(&op, &id, 3, Some(2)));
    assert_eq!(p.next_index(), 4);
}
