use crate::id::ReleaseLabel;
use crate::model::{Pool, PoolState};
use crate::plan::{OperationKind, Plan, Precondition, Step};

use super::{expose_steps, fill_steps, main_pool, provision_steps, PlanInput, PlanningError};

fn candidates<'a>(
    input: &'a PlanInput<'_>,
    serving: &[&Pool],
    release: Option<&ReleaseLabel>,
) -> Vec<&'a Pool> {
    let current = main_pool(serving).map(|p| p.release.clone());
    let mut pools: Vec<&Pool> = input
        .snap
        .pools_of(&input.role)
        .filter(|p| p.state.is_rollback_candidate())
        .filter(|p| current.as_ref() != Some(&p.release))
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
/// new pool of it when none is left. A cold standby is started; waiting
/// servers are revalidated and dead or missing ones replaced, so the pool
/// is at full capacity. What serves now leaves only once the target serves,
/// and the pool that was live becomes a hot standby.
pub fn rollback(
    input: &PlanInput<'_>,
    release: Option<&ReleaseLabel>,
) -> Result<Plan, PlanningError> {
    input.check()?;
    let role = input.role_spec()?;
    let policy = input.policy;
    let batch = policy.rollout.batch_size;
    let serving_now = input.serving_pools(None);
    let mut steps = Vec::new();
    let mut preconditions = Vec::new();
    let found = candidates(input, &serving_now, release).first().copied();
    let current = main_pool(&serving_now).map(|p| p.release.clone());
    let (pool_id, all, state, target_release) = match (found, release) {
        (Some(t), _) => {
            preconditions.push(Precondition::PoolState {
                pool: t.id.clone(),
                state: t.state,
            });
            let (fill, all) = fill_steps(t, batch);
            steps.extend(fill);
            let state = if t.state == PoolState::COLD {
                PoolState::HOT
            } else {
                t.state
            };
            (t.id.clone(), all, state, t.release.clone())
        }
        (None, Some(r)) if current.as_ref() != Some(r) => {
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
    let others = input.serving_pools(Some(&pool_id));
    if super::switches(input, found, &others) {
        let (cutover, relied_on) = super::switch_steps(
            &pool_id,
            &all,
            state,
            &others,
            policy.rollout.rollback_bake,
            input.keeps_standby(),
        );
        steps.extend(cutover);
        preconditions.extend(relied_on);
    } else {
        // Attach steps for every slot: they act on the balancer's fresh
        // view (members left draining by a failed detach are activated
        // again).
        steps.extend(expose_steps(
            &pool_id,
            &all,
            &all,
            batch,
            policy.rollout.rollback_bake,
            state,
        ));
        let (away, relied_on) =
            super::switch_away(&others, &pool_id, &all, batch, input.keeps_standby());
        steps.extend(away);
        preconditions.extend(relied_on);
    }
    steps.push(Step::VerifyServing {
        role: input.role.clone(),
        release: target_release.clone(),
    });
    let restore = main_pool(&others);
    let mut plan = input.plan(
        OperationKind::Rollback,
        format!(
            "roll {} back to release {target_release} (pool {pool_id}){}",
            input.role,
            restore
                .map(|l| format!(" from {} (pool {})", l.release, l.id))
                .unwrap_or_default()
        ),
        steps,
        crate::policy::FailurePolicy::Rollback,
        restore.map(|l| l.id.clone()),
        Some(target_release),
    );
    plan.preconditions.extend(preconditions);
    Ok(plan)
}
