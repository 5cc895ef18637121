use std::net::SocketAddr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::PortError;
use crate::id::{ReleaseLabel, RoleName, ServerId};

/// Which check to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Is it up?
    Health,
    /// Does it do its job, running the expected release?
    Smoke,
}

/// The server to check and what it should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeTarget {
    /// The server.
    pub server: ServerId,
    /// Where it listens.
    pub endpoint: SocketAddr,
    /// The release it should run.
    pub release: ReleaseLabel,
    /// Its role.
    pub role: RoleName,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    /// Passed or not.
    pub passed: bool,
    /// What was seen.
    pub detail: String,
}

/// Checks servers.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Probe: Send + Sync {
    /// Runs one check. A server that answers wrongly is `Ok` with
    /// `passed: false`; `Err` means the probe itself could not run.
    async fn check(&self, target: &ProbeTarget, check: Check) -> Result<ProbeOutcome, PortError>;
}
