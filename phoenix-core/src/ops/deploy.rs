use crate::executor::guards::MemberIndex;
use crate::id::ReleaseLabel;
use crate::model::{Pool, PoolState};
use crate::plan::{OperationKind, Plan, Precondition, Step};
use crate::ports::{Member, MemberState};

use super::{
    expose_steps, fill_steps, is_full, main_pool, provision_steps, switches, PlanInput,
    PlanningError,
};

/// The pool of the release to make live: a live one (a mixed state after a
/// halted operation), else the newest ready or standby one.
fn target<'a>(input: &'a PlanInput<'_>, release: &ReleaseLabel) -> Option<&'a Pool> {
    let live: Vec<&Pool> = input
        .live_pools()
        .into_iter()
        .filter(|p| &p.release == release)
        .collect();
    if let Some(p) = main_pool(&live) {
        return Some(p);
    }
    input
        .snap
        .pools_of(&input.role)
        .filter(|p| &p.release == release && p.state.is_rollback_candidate())
        .last()
}

/// Blue-green switch to `release`: reuse its live, ready or standby pool
/// (starting a cold one, revalidating waiting servers and topping it up to
/// size) or provision a new one; attach it in batches; wait until healthy;
/// bake; only then detach every other pool of the role with drain. The
/// pool that served before becomes a hot standby. From a mixed state left
/// by a halted operation it settles on `release`.
pub fn deploy(input: &PlanInput<'_>, release: &ReleaseLabel) -> Result<Plan, PlanningError> {
    deploy_inner(input, release, None)
}

/// [`deploy`], judging "already live" on a fresh read of the balancer as
/// well: a live pool whose members the balancer lost (drained by a hand,
/// a balancer rebuilt) is attached again, not reported done.
pub fn deploy_seen(
    input: &PlanInput<'_>,
    release: &ReleaseLabel,
    members: &[Member],
) -> Result<Plan, PlanningError> {
    deploy_inner(input, release, Some(members))
}

fn deploy_inner(
    input: &PlanInput<'_>,
    release: &ReleaseLabel,
    members: Option<&[Member]>,
) -> Result<Plan, PlanningError> {
    input.check()?;
    let role = input.role_spec()?;
    let policy = input.policy;
    let batch = policy.rollout.batch_size;
    let existing = target(input, release);
    let others = input.serving_pools(existing.map(|p| &p.id));
    if let Some(p) = existing {
        let serving = members.is_none_or(|m| {
            let index = MemberIndex::new(m);
            p.in_service().all(|s| {
                index
                    .of_slot(s)
                    .is_some_and(|m| m.state == MemberState::Active)
            })
        });
        if p.state == PoolState::Live && others.is_empty() && is_full(p) && serving {
            let mut plan = input.plan(
                OperationKind::Deploy,
                format!("release {release} is already live for {}", input.role),
                Vec::new(),
                policy.rollout.on_failure(),
                None,
                Some(release.clone()),
            );
            plan.notes
                .push(format!("pool {} already serves {release}", p.id));
            return Ok(plan);
        }
    }
    let mut steps = Vec::new();
    let mut preconditions = Vec::new();
    let (pool_id, all, state) = match existing {
        Some(p) => {
            preconditions.push(Precondition::PoolState {
                pool: p.id.clone(),
                state: p.state,
            });
            let (fill, all) = fill_steps(p, batch);
            steps.extend(fill);
            let state = if p.state == PoolState::COLD {
                PoolState::HOT
            } else {
                p.state
            };
            (p.id.clone(), all, state)
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
    if switches(input, existing, &others) {
        let (cutover, relied_on) = super::switch_steps(
            &pool_id,
            &all,
            state,
            &others,
            policy.rollout.bake_time,
            input.keeps_standby(),
        );
        steps.extend(cutover);
        preconditions.extend(relied_on);
    } else {
        // Every slot that is to serve gets an attach step: the step acts on
        // the balancer's fresh view, so members recorded as attached but
        // left draining or disabled there are activated again, and those
        // already active cost nothing.
        steps.extend(expose_steps(
            &pool_id,
            &all,
            &all,
            batch,
            policy.rollout.bake_time,
            state,
        ));
        let (away, relied_on) =
            super::switch_away(&others, &pool_id, &all, batch, input.keeps_standby());
        steps.extend(away);
        preconditions.extend(relied_on);
    }
    let canary_note = super::canary::insert(
        &mut steps,
        &pool_id,
        role.desired,
        super::canary::baseline(&others),
        policy,
    );
    steps.push(Step::VerifyServing {
        role: input.role.clone(),
        release: release.clone(),
    });
    let restore = main_pool(&others).map(|p| p.id.clone());
    let mut plan = input.plan(
        OperationKind::Deploy,
        format!(
            "blue-green switch of {} to release {release} (pool {pool_id}, {} server(s)){}",
            input.role,
            all.len(),
            if others.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} become(s) standby",
                    others
                        .iter()
                        .map(|p| p.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ),
        steps,
        policy.rollout.on_failure(),
        restore,
        Some(release.clone()),
    );
    plan.preconditions.extend(preconditions);
    plan.notes.extend(canary_note);
    Ok(plan)
}
