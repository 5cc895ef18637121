//! Plans: ordered, typed steps that can be printed (a dry run),
//! serialised, checked, and applied by the executor.

mod compact;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::events::Invariant;
use crate::id::{DeploymentId, ImageId, OperationId, PoolId, ReleaseLabel, RoleName, ServerId};
use crate::model::PoolState;
use crate::policy::{FailurePolicy, Policy, PolicyError};
use crate::time::{duration_ms, human, Timestamp};

/// The operations Phoenix performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OperationKind {
    /// Create and verify a pool.
    Provision,
    /// Blue-green switch to a release.
    Deploy,
    /// Replace the live pool batch by batch.
    RollingReplace,
    /// Make a previous release live again.
    Rollback,
    /// Delete pools beyond retention.
    Reap,
    /// Replace servers older than the maximum age.
    Refresh,
    /// Replace dead or unhealthy live servers.
    Heal,
    /// Compare store, cloud and balancer; remove orphans on request.
    Reconcile,
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Provision => "provision",
            Self::Deploy => "deploy",
            Self::RollingReplace => "rolling replace",
            Self::Rollback => "rollback",
            Self::Reap => "reap",
            Self::Refresh => "refresh",
            Self::Heal => "heal",
            Self::Reconcile => "reconcile",
        };
        f.write_str(s)
    }
}

/// A slot of a pool.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlotRef {
    /// Pool.
    pub pool: PoolId,
    /// Slot index.
    pub slot: u32,
}

/// A slot a step adds to a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSlot {
    /// Its index.
    pub index: u32,
    /// The slot it replaces, if any.
    pub replaces: Option<u32>,
}

/// One step of a plan. Every step is idempotent: the executor re-runs the
/// step it was in when it crashed, and the step converges.
///
/// Slot lists are written to JSON in runs of consecutive slots (see
/// `compact.rs`); lists written one entry per slot read as well.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Step {
    /// Records a new pool with `size` pending slots.
    CreatePool {
        /// Pool.
        pool: PoolId,
        /// Role.
        role: RoleName,
        /// Release.
        release: ReleaseLabel,
        /// Image.
        image: ImageId,
        /// Desired servers.
        size: usize,
        /// Slots created now (a rolling replacement adds them all up front
        /// and launches them batch by batch).
        slots: u32,
    },
    /// Adds slots to a pool (replacements for heal and refresh; restoring
    /// capacity on rollback).
    AddSlots {
        /// Pool.
        pool: PoolId,
        /// New slots.
        #[serde(with = "compact::new_slots")]
        slots: Vec<NewSlot>,
    },
    /// Launches the slots' servers and waits until they run, replacing
    /// failed or stuck launches within the budget.
    Launch {
        /// Pool.
        pool: PoolId,
        /// Slots.
        #[serde(with = "compact::slots")]
        slots: Vec<u32>,
    },
    /// Health-checks and smoke-tests the slots' servers directly.
    Verify {
        /// Pool.
        pool: PoolId,
        /// Slots.
        #[serde(with = "compact::slots")]
        slots: Vec<u32>,
    },
    /// Moves a pool to a new lifecycle state.
    SetPoolState {
        /// Pool.
        pool: PoolId,
        /// Target state.
        to: PoolState,
    },
    /// Puts the slots' servers behind the balancer.
    Attach {
        /// Pool.
        pool: PoolId,
        /// Slots.
        #[serde(with = "compact::slots")]
        slots: Vec<u32>,
    },
    /// Stages the slots' servers on the balancer (checked by it, taking no
    /// traffic) and waits until its checks pass; the first half of an
    /// atomic switch.
    Stage {
        /// Pool.
        pool: PoolId,
        /// Slots.
        #[serde(with = "compact::slots")]
        slots: Vec<u32>,
    },
    /// Moves all traffic to the slots' servers in one atomic balancer call
    /// and starts draining `away`, once a fresh read shows the new servers
    /// staged, healthy and enough for the capacity floor. Old members are
    /// not stopped or terminated here: they drain and stay as the standby.
    Switch {
        /// Pool.
        pool: PoolId,
        /// Slots that take the traffic.
        #[serde(with = "compact::slots")]
        slots: Vec<u32>,
        /// Slots of other pools that serve now and leave.
        #[serde(with = "compact::slot_refs")]
        away: Vec<SlotRef>,
        /// The leaving members stay as standby members under the
        /// balancer's checks (a balancer that keeps standby members).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        standby: bool,
    },
    /// Waits until the balancer sees the slots' servers healthy.
    AwaitHealthy {
        /// Pool.
        pool: PoolId,
        /// Slots.
        #[serde(with = "compact::slots")]
        slots: Vec<u32>,
    },
    /// Waits `duration` while the slots stay healthy behind the balancer.
    Bake {
        /// Pool.
        pool: PoolId,
        /// Slots.
        #[serde(with = "compact::slots")]
        slots: Vec<u32>,
        /// Bake time.
        #[serde(with = "duration_ms")]
        duration: Duration,
    },
    /// The canary gate: the slots' servers (attached and healthy by the
    /// steps before) serve next to `baseline`, the live members, for
    /// `window` (at the policy's canary weight where the balancer routes
    /// by weight); then the balancer's numbers for the canary are judged
    /// against the policy's canary thresholds, and the user's canary check
    /// runs. A failing gate fails the step with the measured numbers; the
    /// compensation takes the canary out and leaves `baseline` serving.
    Canary {
        /// Pool.
        pool: PoolId,
        /// The canary slots.
        #[serde(with = "compact::slots")]
        slots: Vec<u32>,
        /// The live members it is compared with (they never leave during
        /// the canary).
        #[serde(with = "compact::slot_refs")]
        baseline: Vec<SlotRef>,
        /// The analysis window.
        #[serde(with = "duration_ms")]
        window: Duration,
    },
    /// Takes the slots' servers out of the balancer with draining, once
    /// their replacements are attached, healthy, verified and baked and the
    /// capacity floor holds without them.
    Detach {
        /// Pool.
        pool: PoolId,
        /// Slots.
        #[serde(with = "compact::slots")]
        slots: Vec<u32>,
        /// What must be serving before they leave.
        #[serde(with = "compact::slot_refs")]
        replacements: Vec<SlotRef>,
    },
    /// Takes the slots' servers out of the traffic, like [`Step::Detach`]
    /// and under the same guard, but leaves them members of the balancer,
    /// kept under its checks (a hot standby that a rollback gives the
    /// traffic again without checking it anew).
    Standby {
        /// Pool.
        pool: PoolId,
        /// Slots.
        #[serde(with = "compact::slots")]
        slots: Vec<u32>,
        /// What must be serving before they leave.
        #[serde(with = "compact::slot_refs")]
        replacements: Vec<SlotRef>,
    },
    /// Waits until a fresh balancer read shows the slots detached and
    /// drained.
    AwaitDrained {
        /// Pool.
        pool: PoolId,
        /// Slots.
        #[serde(with = "compact::slots")]
        slots: Vec<u32>,
    },
    /// Stops the slots' servers (cold standby).
    Stop {
        /// Pool.
        pool: PoolId,
        /// Slots.
        #[serde(with = "compact::slots")]
        slots: Vec<u32>,
    },
    /// Starts stopped servers and waits until they run.
    Start {
        /// Pool.
        pool: PoolId,
        /// Slots.
        #[serde(with = "compact::slots")]
        slots: Vec<u32>,
    },
    /// Terminates the slots' servers once a fresh balancer read shows them
    /// detached and drained.
    Terminate {
        /// Pool.
        pool: PoolId,
        /// Slots.
        #[serde(with = "compact::slots")]
        slots: Vec<u32>,
    },
    /// Terminates servers the pool gave up on (failed launches).
    CleanUpDiscarded {
        /// Pool.
        pool: PoolId,
    },
    /// Marks a retired pool whose servers are all gone as deleted.
    DeletePool {
        /// Pool.
        pool: PoolId,
    },
    /// Waits until the replacement-rate budget allows `count` more
    /// replacements, and records them.
    AwaitReplacementBudget {
        /// Replacements about to start.
        count: usize,
    },
    /// Checks with a fresh read that every serving member of the role runs
    /// the release (and that there is at least one).
    VerifyServing {
        /// Role.
        role: RoleName,
        /// Release.
        release: ReleaseLabel,
    },
    /// Records slots whose servers vanished from the cloud.
    MarkMissing {
        /// Pool.
        pool: PoolId,
        /// Slots.
        #[serde(with = "compact::slots")]
        slots: Vec<u32>,
    },
    /// Terminates labelled servers that belong to no recorded pool, each
    /// only after a fresh balancer read shows it is not a member.
    TerminateOrphans {
        /// Servers.
        servers: Vec<ServerId>,
    },
}

impl Step {
    /// How many servers this step changes the serving state of (attach,
    /// detach, stop, start, terminate): the blast radius.
    pub fn changes(&self) -> usize {
        match self {
            Self::Attach { slots, .. }
            | Self::Detach { slots, .. }
            | Self::Standby { slots, .. }
            | Self::Stop { slots, .. }
            | Self::Start { slots, .. }
            | Self::Terminate { slots, .. } => slots.len(),
            Self::Switch { slots, away, .. } => slots.len() + away.len(),
            Self::TerminateOrphans { servers } => servers.len(),
            _ => 0,
        }
    }

    /// The pool this step works on, if one.
    pub fn pool(&self) -> Option<&PoolId> {
        match self {
            Self::CreatePool { pool, .. }
            | Self::AddSlots { pool, .. }
            | Self::Launch { pool, .. }
            | Self::Verify { pool, .. }
            | Self::SetPoolState { pool, .. }
            | Self::Attach { pool, .. }
            | Self::Stage { pool, .. }
            | Self::Switch { pool, .. }
            | Self::AwaitHealthy { pool, .. }
            | Self::Bake { pool, .. }
            | Self::Canary { pool, .. }
            | Self::Detach { pool, .. }
            | Self::Standby { pool, .. }
            | Self::AwaitDrained { pool, .. }
            | Self::Stop { pool, .. }
            | Self::Start { pool, .. }
            | Self::Terminate { pool, .. }
            | Self::CleanUpDiscarded { pool }
            | Self::DeletePool { pool }
            | Self::MarkMissing { pool, .. } => Some(pool),
            Self::AwaitReplacementBudget { .. }
            | Self::VerifyServing { .. }
            | Self::TerminateOrphans { .. } => None,
        }
    }
}

/// Formats slot indices compactly: `0-2, 5, 7-9`.
pub fn slot_list(slots: &[u32]) -> String {
    let mut sorted = slots.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(", ")
}

fn servers_word(n: usize) -> &'static str {
    if n == 1 {
        "server"
    } else {
        "servers"
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CreatePool {
                pool,
                release,
                image,
                size,
                ..
            } => write!(
                f,
                "create pool {pool} for release {release} (image {image}, {size} {})",
                servers_word(*size)
            ),
            Self::AddSlots { pool, slots } => {
                let idx: Vec<u32> = slots.iter().map(|s| s.index).collect();
                let replaced: Vec<u32> = slots.iter().filter_map(|s| s.replaces).collect();
                write!(f, "add slots {} to {pool}", slot_list(&idx))?;
                if !replaced.is_empty() {
                    write!(f, " replacing {}", slot_list(&replaced))?;
                }
                Ok(())
            }
            Self::Launch { pool, slots } => {
                write!(
                    f,
                    "launch slots {} of {pool} and wait until they run",
                    slot_list(slots)
                )
            }
            Self::Verify { pool, slots } => {
                write!(
                    f,
                    "health-check and smoke-test slots {} of {pool}",
                    slot_list(slots)
                )
            }
            Self::SetPoolState { pool, to } => write!(f, "mark pool {pool} {to}"),
            Self::Attach { pool, slots } => {
                write!(
                    f,
                    "attach slots {} of {pool} to the balancer",
                    slot_list(slots)
                )
            }
            Self::Stage { pool, slots } => write!(
                f,
                "stage slots {} of {pool} on the balancer (checked, no traffic) and wait until healthy",
                slot_list(slots)
            ),
            Self::Switch {
                pool,
                slots,
                away,
                standby,
            } => {
                let mut pools: Vec<&str> = away.iter().map(|r| r.pool.as_str()).collect();
                pools.dedup();
                write!(
                    f,
                    "switch all traffic to slots {} of {pool} in one balancer call",
                    slot_list(slots)
                )?;
                if !away.is_empty() {
                    write!(
                        f,
                        "; {} member(s) of {} drain out{}",
                        away.len(),
                        pools.join(", "),
                        if *standby {
                            " to standby (kept under the balancer's checks)"
                        } else {
                            ""
                        }
                    )?;
                }
                Ok(())
            }
            Self::AwaitHealthy { pool, slots } => write!(
                f,
                "wait until slots {} of {pool} are healthy behind the balancer",
                slot_list(slots)
            ),
            Self::Bake {
                pool,
                slots,
                duration,
            } => write!(
                f,
                "bake slots {} of {pool} for {}",
                slot_list(slots),
                human(*duration)
            ),
            Self::Canary {
                pool,
                slots,
                baseline,
                window,
            } => write!(
                f,
                "canary: slots {} of {pool} serve next to {} live member(s) for {}, then the canary gate decides (fail: the canary leaves, the live pool stays)",
                slot_list(slots),
                baseline.len(),
                human(*window)
            ),
            Self::Detach {
                pool,
                slots,
                replacements,
            } => {
                write!(f, "detach slots {} of {pool} with drain", slot_list(slots))?;
                if !replacements.is_empty() {
                    write!(f, " (after {} replacement(s) serve)", replacements.len())?;
                }
                Ok(())
            }
            Self::Standby {
                pool,
                slots,
                replacements,
            } => {
                write!(
                    f,
                    "move slots {} of {pool} to standby with drain (kept under the balancer's checks)",
                    slot_list(slots)
                )?;
                if !replacements.is_empty() {
                    write!(f, " (after {} replacement(s) serve)", replacements.len())?;
                }
                Ok(())
            }
            Self::AwaitDrained { pool, slots } => {
                write!(
                    f,
                    "wait until slots {} of {pool} are drained",
                    slot_list(slots)
                )
            }
            Self::Stop { pool, slots } => write!(f, "stop slots {} of {pool}", slot_list(slots)),
            Self::Start { pool, slots } => {
                write!(
                    f,
                    "start slots {} of {pool} and wait until they run",
                    slot_list(slots)
                )
            }
            Self::Terminate { pool, slots } => {
                write!(f, "terminate slots {} of {pool}", slot_list(slots))
            }
            Self::CleanUpDiscarded { pool } => {
                write!(f, "terminate servers {pool} gave up on")
            }
            Self::DeletePool { pool } => write!(f, "delete pool {pool}"),
            Self::AwaitReplacementBudget { count } => write!(
                f,
                "wait for the replacement budget to allow {count} {}",
                if *count == 1 {
                    "replacement"
                } else {
                    "replacements"
                }
            ),
            Self::VerifyServing { role, release } => write!(
                f,
                "verify every serving {role} member runs release {release}"
            ),
            Self::MarkMissing { pool, slots } => write!(
                f,
                "record slots {} of {pool} as missing from the cloud",
                slot_list(slots)
            ),
            Self::TerminateOrphans { servers } => {
                let list: Vec<&str> = servers.iter().map(ServerId::as_str).collect();
                write!(
                    f,
                    "terminate {} orphan {}: {}",
                    servers.len(),
                    servers_word(servers.len()),
                    list.join(", ")
                )
            }
        }
    }
}

/// Something that must still hold when the plan is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "precondition", rename_all = "snake_case")]
pub enum Precondition {
    /// The deployment's records are at this generation.
    Generation {
        /// The generation the plan was made against.
        generation: u64,
    },
    /// A pool is in a state.
    PoolState {
        /// Pool.
        pool: PoolId,
        /// State.
        state: PoolState,
    },
    /// A fresh balancer read shows at least this many healthy members of
    /// the pool.
    HealthyMembers {
        /// Pool.
        pool: PoolId,
        /// Minimum.
        at_least: usize,
    },
    /// The image served long enough in the staging deployment the
    /// deployment's promotion rule names (proved again at apply time).
    Promoted {
        /// The proof found when planning.
        proof: crate::model::PromotionProof,
    },
}

impl fmt::Display for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Generation { generation } => {
                write!(
                    f,
                    "the deployment's records are still at generation {generation}"
                )
            }
            Self::PoolState { pool, state } => write!(f, "pool {pool} is {state}"),
            Self::HealthyMembers { pool, at_least } => write!(
                f,
                "the balancer serves at least {at_least} healthy member(s) of pool {pool}"
            ),
            Self::Promoted { proof } => write!(f, "promoted: {proof}"),
        }
    }
}

/// An ordered list of typed steps for one operation on one role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Operation id.
    pub id: OperationId,
    /// Kind.
    pub kind: OperationKind,
    /// Deployment.
    pub deployment: DeploymentId,
    /// Role (for reconcile: every role; the first is named).
    pub role: RoleName,
    /// One line for people.
    pub summary: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// The policy it was made with and will be applied with.
    pub policy: Policy,
    /// What must still hold at apply time.
    pub preconditions: Vec<Precondition>,
    /// The steps.
    pub steps: Vec<Step>,
    /// What a failure does.
    pub on_failure: FailurePolicy,
    /// The pool to restore on failure, when rolling back.
    pub restore: Option<PoolId>,
    /// The release serving when the plan succeeds.
    pub target_release: Option<ReleaseLabel>,
    /// Remarks for the dry run (refusals, findings).
    pub notes: Vec<String>,
}

/// A plan that must not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The policy is unusable.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A step changes more servers than the policy allows (an atomic
    /// switch is allowed to only under `cutover: switch`).
    #[error("step {index} ({step}) changes {changes} servers; the blast radius allows {limit} (invariant {invariant})")]
    BlastRadius {
        /// 1-based step number.
        index: usize,
        /// The step.
        step: String,
        /// Servers it changes.
        changes: usize,
        /// The limit.
        limit: usize,
        /// Always `BlastRadius`.
        invariant: Invariant,
    },
    /// The plan has no steps but claims to do something.
    #[error("plan {0} has no steps")]
    Empty(OperationId),
}

impl Plan {
    /// Checks the plan against its policy before any API call: an unusable
    /// policy or a step exceeding the blast radius rejects the whole plan.
    pub fn validate(&self) -> Result<(), PlanError> {
        self.policy.validate()?;
        let limit = self.policy.rollout.batch_size;
        for (i, step) in self.steps.iter().enumerate() {
            let changes = step.changes();
            // The atomic switch moves every member at once by design; the
            // policy's cutover is the operator's consent to it.
            let consented = matches!(step, Step::Switch { .. })
                && self.policy.rollout.cutover == crate::policy::Cutover::Switch;
            if changes > limit && !consented {
                return Err(PlanError::BlastRadius {
                    index: i + 1,
                    step: step.to_string(),
                    changes,
                    limit,
                    invariant: Invariant::BlastRadius,
                });
            }
        }
        Ok(())
    }

    /// The generation the plan was made against.
    pub fn based_on(&self) -> Option<u64> {
        self.preconditions.iter().find_map(|p| match p {
            Precondition::Generation { generation } => Some(*generation),
            _ => None,
        })
    }

    /// True when applying the plan changes nothing.
    pub fn is_noop(&self) -> bool {
        self.steps.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan {}: {}", self.id, self.summary)?;
        let r = &self.policy.rollout;
        write!(
            f,
            "  policy: batch {}, max surge {}, min healthy {}, bake {}, drain {}, progress deadline {}",
            r.batch_size,
            r.max_surge,
            r.min_healthy,
            human(r.bake_time),
            human(r.drain),
            human(r.progress_deadline)
        )?;
        if r.cutover == crate::policy::Cutover::Switch {
            write!(f, ", cutover: atomic switch where the balancer stages")?;
        }
        writeln!(f)?;
        if let Some(c) = &self.policy.canary {
            write!(
                f,
                "  canary: {} for {}, gate: {}",
                c.share,
                human(c.window),
                c.describe()
            )?;
            if let Some(w) = c.weight {
                write!(f, ", weight {w}% where the balancer routes by weight")?;
            }
            writeln!(f)?;
        }
        match (&self.on_failure, &self.restore) {
            (FailurePolicy::Rollback, Some(pool)) => {
                writeln!(f, "  on failure: roll back to pool {pool} at full capacity")?
            }
            (FailurePolicy::Rollback, None) => {
                writeln!(f, "  on failure: clean up what this plan created")?
            }
            (FailurePolicy::Halt, _) => {
                writeln!(f, "  on failure: halt (clean up servers not yet serving)")?
            }
        }
        if !self.preconditions.is_empty() {
            writeln!(f, "  preconditions:")?;
            for p in &self.preconditions {
                writeln!(f, "    - {p}")?;
            }
        }
        if self.steps.is_empty() {
            writeln!(f, "  nothing to do")?;
        } else {
            writeln!(f, "  steps:")?;
            let width = self.steps.len().to_string().len();
            for (i, step) in self.steps.iter().enumerate() {
                writeln!(f, "    {:>width$}. {step}", i + 1)?;
            }
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_lists_are_compact() {
        assert_eq!(slot_list(&[0, 1, 2, 5, 7, 8, 9]), "0-2, 5, 7-9");
        assert_eq!(slot_list(&[3]), "3");
        assert_eq!(slot_list(&[]), "");
    }
}
