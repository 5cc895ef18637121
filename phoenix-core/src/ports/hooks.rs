use std::net::SocketAddr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::PortError;
use crate::id::{PoolId, ReleaseLabel, RoleName, ServerId};

/// The server a hook runs for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookTarget {
    /// The server.
    pub server: ServerId,
    /// Where it listens.
    pub endpoint: SocketAddr,
    /// Its pool.
    pub pool: PoolId,
    /// Its slot.
    pub slot: u32,
    /// Its role.
    pub role: RoleName,
    /// Its release.
    pub release: ReleaseLabel,
}

/// What a hook did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookReport {
    /// Requests or items that succeeded (URLs warmed, sessions moved).
    pub done: u64,
    /// Those that failed.
    pub failed: u64,
    /// A summary for people.
    pub detail: String,
}

/// Hooks that move state out of a server before it leaves and into one
/// before it serves, so that servers hold no state of their own (the
/// pattern needs them replaceable at any time).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ServerHooks: Send + Sync {
    /// Before the server takes traffic: fill its caches, load what it
    /// needs. An error, or a report with failures, counts as a failure.
    async fn warm_up(&self, target: &HookTarget) -> Result<HookReport, PortError>;

    /// Before the server stops taking traffic or is terminated: hand its
    /// sessions, queues or files over. An error, or a report with failures,
    /// counts as a failure.
    async fn drain(&self, target: &HookTarget) -> Result<HookReport, PortError>;
}
