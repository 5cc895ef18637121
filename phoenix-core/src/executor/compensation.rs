//! What a failed operation does next, computed from the plan and the
//! records at the moment of failure (and journaled, so a crash during the
//! rollback resumes the same steps).
//!
//! With a pool to restore, it is first brought back to full capacity
//! behind the balancer (invariant 4), and only then do the pools the plan
//! created or touched leave it. Without one, nothing serving is touched;
//! only servers that never served are cleaned up.

use std::collections::BTreeSet;

use crate::id::PoolId;
use crate::model::{Pool, PoolState, Traffic};
use crate::ops;
use crate::plan::{Plan, SlotRef, Step};
use crate::policy::FailurePolicy;
use crate::records::Snapshot;

/// The steps after a failure, and whether they restore the previous pool.
///
/// A canary that failed its gate (`failed` is a [`Step::Canary`]) is rolled
/// back whatever the policy says: its members leave once the live pool
/// serves, and the live pool is not touched otherwise.
pub(crate) fn compensation(
    plan: &Plan,
    snap: &Snapshot,
    failed: Option<&Step>,
) -> (Vec<Step>, bool) {
    let batch = plan.policy.rollout.batch_size.max(1);
    let keep_failed = plan.policy.rollout.keep_failed;
    let created: BTreeSet<PoolId> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::CreatePool { pool, .. } => Some(pool.clone()),
            _ => None,
        })
        .collect();
    let added: BTreeSet<(PoolId, u32)> = plan
        .steps
        .iter()
        .flat_map(|s| match s {
            Step::AddSlots { pool, slots } => {
                slots.iter().map(|n| (pool.clone(), n.index)).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    let touched: BTreeSet<PoolId> = plan
        .steps
        .iter()
        .filter_map(|s| s.pool().cloned())
        .collect();

    let canary_failed = matches!(failed, Some(Step::Canary { .. }));
    let on_failure = if canary_failed {
        FailurePolicy::Rollback
    } else {
        plan.on_failure
    };
    let restore = match (on_failure, &plan.restore) {
        (FailurePolicy::Rollback, Some(id)) => snap.pool(id).filter(|p| {
            matches!(
                p.state,
                PoolState::Live | PoolState::Ready | PoolState::Standby { .. }
            )
        }),
        _ => None,
    };

    let mut steps = Vec::new();
    let mut restored: Option<(PoolId, Vec<SlotRef>)> = None;
    if let Some(r) = restore {
        let refs = restore_steps(r, batch, &mut steps);
        restored = Some((r.id.clone(), refs));
    }

    for pool in snap.pools_of(&plan.role) {
        let is_restore = restored.as_ref().is_some_and(|(id, _)| id == &pool.id);
        // Rolled back means the restored pool alone serves: any other
        // pool of the role still behind the balancer (the target of a
        // halted replacement this plan continued without touching it)
        // leaves too, once the restored pool serves.
        let serves = pool.slots.iter().any(|s| s.traffic != Traffic::Out);
        let involved = created.contains(&pool.id)
            || touched.contains(&pool.id)
            || (restored.is_some() && serves);
        if is_restore || !involved {
            continue;
        }
        // Only with a restored pool serving may this one leave the balancer.
        let mut leaving: Vec<u32> = Vec::new();
        if let Some((_, replacements)) = &restored {
            let attached: Vec<u32> = pool
                .slots
                .iter()
                .filter(|s| s.traffic != Traffic::Out)
                .map(|s| s.index)
                .collect();
            for chunk in attached.chunks(batch) {
                steps.push(Step::Detach {
                    pool: pool.id.clone(),
                    slots: chunk.to_vec(),
                    replacements: replacements.clone(),
                });
            }
            if !attached.is_empty() {
                steps.push(Step::AwaitDrained {
                    pool: pool.id.clone(),
                    slots: attached.clone(),
                });
            }
            leaving = attached;
        }
        let out_after: Vec<u32> = pool
            .slots
            .iter()
            .filter(|s| s.state.is_in_service())
            .filter(|s| s.traffic == Traffic::Out || leaving.contains(&s.index))
            .map(|s| s.index)
            .collect();
        if created.contains(&pool.id) {
            // A pool that never got past verification is cleaned up; one
            // that failed later is kept for inspection when asked to.
            let never_served = matches!(pool.state, PoolState::Provisioning | PoolState::Verifying);
            if !keep_failed || never_served {
                push_terminations(&pool.id, &out_after, batch, &mut steps);
            }
            steps.push(Step::CleanUpDiscarded {
                pool: pool.id.clone(),
            });
            if pool.state != PoolState::Failed && !serving_stays(pool, &leaving) {
                steps.push(Step::SetPoolState {
                    pool: pool.id.clone(),
                    to: PoolState::Failed,
                });
            }
        } else {
            // An existing pool the plan touched: replacements it added that
            // never served are removed.
            let fresh: Vec<u32> = out_after
                .iter()
                .copied()
                .filter(|i| added.contains(&(pool.id.clone(), *i)))
                .collect();
            push_terminations(&pool.id, &fresh, batch, &mut steps);
            if pool.discarded.iter().any(|d| !d.terminated) {
                steps.push(Step::CleanUpDiscarded {
                    pool: pool.id.clone(),
                });
            }
            if restored.is_some() && pool.state == PoolState::Live {
                steps.push(Step::SetPoolState {
                    pool: pool.id.clone(),
                    to: PoolState::HOT,
                });
            }
        }
    }
    (steps, restored.is_some())
}

/// True when the pool keeps serving members after the rollback (then it
/// is not marked failed: a live pool with no pool to go back to stays).
fn serving_stays(pool: &Pool, leaving: &[u32]) -> bool {
    pool.slots
        .iter()
        .any(|s| s.traffic == Traffic::Attached && !leaving.contains(&s.index))
}

fn push_terminations(pool: &PoolId, slots: &[u32], batch: usize, steps: &mut Vec<Step>) {
    for chunk in slots.chunks(batch) {
        steps.push(Step::Terminate {
            pool: pool.clone(),
            slots: chunk.to_vec(),
        });
    }
}

/// Brings the pool back to `size` running, verified, attached, healthy
/// members (the same steps as a switch to it, with no bake: it served
/// before); returns them as the replacements the other pools wait for.
fn restore_steps(r: &Pool, batch: usize, steps: &mut Vec<Step>) -> Vec<SlotRef> {
    let (fill, all) = ops::fill_steps(r, batch);
    steps.extend(fill);
    // Every slot gets an attach step, even those recorded as attached: a
    // detach that failed part-way leaves members draining (HAProxy's DRAIN,
    // ELBv2's draining targets) that only an attach on the balancer's
    // fresh view brings back.
    let to_attach = all.clone();
    let state = if r.state == PoolState::COLD {
        PoolState::HOT
    } else {
        r.state
    };
    steps.extend(ops::expose_steps(
        &r.id,
        &all,
        &to_attach,
        batch,
        std::time::Duration::ZERO,
        state,
    ));
    ops::refs(&r.id, &all)
}
