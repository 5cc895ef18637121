use std::collections::BTreeMap;

use crate::executor::guards::MemberIndex;
use crate::id::ServerId;
use crate::model::{Pool, Server, ServerStatus, Slot, Traffic};
use crate::plan::{NewSlot, OperationKind, Plan, Step};
use crate::policy::FailurePolicy;
use crate::ports::{Member, MemberHealth};

use super::{refs, terminate_steps, PlanInput, PlanningError};

/// Why a live slot needs replacing, from fresh reads. A server the cloud
/// runs but the balancer does not list is not sick: the balancer lost the
/// member (reconcile's `restore_members` attaches it again); replacing it
/// on a partial read would replace servers that serve well.
fn ailment(
    slot: &Slot,
    members: &MemberIndex<'_>,
    cloud: &BTreeMap<&ServerId, &Server>,
) -> Option<String> {
    let Some(server) = slot.server.as_ref() else {
        return Some(format!("slot {} has no server", slot.index));
    };
    match cloud.get(server).map(|s| &s.status) {
        None => return Some(format!("{server} is gone from the cloud")),
        Some(ServerStatus::Active) => {}
        Some(other) => return Some(format!("{server} is {other}")),
    }
    match members.of_slot(slot) {
        Some(m) if m.health == MemberHealth::Unhealthy => {
            Some(format!("{server} fails the balancer's health checks"))
        }
        _ => None,
    }
}

struct PoolHeal<'a> {
    pool: &'a Pool,
    sick: Vec<(u32, String)>,
    missing: usize,
    surplus: Vec<u32>,
    lingering: Vec<u32>,
}

fn examine<'a>(
    pool: &'a Pool,
    members: &MemberIndex<'_>,
    cloud: &BTreeMap<&ServerId, &Server>,
    sole: bool,
) -> PoolHeal<'a> {
    let attached: Vec<&Slot> = pool.attached().collect();
    let sick: Vec<(u32, String)> = attached
        .iter()
        .filter_map(|s| ailment(s, members, cloud).map(|why| (s.index, why)))
        .collect();
    let well: Vec<&Slot> = attached
        .iter()
        .copied()
        .filter(|s| !sick.iter().any(|(i, _)| *i == s.index))
        .collect();
    let (missing, surplus, lingering) = if sole {
        let missing = pool.size.saturating_sub(attached.len());
        // Surplus from a halted heal or refresh: replaced servers first,
        // then the oldest. Sick servers count, since this heal replaces
        // each of them by one: a pool one over its size with one sick
        // server would otherwise keep its extra server until another heal.
        let mut extra: Vec<&Slot> = well.clone();
        extra.sort_by_key(|s| {
            let replaced = well.iter().any(|o| o.replaces == Some(s.index));
            (!replaced, s.launched_at, s.index)
        });
        let surplus: Vec<u32> = extra
            .iter()
            .take((well.len() + sick.len()).saturating_sub(pool.size))
            .map(|s| s.index)
            .collect();
        // Servers a halted operation launched but never attached.
        let lingering: Vec<u32> = pool
            .in_service()
            .filter(|s| s.traffic == Traffic::Out)
            .map(|s| s.index)
            .collect();
        (missing, surplus, lingering)
    } else {
        // Several live pools (a halted rolling replacement): only sick
        // servers are replaced; capacity is settled by finishing or
        // reverting the replacement.
        (0, Vec::new(), Vec::new())
    };
    PoolHeal {
        pool,
        sick,
        missing,
        surplus,
        lingering,
    }
}

/// Replaces dead or unhealthy members of the live pools with servers of
/// the same release, tops a sole live pool up to its size and trims what a
/// halted operation left over: each replacement is launched, verified,
/// attached and baked before the sick server leaves and is terminated.
/// `members` and `cloud` are fresh reads.
pub fn heal(
    input: &PlanInput<'_>,
    members: &[Member],
    cloud: &[Server],
) -> Result<Plan, PlanningError> {
    input.check()?;
    let lives = input.live_pools();
    if lives.is_empty() {
        return Err(PlanningError::NothingLive(input.role.clone()));
    }
    // A balancer that answers nothing while servers are recorded behind it
    // restarted or is not the right one: healing on that read would
    // replace the whole fleet. Planning fails closed, as execution does.
    let attached = lives.iter().flat_map(|p| p.attached()).count();
    if members.is_empty() && attached > 0 {
        return Err(PlanningError::UntrustedRead(format!(
            "the balancer lists no member while {attached} server(s) of {} are recorded behind it",
            input.role
        )));
    }
    let sole = lives.len() == 1
        && lives
            .first()
            .is_some_and(|l| input.serving_pools(Some(&l.id)).is_empty());
    let policy = input.policy;
    let batch = policy.rollout.batch_size;
    let b = policy.rolling_batch();
    let by_member = MemberIndex::new(members);
    let by_cloud: BTreeMap<&ServerId, &Server> = cloud.iter().map(|s| (&s.id, s)).collect();
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    let (mut sick_total, mut missing_total, mut surplus_total) = (0, 0, 0);
    for live in &lives {
        let h = examine(live, &by_member, &by_cloud, sole);
        let pool = h.pool;
        sick_total += h.sick.len();
        missing_total += h.missing;
        surplus_total += h.surplus.len();
        for (i, why) in &h.sick {
            notes.push(format!("{} slot {i}: {why}", pool.id));
        }
        if h.missing > 0 {
            notes.push(format!(
                "pool {} serves {} of {} server(s)",
                pool.id,
                pool.size - h.missing,
                pool.size
            ));
        }
        if !h.surplus.is_empty() {
            notes.push(format!(
                "pool {} has {} server(s) too many",
                pool.id,
                h.surplus.len()
            ));
        }
        steps.extend(terminate_steps(&pool.id, &h.lingering, batch));
        let mut next = pool.next_index();
        let mut wanted: Vec<(Option<u32>, u32)> = Vec::new();
        for (old, _) in &h.sick {
            wanted.push((Some(*old), next));
            next += 1;
        }
        for _ in 0..h.missing {
            wanted.push((None, next));
            next += 1;
        }
        for chunk in wanted.chunks(b) {
            let indices: Vec<u32> = chunk.iter().map(|(_, i)| *i).collect();
            let leaving: Vec<u32> = chunk.iter().filter_map(|(old, _)| *old).collect();
            steps.push(Step::AddSlots {
                pool: pool.id.clone(),
                slots: chunk
                    .iter()
                    .map(|(old, i)| NewSlot {
                        index: *i,
                        replaces: *old,
                    })
                    .collect(),
            });
            steps.push(Step::Launch {
                pool: pool.id.clone(),
                slots: indices.clone(),
            });
            steps.push(Step::Verify {
                pool: pool.id.clone(),
                slots: indices.clone(),
            });
            steps.extend(super::expose_steps(
                &pool.id,
                &indices,
                &indices,
                batch,
                policy.rollout.bake_time,
                crate::model::PoolState::Live,
            ));
            if !leaving.is_empty() {
                for c in leaving.chunks(batch.max(1)) {
                    steps.push(Step::Detach {
                        pool: pool.id.clone(),
                        slots: c.to_vec(),
                        replacements: refs(&pool.id, &indices),
                    });
                }
                steps.push(Step::AwaitDrained {
                    pool: pool.id.clone(),
                    slots: leaving.clone(),
                });
                steps.extend(terminate_steps(&pool.id, &leaving, batch));
            }
        }
        if !h.surplus.is_empty() {
            for c in h.surplus.chunks(batch.max(1)) {
                steps.push(Step::Detach {
                    pool: pool.id.clone(),
                    slots: c.to_vec(),
                    replacements: Vec::new(),
                });
            }
            steps.push(Step::AwaitDrained {
                pool: pool.id.clone(),
                slots: h.surplus.clone(),
            });
            steps.extend(terminate_steps(&pool.id, &h.surplus, batch));
        }
    }
    let release = match (sole, lives.first()) {
        (true, Some(l)) => Some(l.release.clone()),
        _ => None,
    };
    if let (Some(r), false) = (&release, steps.is_empty()) {
        steps.push(Step::VerifyServing {
            role: input.role.clone(),
            release: r.clone(),
        });
    }
    let summary = format!(
        "heal {} ({}): replace {sick_total} sick server(s), add {missing_total} missing, remove {surplus_total} surplus",
        input.role,
        lives
            .iter()
            .map(|p| p.id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut plan = input.plan(
        OperationKind::Heal,
        summary,
        steps,
        FailurePolicy::Halt,
        None,
        release,
    );
    plan.notes = notes;
    Ok(plan)
}
