use crate::id::ReleaseLabel;
use crate::model::{Pool, PoolState, StandbyKind};
use crate::plan::{OperationKind, Plan, Precondition, Step};

use super::{
    expose_steps, in_service, provision_steps, refs, retire_traffic_steps, PlanInput, PlanningError,
};

/// The newest pool of the release that can be made live as it is.
fn reusable<'a>(input: &'a PlanInput<'_>, release: &ReleaseLabel) -> Option<&'a Pool> {
    input
        .snap
        .pools_of(&input.role)
        .filter(|p| &p.release == release && p.state.is_rollback_candidate())
        .filter(|p| in_service(p).len() >= p.size)
        .last()
}

/// Blue-green switch to `release`: reuse its ready or standby pool or
/// provision one; attach it in batches; wait until healthy; bake; only
/// then detach the live pool with drain; it becomes a hot standby.
pub fn deploy(input: &PlanInput<'_>, release: &ReleaseLabel) -> Result<Plan, PlanningError> {
    input.check()?;
    let role = input.role_spec()?;
    let live = input.live()?;
    let policy = input.policy;
    let batch = policy.rollout.batch_size;
    if let Some(l) = live {
        if &l.release == release {
            let mut plan = input.plan(
                OperationKind::Deploy,
                format!("release {release} is already live for {}", input.role),
                Vec::new(),
                policy.rollout.on_failure(),
                None,
                Some(release.clone()),
            );
            plan.notes
                .push(format!("pool {} already serves {release}", l.id));
            return Ok(plan);
        }
    }
    let mut steps = Vec::new();
    let mut preconditions = Vec::new();
    let (pool_id, all, state) = match reusable(input, release) {
        Some(p) => {
            preconditions.push(Precondition::PoolState {
                pool: p.id.clone(),
                state: p.state,
            });
            let slots = in_service(p);
            if p.state
                == (PoolState::Standby {
                    kind: StandbyKind::Cold,
                })
            {
                for chunk in slots.chunks(batch.max(1)) {
                    steps.push(Step::Start {
                        pool: p.id.clone(),
                        slots: chunk.to_vec(),
                    });
                }
                steps.push(Step::SetPoolState {
                    pool: p.id.clone(),
                    to: PoolState::HOT,
                });
                steps.push(Step::Verify {
                    pool: p.id.clone(),
                    slots: slots.clone(),
                });
            }
            (p.id.clone(), slots, p.state)
        }
        None => {
            let image = input.image_of(release)?;
            let pool = input.new_pool_id(release)?;
            steps.extend(provision_steps(
                &pool,
                &input.role,
                release,
                &image,
                role.desired,
            ));
            let all: Vec<u32> = (0..u32::try_from(role.desired).unwrap_or(u32::MAX)).collect();
            (pool, all, PoolState::Ready)
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
        policy.rollout.bake_time,
        state,
    ));
    let restore = live.map(|l| l.id.clone());
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
        release: release.clone(),
    });
    let mut plan = input.plan(
        OperationKind::Deploy,
        format!(
            "blue-green switch of {} to release {release} (pool {pool_id}, {} server(s)){}",
            input.role,
            all.len(),
            live.map(|l| format!("; pool {} becomes a hot standby", l.id))
                .unwrap_or_default()
        ),
        steps,
        policy.rollout.on_failure(),
        restore,
        Some(release.clone()),
    );
    plan.preconditions.extend(preconditions);
    Ok(plan)
}
