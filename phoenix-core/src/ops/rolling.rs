use crate::id::ReleaseLabel;
use crate::model::{PoolState, Traffic};
use crate::plan::{OperationKind, Plan, Precondition, Step};

use super::{in_service, refs, PlanInput, PlanningError};

/// Replaces the live pool by a new pool of `release`, batch by batch: each
/// batch launches at most `min(batch_size, max_surge)` servers, verifies,
/// attaches and bakes them, and only then detaches as many old servers.
/// The previous batch's old servers drain and are terminated while the
/// next batch boots.
pub fn rolling_replace(
    input: &PlanInput<'_>,
    release: &ReleaseLabel,
) -> Result<Plan, PlanningError> {
    input.check()?;
    let role = input.role_spec()?;
    let old = input
        .live()?
        .ok_or_else(|| PlanningError::NothingLive(input.role.clone()))?;
    let policy = input.policy;
    if &old.release == release {
        let mut plan = input.plan(
            OperationKind::RollingReplace,
            format!("release {release} is already live for {}", input.role),
            Vec::new(),
            policy.rollout.on_failure(),
            None,
            Some(release.clone()),
        );
        plan.notes
            .push(format!("pool {} already serves {release}", old.id));
        return Ok(plan);
    }
    let image = input.image_of(release)?;
    let new = input.new_pool_id(release)?;
    let n = role.desired;
    let b = policy.rolling_batch();
    let serving: Vec<u32> = old
        .slots
        .iter()
        .filter(|s| s.traffic == Traffic::Attached)
        .map(|s| s.index)
        .collect();
    let new_slots: Vec<u32> = (0..u32::try_from(n).unwrap_or(u32::MAX)).collect();
    let new_batches: Vec<&[u32]> = new_slots.chunks(b).collect();
    // Old servers leave in step with the new ones; any surplus leaves with
    // the last batch.
    let mut old_batches: Vec<Vec<u32>> = serving.chunks(b).map(<[u32]>::to_vec).collect();
    while old_batches.len() > new_batches.len() && old_batches.len() > 1 {
        if let Some(extra) = old_batches.pop() {
            if let Some(last) = old_batches.last_mut() {
                last.extend(extra);
            }
        }
    }
    let mut steps = vec![Step::CreatePool {
        pool: new.clone(),
        role: input.role.clone(),
        release: release.clone(),
        image: image.clone(),
        size: n,
        slots: u32::try_from(n).unwrap_or(u32::MAX),
    }];
    let mut draining: Option<Vec<u32>> = None;
    for (k, batch) in new_batches.iter().enumerate() {
        steps.push(Step::Launch {
            pool: new.clone(),
            slots: batch.to_vec(),
        });
        // The previous batch's old servers finish draining while this one
        // boots.
        if let Some(prev) = draining.take() {
            steps.push(Step::AwaitDrained {
                pool: old.id.clone(),
                slots: prev.clone(),
            });
            steps.extend(super::terminate_steps(
                &old.id,
                &prev,
                policy.rollout.batch_size,
            ));
        }
        if k == 0 {
            steps.push(Step::SetPoolState {
                pool: new.clone(),
                to: PoolState::Verifying,
            });
        }
        steps.push(Step::Verify {
            pool: new.clone(),
            slots: batch.to_vec(),
        });
        if k == 0 {
            steps.push(Step::SetPoolState {
                pool: new.clone(),
                to: PoolState::Ready,
            });
        }
        for chunk in batch.chunks(policy.rollout.batch_size.max(1)) {
            steps.push(Step::Attach {
                pool: new.clone(),
                slots: chunk.to_vec(),
            });
        }
        steps.push(Step::AwaitHealthy {
            pool: new.clone(),
            slots: batch.to_vec(),
        });
        if k == 0 {
            steps.push(Step::SetPoolState {
                pool: new.clone(),
                to: PoolState::Live,
            });
        }
        steps.push(Step::Bake {
            pool: new.clone(),
            slots: batch.to_vec(),
            duration: policy.rollout.bake_time,
        });
        if let Some(leaving) = old_batches.get(k) {
            let replacements = if k + 1 == new_batches.len() {
                refs(&new, &new_slots)
            } else {
                refs(&new, batch)
            };
            for chunk in leaving.chunks(policy.rollout.batch_size.max(1)) {
                steps.push(Step::Detach {
                    pool: old.id.clone(),
                    slots: chunk.to_vec(),
                    replacements: replacements.clone(),
                });
            }
            draining = Some(leaving.clone());
        }
    }
    if let Some(prev) = draining.take() {
        steps.push(Step::AwaitDrained {
            pool: old.id.clone(),
            slots: prev.clone(),
        });
        steps.extend(super::terminate_steps(
            &old.id,
            &prev,
            policy.rollout.batch_size,
        ));
    }
    // Whatever else the old pool still has (servers not serving).
    let rest: Vec<u32> = in_service(old)
        .into_iter()
        .filter(|i| !serving.contains(i))
        .collect();
    steps.extend(super::terminate_steps(
        &old.id,
        &rest,
        policy.rollout.batch_size,
    ));
    steps.push(Step::CleanUpDiscarded {
        pool: old.id.clone(),
    });
    steps.push(Step::SetPoolState {
        pool: old.id.clone(),
        to: PoolState::Retired,
    });
    steps.push(Step::DeletePool {
        pool: old.id.clone(),
    });
    steps.push(Step::VerifyServing {
        role: input.role.clone(),
        release: release.clone(),
    });
    let mut plan = input.plan(
        OperationKind::RollingReplace,
        format!(
            "rolling replacement of {} pool {} ({}) by {new} ({release}): {n} server(s) in batches of {b}",
            input.role, old.id, old.release
        ),
        steps,
        policy.rollout.on_failure(),
        Some(old.id.clone()),
        Some(release.clone()),
    );
    plan.preconditions.push(Precondition::PoolState {
        pool: old.id.clone(),
        state: PoolState::Live,
    });
    Ok(plan)
}
