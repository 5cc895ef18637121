use std::time::Duration;

use crate::events::{Invariant, Outcome};
use crate::id::{OperationId, PoolId, ServerId};
use crate::model::TransitionError;
use crate::plan::PlanError;
use crate::ports::{Check, PortError, StoreError};
use crate::records::RecordError;
use crate::time::Timestamp;

use super::{FailureCause, OperationReport};

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A port call failed (after retries).
    #[error("{context}")]
    Port {
        /// What was being done.
        context: String,
        /// The port's error.
        #[source]
        source: PortError,
    },
    /// A safety guard refused the action.
    #[error("refused by invariant {invariant}: {detail}")]
    Guard {
        /// The invariant.
        invariant: Invariant,
        /// What was refused and why.
        detail: String,
    },
    /// Waiting took longer than allowed.
    #[error("timed out after {}: {what}", crate::time::human(*after))]
    Timeout {
        /// What was awaited.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// A launch failed once the step had used its replacement budget.
    #[error("slot {slot} of pool {pool} failed after the step replaced {attempts} launch(es), its whole budget; last: {last}")]
    LaunchBudget {
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Replacements the step made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// A server failed a check.
    #[error("server {server} failed its {check:?} check: {detail}")]
    CheckFailed {
        /// Server.
        server: ServerId,
        /// Check.
        check: Check,
        /// What was seen.
        detail: String,
    },
    /// A drain or warm-up hook failed and the policy blocks on failure.
    #[error("{hook} hook failed for {server}: {detail}")]
    Hook {
        /// Which hook.
        hook: crate::events::HookKind,
        /// Server.
        server: ServerId,
        /// What went wrong.
        detail: String,
    },
    /// A canary failed its gate (boxed: the measurements are large).
    #[error(transparent)]
    Canary(Box<CanaryFailure>),
    /// A lifecycle transition was illegal.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The step does not fit the recorded state.
    #[error("{0}")]
    Inconsistent(String),
    /// The run cannot continue writing (lost lease, store down): the
    /// operation stays active and is resumed later.
    #[error(transparent)]
    Interrupted(#[from] Interruption),
}

impl StepError {
    pub(crate) fn port(context: impl Into<String>, source: PortError) -> Self {
        Self::Port {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn guard(invariant: Invariant, detail: impl Into<String>) -> Self {
        Self::Guard {
            invariant,
            detail: detail.into(),
        }
    }

    /// The error and its causes on one line.
    pub fn chain(&self) -> String {
        crate::error_chain(self)
    }
}

/// A canary's failed gate, with what the balancer measured.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the canary of pool {pool} failed its gate: {reason} (canary: {canary}; live pool: {baseline})"
)]
pub struct CanaryFailure {
    /// The new pool.
    pub pool: PoolId,
    /// What failed.
    pub reason: String,
    /// What the balancer measured of the canary in the window.
    pub canary: crate::ports::TrafficStats,
    /// What it measured of the live pool in the same window.
    pub baseline: crate::ports::TrafficStats,
}

/// The run lost the ability to write, or was asked to stop; nothing more
/// is attempted.
#[derive(Debug, thiserror::Error)]
pub enum Interruption {
    /// The lease was taken over or fenced off.
    #[error("lost the deployment lease")]
    LeaseLost(#[source] StoreError),
    /// The store failed.
    #[error("the state store failed")]
    Store(#[source] RecordError),
    /// An emergency asked this operation to stop.
    #[error("pre-empted by {by}: {reason}")]
    Preempted {
        /// Who asked.
        by: String,
        /// Why.
        reason: String,
    },
}

impl From<RecordError> for Interruption {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Store(
                s @ (StoreError::Fenced { .. }
                | StoreError::LeaseLost { .. }
                | StoreError::LeaseHeld { .. }),
            ) => Self::LeaseLost(s),
            other => Self::Store(other),
        }
    }
}

impl From<RecordError> for StepError {
    fn from(e: RecordError) -> Self {
        Self::Interrupted(e.into())
    }
}

/// Why `apply` or `resume` did not complete an operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The plan is invalid; nothing was done.
    #[error("plan rejected before any change")]
    Plan(#[from] PlanError),
    /// Another orchestrator holds the deployment's lease.
    #[error("deployment is busy: {holder} holds its lease until {expires_at}")]
    Busy {
        /// Holder.
        holder: String,
        /// Expiry.
        expires_at: Timestamp,
    },
    /// An earlier operation is unfinished and must be resumed first.
    #[error("operation {0} is unfinished; resume it first")]
    Unfinished(OperationId),
    /// The records changed since the plan was made.
    #[error(
        "plan was made against generation {planned} but the deployment is at {current}; plan again"
    )]
    Stale {
        /// Generation in the plan.
        planned: u64,
        /// Current generation.
        current: u64,
    },
    /// A precondition no longer holds.
    #[error("precondition failed: {precondition}: {actual}")]
    Precondition {
        /// The precondition.
        precondition: String,
        /// What was found.
        actual: String,
    },
    /// Reading fresh state for a precondition failed (fail closed).
    #[error("could not check preconditions")]
    PreconditionRead(#[source] PortError),
    /// The operation ran and failed (rolled back, or halted after clean-up).
    #[error("{} {}: {}", report.kind, match report.outcome { Outcome::RolledBack => "failed and was rolled back", _ => "failed" }, report.error.as_deref().unwrap_or("unknown error"))]
    Failed {
        /// What happened.
        report: Box<OperationReport>,
        /// Why, typed: a guard refused, a port failed (and how), a wait
        /// timed out, …
        cause: FailureCause,
    },
    /// An emergency pre-empted the operation: it ended at a safe point,
    /// its records consistent, the pools it created and that never served
    /// marked failed (reap removes them).
    #[error("{} pre-empted: {}", report.kind, report.error.as_deref().unwrap_or("an emergency"))]
    Preempted {
        /// What happened.
        report: Box<OperationReport>,
    },
    /// The deployment is reserved for an emergency that pre-empts other
    /// operations; try again once it ran (or once the reservation lapses,
    /// at `until`, if the emergency gave up and could not withdraw it).
    #[error("deployment is reserved until {until} for an emergency asked by {by}: {reason}")]
    Reserved {
        /// Who asked.
        by: String,
        /// Why.
        reason: String,
        /// When the reservation lapses by itself.
        until: crate::time::Timestamp,
    },
    /// No plan could be made (for an emergency, which plans under its
    /// lease).
    #[error("planning failed")]
    Planning(#[source] Box<crate::ops::PlanningError>),
    /// The run stopped without finishing; `resume` continues it.
    #[error("operation {operation} interrupted; resume continues it")]
    Interrupted {
        /// The operation.
        operation: OperationId,
        /// Why.
        #[source]
        source: Interruption,
    },
    /// The store failed before the operation started.
    #[error("state store failed")]
    Store(#[from] RecordError),
    /// No such operation journal.
    #[error("operation {0} has no journal")]
    UnknownOperation(OperationId),
}

impl ExecError {
    /// The report of a failed operation, if it ran.
    pub fn report(&self) -> Option<&OperationReport> {
        match self {
            Self::Failed { report, .. } | Self::Preempted { report } => Some(report),
            _ => None,
        }
    }
}
