//! Why a drill halted.

use std::time::Duration;

use crate::id::{PoolId, RoleName, ServerId};
use crate::ops::PlanningError;
use crate::ports::PortError;
use crate::records::RecordError;
use crate::time::human;

use super::report::DrillReport;

fn servers(ids: &[ServerId]) -> String {
    ids.iter()
        .map(ServerId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a drill stopped before its budget was spent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChaosError {
    /// The drill's parameters cannot run.
    #[error("invalid drill: {0}")]
    InvalidDrill(String),
    /// The role has no live pool to fail.
    #[error("role {0} has no live pool: nothing to fail")]
    NothingLive(RoleName),
    /// Failing the victims would leave fewer healthy members than the
    /// capacity floor: nothing was injected.
    #[error(
        "the capacity floor forbids it: pool {pool} has {healthy} healthy serving member(s); \
         failing {victims} would leave {} of the {floor} required",
        healthy.saturating_sub(*victims)
    )]
    FloorWouldBreak {
        /// The live pool.
        pool: PoolId,
        /// Its healthy serving members by a fresh balancer read.
        healthy: usize,
        /// Servers the failure would take.
        victims: usize,
        /// The floor.
        floor: usize,
    },
    /// No failure domain has enough healthy servers for one failure.
    #[error(
        "no failure domain (label {key}) has {wanted} healthy serving server(s); the largest has {largest}"
    )]
    DomainTooSmall {
        /// The domain label.
        key: String,
        /// Victims per failure.
        wanted: usize,
        /// Healthy servers in the largest domain.
        largest: usize,
    },
    /// Injecting the failure failed.
    #[error("cannot fail {server}")]
    Inject {
        /// The victim.
        server: ServerId,
        /// The target's error.
        #[source]
        source: PortError,
    },
    /// Nothing saw the failure in time: the balancer still reports the
    /// victims healthy and the cloud reports them running.
    #[error("failure {failure}: {} not seen as failed within {}", servers(.victims), human(*.waited))]
    DetectDeadline {
        /// Which failure (from 1).
        failure: usize,
        /// Its victims.
        victims: Vec<ServerId>,
        /// How long the drill waited.
        waited: Duration,
    },
    /// Heal did not bring the pool back to full healthy capacity in time.
    #[error("failure {failure}: the pool is not restored within {}{}", human(*.waited), .last.as_ref().map(|l| format!(" (last: {l})")).unwrap_or_default())]
    RestoreDeadline {
        /// Which failure (from 1).
        failure: usize,
        /// How long the drill waited.
        waited: Duration,
        /// The last heal error or shortfall seen.
        last: Option<String>,
    },
    /// Planning (or one of its fresh reads) failed.
    #[error(transparent)]
    Planning(#[from] PlanningError),
    /// The records failed.
    #[error(transparent)]
    Records(#[from] RecordError),
}

/// A drill that halted, with what it did until then.
#[derive(Debug, thiserror::Error)]
#[error("the drill halted after {} of {} failure(s)", .report.failures.len(), .report.budget)]
pub struct DrillHalted {
    /// Why.
    #[source]
    pub error: ChaosError,
    /// The failures injected (and restored) before it halted.
    pub report: Box<DrillReport>,
}
