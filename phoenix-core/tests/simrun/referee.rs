//! The referees: each checks one invariant against the ground truth of
//! the simulated world (never through the code under test), after every
//! operation, at convergence, or over the whole history. The world itself
//! referees what it can see at the moment of a call (a serving server
//! stopped, a detach below the floor or on a stale read, a call without
//! a lease, a duplicate launch, an uncertified launch, a surge).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use phoenix_core::events::{EventKind, Outcome};
use phoenix_core::id::{OperationId, PoolId, ServerId};
use phoenix_core::model::{PoolState, SlotState};
use phoenix_core::ops::ReconcileOptions;
use phoenix_core::plan::{OperationKind, Plan, Step};
use phoenix_core::ports::{MemberState, StateStore};
use phoenix_core::records::Snapshot;
use phoenix_core::sim::ServerTruth;
use phoenix_core::time::elapsed_between;

use super::{events_since, is_emergency_start, Op, Sim, CANARY, EMERGENCY_BOUND};

/// What an operation's referees need from before it ran.
pub struct Before {
    pub restore: Option<PoolId>,
    pub rolls_back: bool,
    pub kind: OperationKind,
    pub id: OperationId,
    pub steps: usize,
    pub target: Option<String>,
    pub restore_release: Option<String>,
    pub standby: usize,
    pub planned_at: phoenix_core::time::Timestamp,
    pub max_age: Duration,
}

impl Before {
    pub fn capture(sim: &Sim, plan: &Plan, snap: &Snapshot) -> Self {
        Self {
            restore: plan.restore.clone(),
            rolls_back: plan.on_failure == phoenix_core::policy::FailurePolicy::Rollback,
            kind: plan.kind,
            id: plan.id.clone(),
            steps: plan.steps.len(),
            target: plan.target_release.as_ref().map(ToString::to_string),
            restore_release: plan
                .restore
                .as_ref()
                .and_then(|id| snap.pool(id))
                .map(|p| p.release.to_string()),
            standby: snap
                .pools_of(&sim.web)
                .filter(|p| p.state.is_rollback_candidate())
                .count(),
            planned_at: plan.created_at,
            max_age: plan.policy.refresh.max_age,
        }
    }
}

fn ours(t: &ServerTruth) -> bool {
    t.server.labels.get("phoenix-deployment") == Some("shop")
}

/// Releases our active members run, by the ground truth of the default
/// balancer (true ids; members of other deployments left out).
pub fn serving_releases(sim: &Sim, snap: &Snapshot) -> BTreeSet<String> {
    let truth: BTreeMap<ServerId, ServerTruth> = sim
        .cloud
        .truth()
        .into_iter()
        .map(|t| (t.server.id.clone(), t))
        .collect();
    sim.cloud
        .members()
        .iter()
        .filter(|m| m.state == MemberState::Active)
        .filter(|m| truth.get(&m.server).is_none_or(ours))
        .map(|m| {
            snap.owner_of(&m.server)
                .map_or("unknown".into(), |(p, _)| p.release.to_string())
        })
        .collect()
}

/// Invariant 6 on the ground truth: every server of the deployment that
/// exists is accounted for by the records: held by a slot, given up on and
/// not yet terminated, awaiting adoption under its slot's token, or
/// remembered as a lost launch. A server the provider misreported (it
/// appeared after the declared window, or its termination was answered but
/// not done) cannot be in the records; once visible, reconcile must report
/// it.
async fn accounted(sim: &mut Sim, when: &str) {
    let snap = sim.phoenix.snapshot(&sim.shop).await.unwrap();
    let mut slots: BTreeSet<&ServerId> = BTreeSet::new();
    let mut waiting_tokens: BTreeSet<String> = BTreeSet::new();
    let mut lost_tokens: BTreeSet<String> = BTreeSet::new();
    let mut discarded: BTreeSet<&ServerId> = BTreeSet::new();
    for p in snap.pools.values().map(|s| &s.value) {
        for s in p.in_service() {
            if let Some(server) = &s.server {
                slots.insert(server);
            }
            if matches!(s.state, SlotState::Requested | SlotState::Pending) {
                waiting_tokens.insert(s.token.to_string());
            }
        }
        discarded.extend(
            p.discarded
                .iter()
                .filter(|d| !d.terminated)
                .map(|d| &d.server),
        );
        lost_tokens.extend(p.lost.iter().map(|l| l.token.to_string()));
    }
    let mut forgotten = Vec::new();
    let mut given_up = Vec::new();
    let mut misreported = Vec::new();
    for t in sim.cloud.truth().into_iter().filter(ours) {
        let token = t
            .server
            .labels
            .token()
            .map(|t| t.to_string())
            .unwrap_or_default();
        let held = slots.contains(&t.server.id)
            || discarded.contains(&t.server.id)
            || waiting_tokens.contains(&token);
        if !held && lost_tokens.contains(&token) {
            // Given up on as never launched: only a provider that broke
            // its window can show it now. One that kept it listed the
            // server in time, and giving it up left it running.
            if !t.misreported {
                given_up.push(format!("{} (token {token})", t.server.id));
            }
            continue;
        }
        if held {
            continue;
        }
        if t.misreported {
            if t.visible {
                misreported.push(t.server.id.clone());
            }
        } else {
            forgotten.push(format!("{} (token {token})", t.server.id));
        }
    }
    for g in given_up {
        sim.violation(format!(
            "invariant 6: {when}: {g} runs although its launch was given up as never made"
        ));
    }
    for f in forgotten {
        sim.violation(format!(
            "invariant 6: {when}: {f} exists but the records forgot it"
        ));
    }
    if !misreported.is_empty() && snap.record.value.active_operation.is_none() {
        let (report, _) = sim
            .phoenix
            .plan_reconcile(&sim.shop, &sim.web, ReconcileOptions::default())
            .await
            .unwrap_or_default_report();
        for m in misreported {
            if !report.orphans.contains(&m) {
                sim.violation(format!(
                    "invariant 6: {when}: {m} runs unowned and reconcile does not report it"
                ));
            }
        }
    }
}

trait DefaultReport {
    fn unwrap_or_default_report(self) -> (phoenix_core::ops::ReconcileReport, Option<Plan>);
}

impl DefaultReport
    for Result<(phoenix_core::ops::ReconcileReport, Plan), phoenix_core::ops::PlanningError>
{
    fn unwrap_or_default_report(self) -> (phoenix_core::ops::ReconcileReport, Option<Plan>) {
        match self {
            Ok((r, p)) => (r, Some(p)),
            Err(_) => (Default::default(), None),
        }
    }
}

/// Referees one finished (or resumed) operation.
pub async fn after_operation(sim: &mut Sim, ctx: &Before, outcome: Option<Outcome>, since: usize) {
    let snap = sim.phoenix.snapshot(&sim.shop).await.unwrap();
    let serving = serving_releases(sim, &snap);
    ages_never_younger(sim, &snap);
    match outcome {
        Some(Outcome::Succeeded) if ctx.steps > 0 => {
            if let (Some(t), true) = (
                &ctx.target,
                matches!(
                    ctx.kind,
                    OperationKind::Deploy | OperationKind::RollingReplace | OperationKind::Rollback
                ),
            ) {
                let want: BTreeSet<String> = [t.clone()].into_iter().collect();
                if serving != want {
                    sim.violation(format!(
                        "invariant 8: {} to {t} succeeded but {serving:?} serve",
                        ctx.kind
                    ));
                }
            }
            if ctx.kind == OperationKind::Reap {
                let after = snap
                    .pools_of(&sim.web)
                    .filter(|p| p.state.is_rollback_candidate())
                    .count();
                let keep = sim.policy.retention.keep;
                if after < keep.min(ctx.standby) {
                    sim.violation(format!(
                        "invariant 9: reap left {after} rollback pools of {} (keep {keep})",
                        ctx.standby
                    ));
                }
            }
            if ctx.kind == OperationKind::Refresh {
                aged_after_refresh(sim, ctx, &snap);
            }
        }
        Some(Outcome::RolledBack) => {
            if let Some(rr) = &ctx.restore_release {
                let want: BTreeSet<String> = [rr.clone()].into_iter().collect();
                if serving != want {
                    sim.violation(format!(
                        "invariant 4: {} rolled back to {rr} but {serving:?} serve",
                        ctx.kind
                    ));
                }
            }
        }
        _ => {}
    }
    failed_steps_never_succeed(sim, since).await;
    if outcome == Some(Outcome::Failed) {
        restored_when_possible(sim, ctx, &snap, since).await;
    }
    if snap.record.value.active_operation.is_none() {
        accounted(sim, &format!("after {} {}", ctx.kind, ctx.id)).await;
    }
}

/// Invariant 4: an operation with a failed step never ends succeeded (a
/// resumed run must not retry the step that failed).
async fn failed_steps_never_succeed(sim: &mut Sim, since: usize) {
    let mut failed: BTreeSet<OperationId> = BTreeSet::new();
    let mut found = Vec::new();
    for e in events_since(&sim.cloud, since).await {
        let Some(op) = e.operation.clone() else {
            continue;
        };
        match &e.kind {
            EventKind::StepFailed {
                rollback: false, ..
            } => {
                failed.insert(op);
            }
            EventKind::OperationFinished {
                outcome: Outcome::Succeeded,
                ..
            } if failed.contains(&op) => {
                found.push(format!(
                    "invariant 4: operation {op} succeeded although one of its steps failed"
                ));
            }
            _ => {}
        }
    }
    for f in found {
        sim.violation(f);
    }
}

/// Invariant 4: an operation that rolls back restores the previous pool
/// whenever it can: a rollback that failed although every server of that
/// pool is alive now (so nothing had died, nothing was out of budget, and
/// its release passes its checks) did not restore what it could.
async fn restored_when_possible(sim: &mut Sim, ctx: &Before, snap: &Snapshot, since: usize) {
    let (Some(restore), true) = (&ctx.restore, ctx.rolls_back) else {
        return;
    };
    let Some(pool) = snap.pool(restore) else {
        return;
    };
    let events = events_since(&sim.cloud, since).await;
    let Some(failure) = events.iter().find_map(|e| match &e.kind {
        EventKind::StepFailed {
            rollback: true,
            error,
            ..
        } if e.operation.as_ref() == Some(&ctx.id) => Some(error.clone()),
        _ => None,
    }) else {
        return;
    };
    // A release whose checks fail, flaky ones included, cannot be restored.
    if failure.contains("Smoke") || sim.cloud.faults().bad_releases.contains(&pool.release) {
        return;
    }
    // The pool was restored, and only the clean-up after it failed: a
    // server the failed pool gave up on still serves behind a balancer
    // that an operator points by hand (invariant 1 keeps it).
    if failure.starts_with("discarded servers of")
        && pool.state == phoenix_core::model::PoolState::Live
        && pool
            .in_service()
            .all(|s| s.traffic == phoenix_core::model::Traffic::Attached)
    {
        return;
    }
    let truth: BTreeMap<ServerId, ServerTruth> = sim
        .cloud
        .truth()
        .into_iter()
        .map(|t| (t.server.id.clone(), t))
        .collect();
    let in_service = pool.in_service().count();
    let alive = pool
        .in_service()
        .filter(|s| {
            s.server
                .as_ref()
                .and_then(|id| truth.get(id))
                .is_some_and(|t| t.alive)
        })
        .count();
    if alive == in_service && alive >= pool.size {
        sim.violation(format!(
            "invariant 4: {} did not restore pool {} although its {alive} servers are alive: {failure}",
            ctx.kind, pool.id
        ));
    }
}

/// Max age: a refresh that succeeded leaves no live server that was older
/// than the maximum age when it was planned (by when the server really
/// came to be, whatever launch time the provider reports).
fn aged_after_refresh(sim: &mut Sim, ctx: &Before, snap: &Snapshot) {
    let truth: BTreeMap<ServerId, ServerTruth> = sim
        .cloud
        .truth()
        .into_iter()
        .map(|t| (t.server.id.clone(), t))
        .collect();
    let mut old = Vec::new();
    for pool in snap.live_pools(&sim.web) {
        for s in pool.attached() {
            let Some(t) = s.server.as_ref().and_then(|id| truth.get(id)) else {
                continue;
            };
            if elapsed_between(t.created_at, ctx.planned_at) > ctx.max_age {
                old.push(format!("{} (slot {} of {})", t.server.id, s.index, pool.id));
            }
        }
    }
    if !old.is_empty() {
        sim.violation(format!(
            "max age: refresh {} succeeded but {} stayed past the maximum age",
            ctx.id,
            old.join(", ")
        ));
    }
}

/// Max age rests on the records' launch times: a record may call a
/// server older than it is, never younger (a provider that reports a start
/// as a launch must not reset its age).
fn ages_never_younger(sim: &mut Sim, snap: &Snapshot) {
    let truth: BTreeMap<ServerId, ServerTruth> = sim
        .cloud
        .truth()
        .into_iter()
        .map(|t| (t.server.id.clone(), t))
        .collect();
    let mut young = Vec::new();
    for pool in snap.pools_of(&sim.web) {
        for s in &pool.slots {
            let (Some(id), Some(recorded)) = (s.server.as_ref(), s.launched_at) else {
                continue;
            };
            let Some(t) = truth.get(id) else {
                continue;
            };
            if recorded > t.created_at {
                young.push(format!(
                    "{id} (slot {} of {}) recorded as launched at {recorded}, created at {}",
                    s.index, pool.id, t.created_at
                ));
            }
        }
    }
    if !young.is_empty() {
        sim.violation(format!("max age: {}", young.join(", ")));
    }
}

/// Checks a plan against the ground truth when it is made: heal must not
/// replace servers that serve well (it would, on an empty or partial read).
pub async fn plan_made(sim: &mut Sim, op: &Op, plan: &Plan) {
    if !matches!(op, Op::Heal) {
        return;
    }
    let snap = sim.phoenix.snapshot(&sim.shop).await.unwrap();
    let truth: BTreeMap<ServerId, ServerTruth> = sim
        .cloud
        .truth()
        .into_iter()
        .map(|t| (t.server.id.clone(), t))
        .collect();
    let members = sim.cloud.members();
    let mut healthy_replaced = Vec::new();
    for step in &plan.steps {
        let Step::AddSlots { pool, slots } = step else {
            continue;
        };
        for new in slots {
            let Some(old) = new.replaces else { continue };
            let Some(slot) = snap.pool(pool).and_then(|p| p.slot(old)) else {
                continue;
            };
            let Some(server) = &slot.server else { continue };
            let alive = truth.get(server).is_some_and(|t| t.alive);
            let serving_well = members.iter().any(|m| {
                &m.server == server && m.state == MemberState::Active && m.is_serving_healthy()
            });
            if alive && serving_well {
                healthy_replaced.push(format!("{server} (slot {old} of {pool})"));
            }
        }
    }
    if !healthy_replaced.is_empty() {
        sim.violation(format!(
            "heal planned to replace servers that serve well: {}",
            healthy_replaced.join(", ")
        ));
    }
}

/// Invariant 11: an emergency rollback starts within seconds of being
/// asked for, whatever runs (a refresh waiting on its budget included).
pub async fn emergency_latency(sim: &mut Sim, asked: tokio::time::Instant, since: usize) {
    let events = events_since(&sim.cloud, since).await;
    let requested = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::PreemptionRequested { .. }))
        .map(|e| e.at);
    let started = events.iter().find(|e| is_emergency_start(e)).map(|e| e.at);
    if let (Some(requested), Some(started)) = (requested, started) {
        let took = elapsed_between(requested, started);
        if took > EMERGENCY_BOUND {
            sim.violation(format!(
                "invariant 11: an emergency rollback started {} after it was asked for",
                phoenix_core::time::human(took)
            ));
        }
    }
    let _ = asked;
}

/// An emergency rollback that succeeded leaves only its target serving.
pub async fn emergency_served(sim: &mut Sim, report: &phoenix_core::executor::OperationReport) {
    if report.outcome != Outcome::Succeeded {
        return;
    }
    let snap = sim.phoenix.snapshot(&sim.shop).await.unwrap();
    let serving = serving_releases(sim, &snap);
    let Some(live) = snap.live_pool(&sim.web) else {
        sim.violation("invariant 8: an emergency rollback succeeded but nothing is live".into());
        return;
    };
    let want: BTreeSet<String> = [live.release.to_string()].into_iter().collect();
    if serving != want {
        sim.violation(format!(
            "invariant 8: emergency rollback to {} succeeded but {serving:?} serve",
            live.release
        ));
    }
}

/// Once faults stopped and the convergence operations ran: the records,
/// the cloud and the balancers agree, and the live pool serves at full
/// capacity.
pub async fn converged(sim: &mut Sim) {
    let (report, _) = match sim
        .phoenix
        .plan_reconcile(&sim.shop, &sim.web, ReconcileOptions::default())
        .await
    {
        Ok(r) => r,
        Err(e) => {
            sim.violation(format!("convergence: reconcile could not plan: {e}"));
            return;
        }
    };
    if !report.orphans.is_empty() || !report.missing.is_empty() {
        sim.violation(format!("invariant 6: after convergence: {report}"));
    }
    for d in &report.drift {
        use phoenix_core::ops::Drift;
        if matches!(
            d,
            Drift::InactiveMember { .. }
                | Drift::MissingMember { .. }
                | Drift::UnattributedMember { .. }
                | Drift::LateLaunch { .. }
        ) {
            sim.violation(format!("convergence: drift left: {d}"));
        }
    }
    accounted(sim, "after convergence").await;
    let snap = sim.phoenix.snapshot(&sim.shop).await.unwrap();
    let truth = sim.cloud.truth();
    let tokens: BTreeSet<_> = truth
        .iter()
        .filter(|t| ours(t))
        .filter_map(|t| t.server.labels.token())
        .collect();
    if tokens.len() != truth.iter().filter(|t| ours(t)).count() {
        sim.violation("invariant 6: two servers share a launch token".into());
    }
    match snap.live_pool(&sim.web) {
        // Known gap (in issue 11's closing note): a first switch cut short
        // by an emergency, with nothing to roll back to, whose servers then
        // die, is not healed: heal needs a live pool and a deploy reuses
        // the dead one.
        None if !ever_live(sim).await => {}
        None => sim.violation("convergence: nothing is live".into()),
        Some(live) => {
            let desired = snap.deployment().roles[&sim.web].desired;
            let ours_by_id: BTreeSet<ServerId> = truth
                .iter()
                .filter(|t| ours(t))
                .map(|t| t.server.id.clone())
                .collect();
            let healthy = sim
                .cloud
                .members()
                .iter()
                .filter(|m| m.is_serving_healthy() && ours_by_id.contains(&m.server))
                .count();
            let serving = serving_releases(sim, &snap);
            let want: BTreeSet<String> = [live.release.to_string()].into_iter().collect();
            if healthy != desired || serving != want {
                sim.violation(format!(
                    "convergence: {healthy}/{desired} healthy members serving {serving:?}, live pool {} runs {}",
                    live.id, live.release
                ));
            }
        }
    }
    if snap
        .pools_of(&sim.web)
        .any(|p| p.state == PoolState::Failed)
    {
        sim.violation("convergence: a failed pool survived reaping".into());
    }
    let header = &snap.record.value;
    if header.operations.len() > 32 {
        sim.violation(format!(
            "records: the deployment header lists {} operations",
            header.operations.len()
        ));
    }
    let _: Option<&PoolId> = None;
}

/// Over the whole history: the blast radius of every step, and no secret
/// anywhere in the store.
pub async fn history(sim: &mut Sim) {
    let store = sim.cloud.store().inner().clone();
    let events = events_since(&sim.cloud, 0).await;
    let mut changes = 0;
    let mut switching = false;
    // The atomic switch moves every member at once; the policy consents.
    let consented = sim.policy.rollout.cutover == phoenix_core::policy::Cutover::Switch;
    let mut found = Vec::new();
    for e in &events {
        match &e.kind {
            EventKind::StepStarted { step, .. } => {
                changes = 0;
                switching = consented && step.starts_with("switch all traffic");
            }
            EventKind::StepFinished { .. } if switching => {
                sim.tally.switches += 1;
                switching = false;
            }
            EventKind::ServerAttached { .. }
            | EventKind::ServerDetached { .. }
            | EventKind::ServerStopped { .. }
            | EventKind::ServerStarted { .. } => {
                changes += 1;
                if changes > sim.batch && !switching {
                    found.push(format!("invariant 3: a step changed {changes} servers"));
                }
            }
            _ => {}
        }
    }
    for (k, v) in store.dump() {
        let text = String::from_utf8_lossy(&v);
        if text.contains(CANARY) || k.contains(CANARY) {
            found.push(format!("invariant 10: the secret is stored under {k}"));
        }
    }
    for f in found {
        sim.violation(f);
    }
    let _ = store.events("deployments/shop", 0, 1).await;
}

/// Whether a pool of the deployment was ever marked live.
pub async fn ever_live(sim: &Sim) -> bool {
    events_since(&sim.cloud, 0).await.iter().any(|e| {
        matches!(
            &e.kind,
            EventKind::PoolStateChanged { to, .. } if *to == phoenix_core::model::PoolState::Live
        )
    })
}
