//! The `phoenix` command's exit statuses, and how an error maps to one.
//!
//! | status | constant | meaning |
//! |---|---|---|
//! | 0 | [`OK`] | done |
//! | 1 | [`ERROR`] | an error (a port, the store, a file): the message says which |
//! | 2 | [`USAGE`] | bad usage or a bad `phoenix.toml` (the message names file, line and key) |
//! | 3 | [`BUSY`] | another orchestrator holds the deployment's lease (or an emergency reserved it) |
//! | 4 | [`LEASE_LOST`] | another orchestrator took the deployment over while this one stalled; its writes were refused |
//! | 5 | [`REFUSED`] | refused before any change: a guard, the planner, a stale plan, an unfinished operation |
//! | 6 | [`ROLLED_BACK`] | the operation failed and was rolled back: the previous pool serves |
//! | 7 | [`FAILED`] | the operation failed and halted, or was pre-empted: see `phoenix status` |

use phoenix_core::events::Outcome;
use phoenix_core::executor::{ExecError, Interruption};

/// Done.
pub const OK: u8 = 0;
/// An error: a port, the store, a file.
pub const ERROR: u8 = 1;
/// Bad usage or a bad `phoenix.toml`.
pub const USAGE: u8 = 2;
/// Another orchestrator holds the deployment.
pub const BUSY: u8 = 3;
/// This orchestrator lost the deployment while it stalled.
pub const LEASE_LOST: u8 = 4;
/// Refused before any change.
pub const REFUSED: u8 = 5;
/// Failed and rolled back.
pub const ROLLED_BACK: u8 = 6;
/// Failed and halted (or pre-empted).
pub const FAILED: u8 = 7;

/// The exit status for an operation's error.
pub fn for_exec(e: &ExecError) -> u8 {
    match e {
        ExecError::Busy { .. } | ExecError::Reserved { .. } => BUSY,
        ExecError::Interrupted {
            source: Interruption::LeaseLost(_),
            ..
        } => LEASE_LOST,
        ExecError::Plan(_)
        | ExecError::Stale { .. }
        | ExecError::Unfinished(_)
        | ExecError::Precondition { .. }
        | ExecError::Planning(_) => REFUSED,
        ExecError::Failed { report, .. } if report.outcome == Outcome::RolledBack => ROLLED_BACK,
        ExecError::Failed { .. } | ExecError::Preempted { .. } => FAILED,
        _ => ERROR,
    }
}
