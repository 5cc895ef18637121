//! A typed, serialisable event stream that callers subscribe to. The same
//! events are appended to the state store's history.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::id::{DeploymentId, IdempotencyToken, OperationId, PoolId, ReleaseLabel, ServerId};
use crate::model::PoolState;
use crate::plan::OperationKind;
use crate::time::Timestamp;

/// The safety invariants of the design, named for events and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// 1. Never terminate or stop a serving server.
    NoServingTermination,
    /// 2. The capacity floor, and replacements before removals.
    CapacityFloor,
    /// 3. At most `batch_size` servers change per step.
    BlastRadius,
    /// 4. Halt at the first failed batch; restore before removing.
    HaltAndRollback,
    /// 5. One writer per deployment; stale plans are refused.
    OneWriter,
    /// 6. No orphans, no duplicates.
    NoOrphans,
    /// 7. Bounded replacements and time.
    BoundedTime,
    /// 8. Done means every serving member runs the target release.
    DoneMeansDone,
    /// 9. Retention never goes below `keep`.
    Retention,
    /// 10. Secrets stay in their environment and out of every output.
    SecretScope,
}

impl std::fmt::Display for Invariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Self::NoServingTermination => "1 never terminate a serving server",
            Self::CapacityFloor => "2 capacity floor",
            Self::BlastRadius => "3 blast radius",
            Self::HaltAndRollback => "4 halt and roll back",
            Self::OneWriter => "5 one writer",
            Self::NoOrphans => "6 no orphans, no duplicates",
            Self::BoundedTime => "7 bounded time",
            Self::DoneMeansDone => "8 done means done",
            Self::Retention => "9 retention",
            Self::SecretScope => "10 secrets",
        };
        f.write_str(s)
    }
}

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// Before attaching.
    WarmUp,
    /// Before detaching or terminating.
    Drain,
}

impl std::fmt::Display for HookKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::WarmUp => "warm-up",
            Self::Drain => "drain",
        })
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every step succeeded.
    Succeeded,
    /// A step failed and the previous state was restored.
    RolledBack,
    /// A step failed and the operation stopped (after clean-up).
    Failed,
    /// An emergency stopped it at a safe point; what it left is recorded
    /// (heal and reap settle it).
    Preempted,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// An operation began.
    OperationStarted {
        /// Its kind.
        kind: OperationKind,
        /// Its summary.
        summary: String,
        /// Number of steps.
        steps: usize,
    },
    /// An unfinished operation was picked up again after a crash.
    OperationResumed {
        /// The step it resumes at (0-based).
        step: usize,
        /// Whether it was rolling back.
        rolling_back: bool,
    },
    /// An operation ended.
    OperationFinished {
        /// How.
        outcome: Outcome,
        /// The error that ended it, if any.
        error: Option<String>,
    },
    /// A step began.
    StepStarted {
        /// Index (0-based) in the plan, or in the rollback steps.
        index: usize,
        /// True for rollback steps.
        rollback: bool,
        /// The step, as the dry run prints it.
        step: String,
    },
    /// A step finished.
    StepFinished {
        /// Index.
        index: usize,
        /// True for rollback steps.
        rollback: bool,
    },
    /// A step failed.
    StepFailed {
        /// Index.
        index: usize,
        /// True for rollback steps.
        rollback: bool,
        /// The error chain.
        error: String,
    },
    /// A failed operation starts restoring the previous state.
    RollbackStarted {
        /// Why.
        reason: String,
        /// Number of rollback steps.
        steps: usize,
    },
    /// A guard refused an action.
    GuardRefused {
        /// The invariant it protects.
        invariant: Invariant,
        /// What was refused and why.
        detail: String,
    },
    /// A launch was requested.
    LaunchRequested {
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Attempt.
        attempt: u32,
        /// Token.
        token: IdempotencyToken,
    },
    /// The provider accepted a launch.
    ServerLaunched {
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Server.
        server: ServerId,
    },
    /// A server became active.
    ServerActive {
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Server.
        server: ServerId,
    },
    /// A launch attempt was given up.
    LaunchFailed {
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Attempt.
        attempt: u32,
        /// The server, if one was created.
        server: Option<ServerId>,
        /// Why.
        reason: String,
    },
    /// A server passed its health check and smoke test.
    ServerVerified {
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Server.
        server: ServerId,
    },
    /// A server is healthy behind the balancer.
    ServerHealthy {
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Server.
        server: ServerId,
    },
    /// A server went behind the balancer.
    ServerAttached {
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Server.
        server: ServerId,
    },
    /// A server left the balancer (draining starts).
    ServerDetached {
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Server.
        server: ServerId,
    },
    /// A detached server finished draining.
    ServerDrained {
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Server.
        server: ServerId,
    },
    /// A server was stopped.
    ServerStopped {
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Server.
        server: ServerId,
    },
    /// A server was started.
    ServerStarted {
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Server.
        server: ServerId,
    },
    /// A server was terminated.
    ServerTerminated {
        /// Pool, when it belonged to one.
        pool: Option<PoolId>,
        /// Slot, when it held one.
        slot: Option<u32>,
        /// Server.
        server: ServerId,
    },
    /// A pool changed state.
    PoolStateChanged {
        /// Pool.
        pool: PoolId,
        /// From.
        from: PoolState,
        /// To.
        to: PoolState,
    },
    /// Every serving member runs the target release.
    ServingVerified {
        /// Release.
        release: ReleaseLabel,
        /// Number of serving members.
        members: usize,
    },
    /// Reconcile found a labelled server that belongs to no recorded pool.
    OrphanFound {
        /// Server.
        server: ServerId,
    },
    /// Reconcile found a recorded server missing from the cloud.
    ServerMissing {
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Server.
        server: ServerId,
    },
    /// A drain or warm-up hook ran.
    HookRan {
        /// Which.
        hook: HookKind,
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Server.
        server: ServerId,
        /// Whether it succeeded.
        ok: bool,
        /// Items done.
        done: u64,
        /// Items failed.
        failed: u64,
        /// Summary or error.
        detail: String,
    },
    /// An emergency asked the running operation to stop.
    PreemptionRequested {
        /// Who asked.
        by: String,
        /// Why.
        reason: String,
    },
    /// The refresh waits for its replacement-rate budget.
    RateLimited {
        /// How long.
        wait_ms: u64,
    },
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, from the executor's clock.
    pub at: Timestamp,
    /// Deployment.
    pub deployment: DeploymentId,
    /// Operation, if the event belongs to one.
    pub operation: Option<OperationId>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Broadcasts events to subscribers. A subscriber that falls more than
/// `capacity` events behind misses the oldest (it sees `Lagged`); the
/// store's history is complete.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(4096)
    }
}

impl EventBus {
    /// A bus that buffers `capacity` events per subscriber.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
    }

    /// Subscribes to every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Publishes to current subscribers (none is fine).
    pub fn publish(&self, event: Event) {
        let _ = self.sender.send(event);
    }
}
