//! The operation journal: the plan (written once) and its progress
//! (written before and after every step), so a crashed run can resume.

use serde::{Deserialize, Serialize};

use crate::events::Outcome;
use crate::plan::Step;
use crate::time::Timestamp;

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    /// Applying the plan's steps.
    Running,
    /// Applying rollback steps after a failure.
    RollingBack,
    /// Ended.
    Finished(Outcome),
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Started (and, after a crash, to be re-run).
    Running,
    /// Finished.
    Done,
    /// Failed.
    Failed,
}

/// One step's journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Status.
    pub status: StepStatus,
    /// How many times it was started (more than one after a resume).
    pub runs: u32,
    /// First start.
    pub started_at: Option<Timestamp>,
    /// End.
    pub finished_at: Option<Timestamp>,
    /// Failure, as an error chain.
    pub error: Option<String>,
    /// Failed or stuck launches this step replaced (its budget is
    /// `provision.replace_budget` for the whole step).
    #[serde(default)]
    pub replacements: u32,
}

impl StepRecord {
    pub(crate) fn pending() -> Self {
        Self {
            status: StepStatus::Pending,
            runs: 0,
            started_at: None,
            finished_at: None,
            error: None,
            replacements: 0,
        }
    }
}

/// The steps that restore the previous state after a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackJournal {
    /// Why the rollback started.
    pub reason: String,
    /// The plan step that failed (0-based).
    pub failed_step: usize,
    /// Steps.
    pub steps: Vec<Step>,
    /// Their journal.
    pub records: Vec<StepRecord>,
    /// Whether these steps restore the previous pool (rollback) or only
    /// clean up (halt).
    pub restores: bool,
}

/// Who held the deployment lease while the operation ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHold {
    /// Holder.
    pub holder: String,
    /// Fencing token.
    pub token: u64,
    /// When it took over.
    pub at: Timestamp,
}

/// An operation's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationProgress {
    /// Status.
    pub status: OperationStatus,
    /// One record per plan step.
    pub steps: Vec<StepRecord>,
    /// Rollback, once started.
    pub rollback: Option<RollbackJournal>,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub finished_at: Option<Timestamp>,
    /// The error that failed the operation.
    pub error: Option<String>,
    /// Why it failed, typed (absent in journals written before causes
    /// were recorded).
    #[serde(default)]
    pub cause: Option<super::FailureCause>,
    /// Every lease holder that worked on it.
    pub holders: Vec<LeaseHold>,
}

impl OperationProgress {
    /// The first plan step not done.
    pub fn next_step(&self) -> usize {
        self.steps
            .iter()
            .position(|s| s.status != StepStatus::Done)
            .unwrap_or(self.steps.len())
    }
}
