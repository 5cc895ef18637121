use crate::model::{Pool, PoolState, Slot, Traffic};
use crate::plan::{NewSlot, OperationKind, Plan, Step};
use crate::policy::FailurePolicy;
use crate::time::elapsed_between;

use super::{refs, terminate_steps, PlanInput, PlanningError};

fn aged<'a>(input: &PlanInput<'_>, slots: impl Iterator<Item = &'a Slot>) -> Vec<&'a Slot> {
    let max_age = input.policy.refresh.max_age;
    let mut old: Vec<&Slot> = slots
        .filter(|s| {
            s.launched_at
                .is_some_and(|t| elapsed_between(t, input.now) > max_age)
        })
        .collect();
    old.sort_by_key(|s| (s.launched_at, s.index));
    old
}

/// Steps that bring a pool down to its size before replacements launch:
/// servers that serve nothing are terminated, then the oldest serving ones
/// (aged ones first) leave under the capacity guard. Returns the steps and
/// the aged slots still to replace.
fn surplus<'a>(pool: &'a Pool, aged: &[&'a Slot], batch: usize) -> (Vec<Step>, Vec<&'a Slot>) {
    let in_service: Vec<&Slot> = pool.in_service().collect();
    let mut extra = in_service.len().saturating_sub(pool.size);
    if extra == 0 {
        return (Vec::new(), aged.to_vec());
    }
    let idle: Vec<u32> = in_service
        .iter()
        .filter(|s| s.traffic == Traffic::Out)
        .take(extra)
        .map(|s| s.index)
        .collect();
    extra -= idle.len();
    let serving: Vec<u32> = aged
        .iter()
        .filter(|s| s.traffic == Traffic::Attached)
        .take(extra)
        .map(|s| s.index)
        .collect();
    let mut steps = terminate_steps(&pool.id, &idle, batch);
    for chunk in serving.chunks(batch.max(1)) {
        steps.push(Step::Detach {
            pool: pool.id.clone(),
            slots: chunk.to_vec(),
            replacements: Vec::new(),
        });
    }
    if !serving.is_empty() {
        steps.push(Step::AwaitDrained {
            pool: pool.id.clone(),
            slots: serving.clone(),
        });
        steps.extend(terminate_steps(&pool.id, &serving, batch));
    }
    let kept = aged
        .iter()
        .copied()
        .filter(|s| !serving.contains(&s.index) && !idle.contains(&s.index))
        .collect();
    (steps, kept)
}

fn new_slots(next: &mut u32, old: &[&Slot]) -> (Vec<NewSlot>, Vec<u32>) {
    let mut created = Vec::with_capacity(old.len());
    let mut indices = Vec::with_capacity(old.len());
    for s in old {
        created.push(NewSlot {
            index: *next,
            replaces: Some(s.index),
        });
        indices.push(*next);
        *next += 1;
    }
    (created, indices)
}

/// Replaces every server older than `max_age` in the live pool (through
/// rolling replacement within the pool: replacements attach and bake
/// before the old servers leave) and in hot standby pools, in batches of
/// at most `min(batch_size, max_surge, max_replacements)`, each batch
/// waiting for the replacement-rate budget. As in a rolling replacement,
/// the previous batch's servers drain while the next batch boots only when
/// two batches fit within `max_surge`.
pub fn refresh(input: &PlanInput<'_>) -> Result<Plan, PlanningError> {
    input.check()?;
    let policy = input.policy;
    let b = policy
        .rolling_batch()
        .min(policy.refresh.max_replacements)
        .max(1);
    let batch = policy.rollout.batch_size;
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    let mut total = 0;
    let lives = input.live_pools();
    let sole = lives.len() == 1 && input.serving_pools(lives.first().map(|l| &l.id)).is_empty();
    for l in &lives {
        let old = aged(
            input,
            l.slots.iter().filter(|s| s.traffic == Traffic::Attached),
        );
        // Servers given up on, and servers above the pool's size, count
        // against the surge: they go first (serving ones under the
        // capacity guard).
        let old = if old.is_empty() {
            old
        } else {
            if l.discarded.iter().any(|d| !d.terminated) {
                steps.push(Step::CleanUpDiscarded { pool: l.id.clone() });
            }
            let (trim, kept) = surplus(l, &old, batch);
            steps.extend(trim);
            kept
        };
        total += old.len();
        let mut next = l.next_index();
        let mut draining: Option<Vec<u32>> = None;
        let overlap = 2 * b <= policy.rollout.max_surge;
        for chunk in old.chunks(b) {
            let (created, indices) = new_slots(&mut next, chunk);
            let leaving: Vec<u32> = chunk.iter().map(|s| s.index).collect();
            if !overlap {
                if let Some(prev) = draining.take() {
                    steps.push(Step::AwaitDrained {
                        pool: l.id.clone(),
                        slots: prev.clone(),
                    });
                    steps.extend(terminate_steps(&l.id, &prev, batch));
                }
            }
            steps.push(Step::AwaitReplacementBudget { count: chunk.len() });
            steps.push(Step::AddSlots {
                pool: l.id.clone(),
                slots: created,
            });
            steps.push(Step::Launch {
                pool: l.id.clone(),
                slots: indices.clone(),
            });
            if let Some(prev) = draining.take() {
                steps.push(Step::AwaitDrained {
                    pool: l.id.clone(),
                    slots: prev.clone(),
                });
                steps.extend(terminate_steps(&l.id, &prev, batch));
            }
            steps.push(Step::Verify {
                pool: l.id.clone(),
                slots: indices.clone(),
            });
            steps.extend(super::expose_steps(
                &l.id,
                &indices,
                &indices,
                batch,
                policy.rollout.bake_time,
                PoolState::Live,
            ));
            for c in leaving.chunks(batch.max(1)) {
                steps.push(Step::Detach {
                    pool: l.id.clone(),
                    slots: c.to_vec(),
                    replacements: refs(&l.id, &indices),
                });
            }
            draining = Some(leaving);
        }
        if let Some(prev) = draining.take() {
            steps.push(Step::AwaitDrained {
                pool: l.id.clone(),
                slots: prev.clone(),
            });
            steps.extend(terminate_steps(&l.id, &prev, batch));
        }
    }
    if let (true, Some(l), false) = (sole, lives.first(), steps.is_empty()) {
        steps.push(Step::VerifyServing {
            role: input.role.clone(),
            release: l.release.clone(),
        });
    }
    for pool in input.snap.pools_of(&input.role) {
        match pool.state {
            PoolState::Standby {
                kind: crate::model::StandbyKind::Hot,
            } => {}
            PoolState::Standby { .. } => {
                let stale = aged(input, pool.in_service()).len();
                if stale > 0 {
                    notes.push(format!(
                        "cold standby {} has {stale} server(s) past max age; reap or roll back replaces them",
                        pool.id
                    ));
                }
                continue;
            }
            _ => continue,
        }
        let old = aged(input, pool.in_service());
        total += old.len();
        let old = if old.is_empty() {
            old
        } else {
            if pool.discarded.iter().any(|d| !d.terminated) {
                steps.push(Step::CleanUpDiscarded {
                    pool: pool.id.clone(),
                });
            }
            let (trim, kept) = surplus(pool, &old, batch);
            steps.extend(trim);
            kept
        };
        let mut next = pool.next_index();
        for chunk in old.chunks(b) {
            let (created, indices) = new_slots(&mut next, chunk);
            let leaving: Vec<u32> = chunk.iter().map(|s| s.index).collect();
            steps.push(Step::AwaitReplacementBudget { count: chunk.len() });
            steps.push(Step::AddSlots {
                pool: pool.id.clone(),
                slots: created,
            });
            steps.push(Step::Launch {
                pool: pool.id.clone(),
                slots: indices.clone(),
            });
            steps.push(Step::Verify {
                pool: pool.id.clone(),
                slots: indices,
            });
            steps.extend(terminate_steps(&pool.id, &leaving, batch));
        }
    }
    let summary = format!(
        "refresh {}: replace {total} server(s) older than {} in batches of {b} (at most {} per {})",
        input.role,
        crate::time::human(policy.refresh.max_age),
        policy.refresh.max_replacements,
        crate::time::human(policy.refresh.window)
    );
    let mut plan = input.plan(
        OperationKind::Refresh,
        summary,
        steps,
        FailurePolicy::Halt,
        None,
        lives.first().filter(|_| sole).map(|l| l.release.clone()),
    );
    plan.notes = notes;
    Ok(plan)
}
