use std::collections::BTreeMap;

use crate::id::{PoolId, ReleaseLabel};
use crate::model::{Pool, PoolState, SlotState, Traffic};
use crate::plan::{NewSlot, OperationKind, Plan, Precondition, SlotRef, Step};

use super::{in_service, is_full, main_pool, refs, terminate_steps, PlanInput, PlanningError};

/// Slot references grouped by pool, in first-seen order.
fn by_pool(slots: &[SlotRef]) -> Vec<(PoolId, Vec<u32>)> {
    let mut out: Vec<(PoolId, Vec<u32>)> = Vec::new();
    for r in slots {
        match out.iter_mut().find(|(p, _)| p == &r.pool) {
            Some((_, v)) => v.push(r.slot),
            None => out.push((r.pool.clone(), vec![r.slot])),
        }
    }
    out
}

/// Replaces what serves the role by a pool of `release`, batch by batch:
/// each batch launches at most `min(batch_size, max_surge)` servers,
/// verifies, attaches and bakes them, and only then detaches as many old
/// servers. `max_surge` caps every server running above the desired count,
/// draining ones included (cloud quotas count them): the previous batch's
/// old servers drain and are terminated while the next batch boots only
/// when two batches fit within it, and before the next batch launches
/// otherwise. Old servers that serve nothing are terminated first. A
/// replacement that halted half-way is continued: the live pool of
/// `release` is filled up and every other serving pool drained.
pub fn rolling_replace(
    input: &PlanInput<'_>,
    release: &ReleaseLabel,
) -> Result<Plan, PlanningError> {
    input.check()?;
    let role = input.role_spec()?;
    let policy = input.policy;
    let batch = policy.rollout.batch_size;
    let b = policy.rolling_batch();
    let live_new: Vec<&Pool> = input
        .live_pools()
        .into_iter()
        .filter(|p| &p.release == release)
        .collect();
    let existing = main_pool(&live_new);
    let olds = input.serving_pools(existing.map(|p| &p.id));
    if olds.is_empty() {
        return match existing {
            None => Err(PlanningError::NothingLive(input.role.clone())),
            Some(p) if is_full(p) => {
                let mut plan = input.plan(
                    OperationKind::RollingReplace,
                    format!("release {release} is already live for {}", input.role),
                    Vec::new(),
                    policy.rollout.on_failure(),
                    None,
                    Some(release.clone()),
                );
                plan.notes
                    .push(format!("pool {} already serves {release}", p.id));
                Ok(plan)
            }
            // Only the new pool serves, short of servers: fill it.
            Some(_) => super::deploy(input, release),
        };
    }

    let mut steps = Vec::new();
    let (new_id, waiting, fresh_pool) = match existing {
        Some(p) => {
            let mut waiting: Vec<u32> = p
                .in_service()
                .filter(|s| s.traffic == Traffic::Out && s.state != SlotState::Stopped)
                .map(|s| s.index)
                .collect();
            let missing = p.size.saturating_sub(in_service(p).len());
            let first = p.next_index();
            let new: Vec<u32> = (first..first + u32::try_from(missing).unwrap_or(0)).collect();
            if !new.is_empty() {
                steps.push(Step::AddSlots {
                    pool: p.id.clone(),
                    slots: new
                        .iter()
                        .map(|i| NewSlot {
                            index: *i,
                            replaces: None,
                        })
                        .collect(),
                });
            }
            waiting.extend(new);
            (p.id.clone(), waiting, false)
        }
        None => {
            let id = input.new_pool_id(release)?;
            let n = u32::try_from(role.desired).unwrap_or(u32::MAX);
            steps.push(Step::CreatePool {
                pool: id.clone(),
                role: input.role.clone(),
                release: release.clone(),
                image: input.image_of(release)?,
                size: role.desired,
                slots: n,
            });
            (id, (0..n).collect(), true)
        }
    };
    let all_new: Vec<u32> = match existing {
        Some(p) => in_service(p)
            .into_iter()
            .chain(waiting.iter().copied())
            .collect::<std::collections::BTreeSet<u32>>()
            .into_iter()
            .collect(),
        None => waiting.clone(),
    };
    let old_slots: Vec<SlotRef> = olds
        .iter()
        .flat_map(|p| {
            p.slots
                .iter()
                .filter(|s| s.traffic != Traffic::Out)
                .map(|s| SlotRef {
                    pool: p.id.clone(),
                    slot: s.index,
                })
        })
        .collect();
    // Servers serving above the desired count already (left by a halted
    // operation) use up the surge: they leave first, under the capacity
    // guard, before anything is launched.
    let states_now: BTreeMap<&PoolId, PoolState> = olds.iter().map(|p| (&p.id, p.state)).collect();
    let live_old = old_slots
        .iter()
        .filter(|r| states_now.get(&r.pool) == Some(&PoolState::Live))
        .count();
    // The new pool's idle servers are the first replacements (they are
    // revalidated and attached before any launch), not surplus.
    let new_running = existing.map_or(0, |p| {
        p.in_service().filter(|s| s.traffic != Traffic::Out).count()
    });
    let surplus = (live_old + new_running).saturating_sub(role.desired);
    // Servers of live pools leave first: they are terminated, so each batch
    // launched frees as many. A standby that served by mistake keeps its
    // servers running for rollback; detaching them frees no surge, so they
    // leave last.
    let mut old_slots = old_slots;
    old_slots.sort_by_key(|r| states_now.get(&r.pool) != Some(&PoolState::Live));
    let (surplus_slots, old_slots): (Vec<SlotRef>, Vec<SlotRef>) = {
        let mut taken = 0;
        old_slots.into_iter().partition(|r| {
            let take = taken < surplus && states_now.get(&r.pool) == Some(&PoolState::Live);
            if take {
                taken += 1;
            }
            take
        })
    };
    let new_batches: Vec<Vec<u32>> = waiting.chunks(b).map(<[u32]>::to_vec).collect();
    // Old servers leave in step with the new ones; any surplus leaves with
    // the last batch.
    let mut old_batches: Vec<Vec<SlotRef>> = old_slots.chunks(b).map(<[SlotRef]>::to_vec).collect();
    let stages = new_batches.len().max(1);
    while old_batches.len() > stages {
        if let Some(extra) = old_batches.pop() {
            if let Some(last) = old_batches.last_mut() {
                last.extend(extra);
            }
        }
    }
    let states: BTreeMap<&PoolId, PoolState> = olds.iter().map(|p| (&p.id, p.state)).collect();
    let terminate = |slots: &[SlotRef], steps: &mut Vec<Step>| {
        for (pool, idx) in by_pool(slots) {
            steps.push(Step::AwaitDrained {
                pool: pool.clone(),
                slots: idx.clone(),
            });
            // Only live pools are being replaced; a standby that served by
            // mistake keeps its servers for rollback.
            if states.get(&pool) == Some(&PoolState::Live) {
                steps.extend(terminate_steps(&pool, &idx, batch));
            }
        }
    };
    // Servers of the old pools that serve nothing (never attached, or
    // given up on) count against the surge from the start: they go first.
    for old in &olds {
        if old.state != PoolState::Live {
            continue;
        }
        let rest: Vec<u32> = old
            .in_service()
            .filter(|s| s.traffic == Traffic::Out)
            .map(|s| s.index)
            .collect();
        steps.extend(terminate_steps(&old.id, &rest, batch));
        if old.discarded.iter().any(|d| !d.terminated) {
            steps.push(Step::CleanUpDiscarded {
                pool: old.id.clone(),
            });
        }
    }
    for (pool, idx) in by_pool(&surplus_slots) {
        for chunk in idx.chunks(batch.max(1)) {
            steps.push(Step::Detach {
                pool: pool.clone(),
                slots: chunk.to_vec(),
                replacements: Vec::new(),
            });
        }
        steps.push(Step::AwaitDrained {
            pool: pool.clone(),
            slots: idx.clone(),
        });
        steps.extend(terminate_steps(&pool, &idx, batch));
    }
    let overlap = 2 * b <= policy.rollout.max_surge;
    let mut draining: Option<Vec<SlotRef>> = None;
    for k in 0..stages {
        let new_batch = new_batches.get(k).cloned().unwrap_or_default();
        if !overlap {
            if let Some(prev) = draining.take() {
                terminate(&prev, &mut steps);
            }
        }
        if !new_batch.is_empty() {
            steps.push(Step::Launch {
                pool: new_id.clone(),
                slots: new_batch.clone(),
            });
        }
        if let Some(prev) = draining.take() {
            terminate(&prev, &mut steps);
        }
        if !new_batch.is_empty() {
            if k == 0 && fresh_pool {
                steps.push(Step::SetPoolState {
                    pool: new_id.clone(),
                    to: PoolState::Verifying,
                });
            }
            steps.push(Step::Verify {
                pool: new_id.clone(),
                slots: new_batch.clone(),
            });
            if k == 0 && fresh_pool {
                steps.push(Step::SetPoolState {
                    pool: new_id.clone(),
                    to: PoolState::Ready,
                });
            }
            for chunk in new_batch.chunks(batch.max(1)) {
                steps.push(Step::Attach {
                    pool: new_id.clone(),
                    slots: chunk.to_vec(),
                });
            }
            steps.push(Step::AwaitHealthy {
                pool: new_id.clone(),
                slots: new_batch.clone(),
            });
            if k == 0 && fresh_pool {
                steps.push(Step::SetPoolState {
                    pool: new_id.clone(),
                    to: PoolState::Live,
                });
            }
            steps.push(Step::Bake {
                pool: new_id.clone(),
                slots: new_batch.clone(),
                duration: policy.rollout.bake_time,
            });
        }
        if let Some(leaving) = old_batches.get(k) {
            let replacements = if k + 1 == stages || new_batch.is_empty() {
                refs(&new_id, &all_new)
            } else {
                refs(&new_id, &new_batch)
            };
            for (pool, idx) in by_pool(leaving) {
                for chunk in idx.chunks(batch.max(1)) {
                    steps.push(Step::Detach {
                        pool: pool.clone(),
                        slots: chunk.to_vec(),
                        replacements: replacements.clone(),
                    });
                }
            }
            draining = Some(leaving.clone());
        }
    }
    if let Some(prev) = draining.take() {
        terminate(&prev, &mut steps);
    }
    let mut preconditions = Vec::new();
    for old in &olds {
        preconditions.push(Precondition::PoolState {
            pool: old.id.clone(),
            state: old.state,
        });
        if old.state != PoolState::Live {
            continue;
        }
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
    }
    let canary_note = super::canary::insert(
        &mut steps,
        &new_id,
        role.desired,
        super::canary::baseline(&olds),
        policy,
    );
    steps.push(Step::VerifyServing {
        role: input.role.clone(),
        release: release.clone(),
    });
    let restore = main_pool(&olds);
    let mut plan = input.plan(
        OperationKind::RollingReplace,
        format!(
            "rolling replacement of {} {} by {new_id} ({release}): {} server(s) in batches of {b}",
            input.role,
            olds.iter()
                .map(|p| format!("pool {} ({})", p.id, p.release))
                .collect::<Vec<_>>()
                .join(" and "),
            waiting.len()
        ),
        steps,
        policy.rollout.on_failure(),
        restore.map(|p| p.id.clone()),
        Some(release.clone()),
    );
    plan.preconditions.extend(preconditions);
    plan.notes.extend(canary_note);
    Ok(plan)
}
