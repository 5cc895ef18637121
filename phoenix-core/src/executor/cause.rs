//! [`FailureCause`]: why an operation failed, typed, so that a caller can
//! decide what to do (retry later, page someone, fix a guard's input)
//! without parsing the message.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::StepError;
use crate::events::{HookKind, Invariant};
use crate::id::{PoolId, ServerId};
use crate::ports::{Check, ErrorKind, TrafficStats};

/// Why an operation failed: the first step failure, as journaled (it
/// survives a restart: a resumed run reports the same cause).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureCause {
    /// A safety guard refused an action.
    Guard {
        /// The invariant it protects.
        invariant: Invariant,
    },
    /// A port call failed after its retries.
    Port {
        /// The call, such as `nova create server`.
        operation: String,
        /// How the port classified the failure.
        kind: PortFailure,
    },
    /// Waiting took longer than the policy allows.
    Timeout {
        /// What was awaited.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// Launches kept failing until the step's replacement budget was
    /// spent.
    LaunchBudget {
        /// The pool.
        pool: PoolId,
        /// The slot.
        slot: u32,
    },
    /// A server failed its health check or smoke test.
    Check {
        /// The server.
        server: ServerId,
        /// Which check.
        check: Check,
    },
    /// A drain or warm-up hook failed and the policy blocks on failure.
    Hook {
        /// Which hook.
        hook: HookKind,
        /// The server.
        server: ServerId,
    },
    /// A canary failed its gate; its members were taken out and the live
    /// pool left serving.
    Canary {
        /// The new pool.
        pool: PoolId,
        /// What failed (a threshold, too little traffic, the user's check).
        reason: String,
        /// What the balancer measured of the canary in the window.
        canary: Box<TrafficStats>,
        /// What it measured of the live pool in the same window.
        baseline: Box<TrafficStats>,
    },
    /// A lifecycle transition was illegal.
    Transition,
    /// The step did not fit the recorded state.
    Inconsistent,
    /// Not recorded (a journal written before causes were).
    #[serde(other)]
    Unknown,
}

/// How a port classified a failure ([`ErrorKind`] without its message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PortFailure {
    /// Rate limited.
    Throttled,
    /// A transient fault.
    Temporary,
    /// Something did not exist.
    NotFound,
    /// The request conflicted with the current state.
    Conflict,
    /// The request was malformed or named something invalid.
    Invalid,
    /// Credentials were missing, wrong or lacked permission.
    Unauthorized,
    /// The back end cannot do it.
    Unsupported,
    /// The answer was unusable.
    BadResponse,
    /// Any other permanent failure.
    Permanent,
}

impl PortFailure {
    /// True when the same call may succeed later (throttling, transient
    /// faults): running the operation again is reasonable.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Throttled | Self::Temporary)
    }
}

impl From<&ErrorKind> for PortFailure {
    fn from(kind: &ErrorKind) -> Self {
        match kind {
            ErrorKind::Throttled { .. } => Self::Throttled,
            ErrorKind::Temporary(_) => Self::Temporary,
            ErrorKind::NotFound(_) => Self::NotFound,
            ErrorKind::Conflict(_) => Self::Conflict,
            ErrorKind::Invalid(_) => Self::Invalid,
            ErrorKind::Unauthorized(_) => Self::Unauthorized,
            ErrorKind::Unsupported(_) => Self::Unsupported,
            ErrorKind::BadResponse(_) => Self::BadResponse,
            _ => Self::Permanent,
        }
    }
}

impl FailureCause {
    /// The cause of a step's failure.
    pub fn of(error: &StepError) -> Self {
        match error {
            StepError::Port { source, .. } => Self::Port {
                operation: source.operation.clone(),
                kind: PortFailure::from(&source.kind),
            },
            StepError::Guard { invariant, .. } => Self::Guard {
                invariant: *invariant,
            },
            StepError::Timeout { what, after } => Self::Timeout {
                what: what.clone(),
                after: *after,
            },
            StepError::LaunchBudget { pool, slot, .. } => Self::LaunchBudget {
                pool: pool.clone(),
                slot: *slot,
            },
            StepError::CheckFailed { server, check, .. } => Self::Check {
                server: server.clone(),
                check: *check,
            },
            StepError::Hook { hook, server, .. } => Self::Hook {
                hook: *hook,
                server: server.clone(),
            },
            StepError::Canary(failure) => Self::Canary {
                pool: failure.pool.clone(),
                reason: failure.reason.clone(),
                canary: Box::new(failure.canary),
                baseline: Box::new(failure.baseline),
            },
            StepError::Transition(_) => Self::Transition,
            StepError::Inconsistent(_) => Self::Inconsistent,
            StepError::Interrupted(_) => Self::Unknown,
        }
    }

    /// True when a guard refused: the operation's input (the plan, the
    /// policy, the cloud's state) has to change before it can succeed.
    pub fn is_guard(&self) -> bool {
        matches!(self, Self::Guard { .. })
    }

    /// True when the failure may pass by itself (a throttled or transient
    /// port failure, a timeout): running the operation again later is
    /// reasonable.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Port { kind, .. } => kind.is_transient(),
            Self::Timeout { .. } => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for FailureCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Guard { invariant } => write!(f, "refused by invariant {invariant}"),
            Self::Port { operation, kind } => write!(f, "{operation}: {kind:?}"),
            Self::Timeout { what, after } => {
                write!(f, "timed out after {}: {what}", crate::time::human(*after))
            }
            Self::LaunchBudget { pool, slot } => {
                write!(f, "launches of slot {slot} of pool {pool} kept failing")
            }
            Self::Check { server, check } => {
                write!(f, "server {server} failed its {check:?} check")
            }
            Self::Hook { hook, server } => write!(f, "{hook:?} hook failed for {server}"),
            Self::Canary {
                pool,
                reason,
                canary,
                baseline,
            } => write!(
                f,
                "the canary of pool {pool} failed its gate: {reason} (canary: {canary}; live pool: {baseline})"
            ),
            Self::Transition => f.write_str("an illegal lifecycle transition"),
            Self::Inconsistent => f.write_str("the step did not fit the recorded state"),
            Self::Unknown => f.write_str("not recorded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortError;

    #[test]
    fn causes_keep_what_a_caller_decides_on() {
        let throttled = StepError::port(
            "launching",
            PortError::new(
                "nova create server",
                ErrorKind::Throttled { retry_after: None },
            ),
        );
        let cause = FailureCause::of(&throttled);
        assert!(cause.is_transient(), "{cause}");
        assert_eq!(
            cause,
            FailureCause::Port {
                operation: "nova create server".into(),
                kind: PortFailure::Throttled
            }
        );
        let refused = StepError::guard(Invariant::CapacityFloor, "would leave 0 of 2");
        assert!(FailureCause::of(&refused).is_guard());
        assert!(!FailureCause::of(&refused).is_transient());
        let unauthorized = StepError::port(
            "x",
            PortError::new("ec2 RunInstances", ErrorKind::Unauthorized("no".into())),
        );
        assert!(!FailureCause::of(&unauthorized).is_transient());
    }

    #[test]
    fn causes_survive_the_journal_and_old_journals_read() {
        let cause = FailureCause::Timeout {
            what: "pool web-v2-2 healthy".into(),
            after: Duration::from_secs(90),
        };
        let json = serde_json::to_string(&cause).unwrap();
        assert_eq!(serde_json::from_str::<FailureCause>(&json).unwrap(), cause);
        let later: FailureCause =
            serde_json::from_str(r#"{"cause":"a_cause_added_later"}"#).unwrap();
        assert_eq!(later, FailureCause::Unknown);
    }
}
