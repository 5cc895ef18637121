use std::collections::BTreeMap;

use crate::id::ServerId;
use crate::model::{Server, ServerStatus, Slot, Traffic};
use crate::plan::{NewSlot, OperationKind, Plan, Step};
use crate::policy::FailurePolicy;
use crate::ports::{Member, MemberHealth};

use super::{refs, terminate_steps, PlanInput, PlanningError};

/// Why a live slot needs replacing, from fresh reads.
fn ailment(
    slot: &Slot,
    members: &BTreeMap<&ServerId, &Member>,
    cloud: &BTreeMap<&ServerId, &Server>,
) -> Option<String> {
    let server = slot.server.as_ref()?;
    match cloud.get(server).map(|s| &s.status) {
        None => return Some(format!("{server} is gone from the cloud")),
        Some(ServerStatus::Active) => {}
        Some(other) => return Some(format!("{server} is {other}")),
    }
    match members.get(server) {
        None => Some(format!("{server} is not behind the balancer")),
        Some(m) if m.health == MemberHealth::Unhealthy => {
            Some(format!("{server} fails the balancer's health checks"))
        }
        Some(_) => None,
    }
}

/// Replaces dead or unhealthy members of the live pool with servers of the
/// same release, and tops the pool up to its size: each replacement is
/// launched, verified, attached and baked before the sick server leaves
/// and is terminated. `members` and `cloud` are fresh reads.
pub fn heal(
    input: &PlanInput<'_>,
    members: &[Member],
    cloud: &[Server],
) -> Result<Plan, PlanningError> {
    input.check()?;
    let live = input
        .live()?
        .ok_or_else(|| PlanningError::NothingLive(input.role.clone()))?;
    let policy = input.policy;
    let batch = policy.rollout.batch_size;
    let b = policy.rolling_batch();
    let by_member: BTreeMap<&ServerId, &Member> = members.iter().map(|m| (&m.server, m)).collect();
    let by_cloud: BTreeMap<&ServerId, &Server> = cloud.iter().map(|s| (&s.id, s)).collect();
    let sick: Vec<(&Slot, String)> = live
        .slots
        .iter()
        .filter(|s| s.traffic == Traffic::Attached)
        .filter_map(|s| ailment(s, &by_member, &by_cloud).map(|why| (s, why)))
        .collect();
    let attached = live.attached().count();
    let short = live.size.saturating_sub(attached);
    let mut steps = Vec::new();
    let mut notes: Vec<String> = sick
        .iter()
        .map(|(s, why)| format!("slot {}: {why}", s.index))
        .collect();
    let mut next = live.next_index();
    let mut wanted: Vec<(Option<u32>, u32)> = sick
        .iter()
        .map(|(s, _)| {
            let i = next;
            next += 1;
            (Some(s.index), i)
        })
        .collect();
    for _ in 0..short {
        wanted.push((None, next));
        next += 1;
    }
    if short > 0 {
        notes.push(format!(
            "pool {} serves {attached} of {} server(s)",
            live.id, live.size
        ));
    }
    for chunk in wanted.chunks(b) {
        let indices: Vec<u32> = chunk.iter().map(|(_, i)| *i).collect();
        let leaving: Vec<u32> = chunk.iter().filter_map(|(old, _)| *old).collect();
        steps.push(Step::AddSlots {
            pool: live.id.clone(),
            slots: chunk
                .iter()
                .map(|(old, i)| NewSlot {
                    index: *i,
                    replaces: *old,
                })
                .collect(),
        });
        steps.push(Step::Launch {
            pool: live.id.clone(),
            slots: indices.clone(),
        });
        steps.push(Step::Verify {
            pool: live.id.clone(),
            slots: indices.clone(),
        });
        steps.extend(super::expose_steps(
            &live.id,
            &indices,
            &indices,
            batch,
            policy.rollout.bake_time,
            crate::model::PoolState::Live,
        ));
        if !leaving.is_empty() {
            for c in leaving.chunks(batch.max(1)) {
                steps.push(Step::Detach {
                    pool: live.id.clone(),
                    slots: c.to_vec(),
                    replacements: refs(&live.id, &indices),
                });
            }
            steps.push(Step::AwaitDrained {
                pool: live.id.clone(),
                slots: leaving.clone(),
            });
            steps.extend(terminate_steps(&live.id, &leaving, batch));
        }
    }
    if !steps.is_empty() {
        steps.push(Step::VerifyServing {
            role: input.role.clone(),
            release: live.release.clone(),
        });
    }
    let summary = format!(
        "heal {} pool {}: replace {} sick server(s), add {short} missing",
        input.role,
        live.id,
        sick.len()
    );
    let mut plan = input.plan(
        OperationKind::Heal,
        summary,
        steps,
        FailurePolicy::Halt,
        None,
        Some(live.release.clone()),
    );
    plan.notes = notes;
    Ok(plan)
}
