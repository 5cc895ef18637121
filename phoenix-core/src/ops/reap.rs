use std::collections::BTreeSet;

use crate::id::ServerId;
use crate::model::{Pool, PoolState};
use crate::plan::{OperationKind, Plan, Step};
use crate::policy::FailurePolicy;
use crate::ports::Member;

use super::{in_service, running, terminate_steps, PlanInput, PlanningError};

/// Deletes pools beyond retention: failed and retired pools, and standby
/// pools past the `keep` newest. Kept pools past the `hot` newest are
/// stopped (cold) when the compute back end can stop servers. Any pool the
/// balancer serves (fresh `members`) is refused, and so is any deletion
/// that would leave fewer than `keep` rollback pools.
pub fn reap(
    input: &PlanInput<'_>,
    members: &[Member],
    can_stop: bool,
) -> Result<Plan, PlanningError> {
    input.check()?;
    let policy = input.policy;
    let batch = policy.rollout.batch_size;
    let serving: BTreeSet<&ServerId> = members
        .iter()
        .filter(|m| m.carries_traffic())
        .map(|m| &m.server)
        .collect();
    let serving_at: BTreeSet<std::net::SocketAddr> = members
        .iter()
        .filter(|m| m.carries_traffic())
        .map(|m| m.endpoint)
        .collect();
    // Serving behind any balancer, by id or by endpoint (an adapter may
    // report a stand-in id).
    let served = |p: &Pool| {
        p.known_servers().any(|s| serving.contains(s))
            || p.in_service()
                .filter_map(|s| s.endpoint)
                .any(|e| serving_at.contains(&e))
    };

    // A pool provisioned for a coming deploy (ready, never live, newer
    // than the last time anything of the role went live) is not a rollback
    // pool yet: retention neither counts nor deletes it.
    let last_live = input
        .snap
        .pools_of(&input.role)
        .filter_map(Pool::last_live_at)
        .max();
    let upcoming = |p: &Pool| {
        p.state == PoolState::Ready
            && p.last_live_at().is_none()
            && last_live.is_none_or(|t| p.created_at > t)
    };
    let mut notes = Vec::new();
    for p in input.snap.pools_of(&input.role).filter(|p| upcoming(p)) {
        notes.push(format!(
            "kept: pool {} ({}) is ready and never served; it waits for a deploy",
            p.id, p.release
        ));
    }
    let mut standby: Vec<&Pool> = input
        .snap
        .pools_of(&input.role)
        .filter(|p| p.state.is_rollback_candidate() && !upcoming(p))
        .collect();
    standby.sort_by(|a, b| {
        b.last_live_at()
            .cmp(&a.last_live_at())
            .then(b.created_at.cmp(&a.created_at))
    });
    let keep = policy.retention.keep;
    let (kept, beyond) = standby.split_at(keep.min(standby.len()));
    let others = input
        .snap
        .pools_of(&input.role)
        .filter(|p| matches!(p.state, PoolState::Failed | PoolState::Retired));

    let mut steps = Vec::new();
    let mut reaped = Vec::new();
    for pool in beyond.iter().copied().chain(others) {
        if served(pool) {
            notes.push(format!(
                "refused: pool {} ({}) is served by the balancer",
                pool.id, pool.state
            ));
            continue;
        }
        if pool.state != PoolState::Retired {
            steps.push(Step::SetPoolState {
                pool: pool.id.clone(),
                to: PoolState::Retired,
            });
        }
        steps.extend(terminate_steps(&pool.id, &in_service(pool), batch));
        steps.push(Step::CleanUpDiscarded {
            pool: pool.id.clone(),
        });
        steps.push(Step::DeletePool {
            pool: pool.id.clone(),
        });
        reaped.push(format!("{} ({})", pool.id, pool.state));
    }
    let mut cooled = Vec::new();
    if can_stop {
        for pool in kept.iter().skip(policy.retention.hot) {
            if pool.state != PoolState::HOT || served(pool) {
                continue;
            }
            for chunk in running(pool).chunks(batch.max(1)) {
                steps.push(Step::Stop {
                    pool: pool.id.clone(),
                    slots: chunk.to_vec(),
                });
            }
            steps.push(Step::SetPoolState {
                pool: pool.id.clone(),
                to: PoolState::COLD,
            });
            cooled.push(pool.id.to_string());
        }
    }
    let mut summary = format!(
        "reap {}: keep {} standby pool(s) ({} kept)",
        input.role,
        keep,
        kept.len()
    );
    if !reaped.is_empty() {
        summary.push_str(&format!("; delete {}", reaped.join(", ")));
    }
    if !cooled.is_empty() {
        summary.push_str(&format!("; stop {}", cooled.join(", ")));
    }
    let mut plan = input.plan(
        OperationKind::Reap,
        summary,
        steps,
        FailurePolicy::Halt,
        None,
        None,
    );
    plan.notes = notes;
    Ok(plan)
}
