use crate::id::ReleaseLabel;
use crate::model::{Pool, PoolState, SlotState, StandbyKind};
use crate::plan::{NewSlot, OperationKind, Plan, Precondition, Step};

use super::{
    expose_steps, in_service, provision_steps, refs, retire_traffic_steps, PlanInput, PlanningError,
};

fn candidates<'a>(
    input: &'a PlanInput<'_>,
    live: Option<&'a Pool>,
    release: Option<&ReleaseLabel>,
) -> Vec<&'a Pool> {
    let mut pools: Vec<&Pool> = input
        .snap
        .pools_of(&input.role)
        .filter(|p| p.state.is_rollback_candidate())
        .filter(|p| live.is_none_or(|l| l.release != p.release))
        .filter(|p| release.is_none_or(|r| &p.release == r))
        .collect();
    // Most recently live first, then newest.
    pools.sort_by(|a, b| {
        b.last_live_at()
            .cmp(&a.last_live_at())
            .then(b.created_at.cmp(&a.created_at))
    });
    pools
}

/// Makes a previous release live again: by default the most recently live
/// standby pool; with `release`, that release's newest standby pool, or a
/// new pool of it when none is left. A cold standby is started and
/// verified first; missing servers are relaunched. The current live pool
/// leaves only once the target serves at full capacity, and becomes a hot
/// standby.
pub fn rollback(
    input: &PlanInput<'_>,
    release: Option<&ReleaseLabel>,
) -> Result<Plan, PlanningError> {
    input.check()?;
    let role = input.role_spec()?;
    let live = input.live()?;
    let policy = input.policy;
    let batch = policy.rollout.batch_size;
    let mut steps = Vec::new();
    let mut preconditions = Vec::new();
    let found = candidates(input, live, release).first().copied();
    let (pool_id, all, state, target_release) = match (found, release) {
        (Some(t), _) => {
            preconditions.push(Precondition::PoolState {
                pool: t.id.clone(),
                state: t.state,
            });
            let stopped: Vec<u32> = t
                .slots
                .iter()
                .filter(|s| s.state == SlotState::Stopped)
                .map(|s| s.index)
                .collect();
            for chunk in stopped.chunks(batch.max(1)) {
                steps.push(Step::Start {
                    pool: t.id.clone(),
                    slots: chunk.to_vec(),
                });
            }
            if t.state
                == (PoolState::Standby {
                    kind: StandbyKind::Cold,
                })
            {
                steps.push(Step::SetPoolState {
                    pool: t.id.clone(),
                    to: PoolState::HOT,
                });
            }
            let mut all = in_service(t);
            let missing = t.size.saturating_sub(all.len());
            if missing > 0 {
                let first = t.next_index();
                let new: Vec<u32> = (first..first + u32::try_from(missing).unwrap_or(0)).collect();
                steps.push(Step::AddSlots {
                    pool: t.id.clone(),
                    slots: new
                        .iter()
                        .map(|i| NewSlot {
                            index: *i,
                            replaces: None,
                        })
                        .collect(),
                });
                steps.push(Step::Launch {
                    pool: t.id.clone(),
                    slots: new.clone(),
                });
                all.extend(new);
            }
            let unverified: Vec<u32> = all
                .iter()
                .copied()
                .filter(|i| {
                    t.slot(*i)
                        .is_none_or(|s| !s.verified || s.state == SlotState::Stopped)
                })
                .collect();
            if !unverified.is_empty() {
                steps.push(Step::Verify {
                    pool: t.id.clone(),
                    slots: unverified,
                });
            }
            let state = if t.state == PoolState::COLD {
                PoolState::HOT
            } else {
                t.state
            };
            (t.id.clone(), all, state, t.release.clone())
        }
        (None, Some(r)) if live.is_none_or(|l| &l.release != r) => {
            let image = input.image_of(r)?;
            let pool = input.new_pool_id(r)?;
            steps.extend(provision_steps(&pool, &input.role, r, &image, role.desired));
            let all: Vec<u32> = (0..u32::try_from(role.desired).unwrap_or(u32::MAX)).collect();
            (pool, all, PoolState::Ready, r.clone())
        }
        _ => {
            return Err(PlanningError::NoRollbackTarget {
                role: input.role.clone(),
                release: release.cloned(),
            })
        }
    };
    let attached: Vec<u32> = input
        .snap
        .pool(&pool_id)
        .map(|p| p.attached().map(|s| s.index).collect())
        .unwrap_or_default();
    let to_attach: Vec<u32> = all
        .iter()
        .copied()
        .filter(|i| !attached.contains(i))
        .collect();
    steps.extend(expose_steps(
        &pool_id,
        &all,
        &to_attach,
        batch,
        policy.rollout.rollback_bake,
        state,
    ));
    if let Some(l) = live {
        preconditions.push(Precondition::PoolState {
            pool: l.id.clone(),
            state: PoolState::Live,
        });
        let (detach, _) = retire_traffic_steps(l, &refs(&pool_id, &all), batch);
        steps.extend(detach);
        steps.push(Step::SetPoolState {
            pool: l.id.clone(),
            to: PoolState::HOT,
        });
    }
    steps.push(Step::VerifyServing {
        role: input.role.clone(),
        release: target_release.clone(),
    });
    let mut plan = input.plan(
        OperationKind::Rollback,
        format!(
            "roll {} back to release {target_release} (pool {pool_id}){}",
            input.role,
            live.map(|l| format!(" from {} (pool {})", l.release, l.id))
                .unwrap_or_default()
        ),
        steps,
        crate::policy::FailurePolicy::Rollback,
        live.map(|l| l.id.clone()),
        Some(target_release),
    );
    plan.preconditions.extend(preconditions);
    Ok(plan)
}
