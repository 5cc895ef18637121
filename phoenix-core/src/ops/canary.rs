//! Where the canary stage goes in a deploy or a rolling replacement: right
//! before the new pool first takes traffic (its first attach, or its stage
//! for an atomic switch), once its servers are verified.

use crate::id::PoolId;
use crate::model::{Pool, Traffic};
use crate::plan::{SlotRef, Step};
use crate::policy::Policy;

/// The live members a canary is compared with: every slot of `live` pools
/// that takes traffic now.
pub(crate) fn baseline(live: &[&Pool]) -> Vec<SlotRef> {
    live.iter()
        .flat_map(|p| {
            p.slots
                .iter()
                .filter(|s| s.traffic == Traffic::Attached)
                .map(|s| SlotRef {
                    pool: p.id.clone(),
                    slot: s.index,
                })
        })
        .collect()
}

/// Inserts the canary stage for `pool` (attach the canary share, wait until
/// healthy, the gate) before the first step that gives the pool traffic,
/// when the policy has a canary section and there is a live baseline to
/// compare with. Returns a note for the plan when it did, or why not.
pub(crate) fn insert(
    steps: &mut Vec<Step>,
    pool: &PoolId,
    desired: usize,
    baseline: Vec<SlotRef>,
    policy: &Policy,
) -> Option<String> {
    let canary = policy.canary.as_ref()?;
    if baseline.is_empty() {
        return Some("no canary: nothing serves to compare it with".into());
    }
    let at = steps.iter().position(|s| match s {
        Step::Attach { pool: p, .. } | Step::Stage { pool: p, .. } => p == pool,
        _ => false,
    })?;
    let first: &[u32] = match &steps[at] {
        Step::Attach { slots, .. } | Step::Stage { slots, .. } => slots,
        _ => return None,
    };
    // The canary attach is one step: never more than the blast radius.
    let n = canary
        .share
        .resolve(desired)
        .min(policy.rollout.batch_size.max(1))
        .min(first.len());
    let slots: Vec<u32> = first.iter().take(n).copied().collect();
    if slots.is_empty() {
        return None;
    }
    let stage = [
        Step::Attach {
            pool: pool.clone(),
            slots: slots.clone(),
        },
        Step::AwaitHealthy {
            pool: pool.clone(),
            slots: slots.clone(),
        },
        Step::Canary {
            pool: pool.clone(),
            slots,
            baseline,
            window: canary.window,
        },
    ];
    steps.splice(at..at, stage);
    Some(format!(
        "canary: {n} server(s) of {pool} serve first; a failing gate takes them out and leaves the live pool serving"
    ))
}
