//! What a drill did: [`DrillReport`], one [`FailureRecord`] per failure.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{OperationId, PoolId, ServerId};
use crate::time::{duration_ms, human, Timestamp};

use super::spec::FailureKind;

/// One injected failure, from injection to restoration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Which failure (from 1).
    pub number: usize,
    /// The servers failed.
    pub victims: Vec<ServerId>,
    /// Their failure domain.
    pub domain: String,
    /// How they failed.
    pub kind: FailureKind,
    /// Healthy serving members just before, by a fresh read.
    pub healthy_before: usize,
    /// The floor checked.
    pub floor: usize,
    /// When the failure was injected.
    pub injected_at: Timestamp,
    /// When the balancer or the cloud first showed it.
    pub detected_at: Timestamp,
    /// When the pool served at full size and health again, without them.
    pub restored_at: Timestamp,
    /// From injection to detection.
    #[serde(with = "duration_ms", rename = "time_to_detect_ms")]
    pub time_to_detect: Duration,
    /// From injection to restoration.
    #[serde(with = "duration_ms", rename = "time_to_restore_ms")]
    pub time_to_restore: Duration,
    /// What detected it first (`balancer` or `cloud`).
    pub detected_by: String,
    /// The heal operations applied.
    pub heals: Vec<OperationId>,
}

/// A drill's report, serialisable to JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    /// The deployment.
    pub deployment: String,
    /// The role.
    pub role: String,
    /// The live pool when the drill started.
    pub pool: Option<PoolId>,
    /// Where failures were injected.
    pub target: String,
    /// The seed.
    pub seed: u64,
    /// How victims failed.
    pub kind: FailureKind,
    /// Failures asked for.
    pub budget: usize,
    /// The failure-domain label.
    pub domain_key: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// The failures, in order.
    pub failures: Vec<FailureRecord>,
}

impl DrillReport {
    /// The longest time to detect.
    pub fn max_detect(&self) -> Option<Duration> {
        self.failures.iter().map(|f| f.time_to_detect).max()
    }

    /// The longest time to restore.
    pub fn max_restore(&self) -> Option<Duration> {
        self.failures.iter().map(|f| f.time_to_restore).max()
    }

    /// The mean time to restore.
    pub fn mean_restore(&self) -> Option<Duration> {
        let n = u32::try_from(self.failures.len()).ok().filter(|n| *n > 0)?;
        Some(
            self.failures
                .iter()
                .map(|f| f.time_to_restore)
                .sum::<Duration>()
                / n,
        )
    }
}

impl fmt::Display for DrillReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "chaos drill on {}/{} ({}, seed {}): {} of {} {}(s)",
            self.deployment,
            self.role,
            self.target,
            self.seed,
            self.failures.len(),
            self.budget,
            self.kind
        )?;
        writeln!(
            f,
            "{:>3}  {:<28} {:<12} {:>8} {:>10} {:<9} {:>10}",
            "#", "victim", "domain", "healthy", "detect", "by", "restore"
        )?;
        for r in &self.failures {
            let victims: Vec<String> = r.victims.iter().map(ToString::to_string).collect();
            writeln!(
                f,
                "{:>3}  {:<28} {:<12} {:>4}/{:<3} {:>10} {:<9} {:>10}",
                r.number,
                victims.join(","),
                r.domain,
                r.healthy_before,
                r.floor,
                human(r.time_to_detect),
                r.detected_by,
                human(r.time_to_restore)
            )?;
        }
        if let (Some(d), Some(r), Some(m)) =
            (self.max_detect(), self.max_restore(), self.mean_restore())
        {
            writeln!(
                f,
                "max detect {}, max restore {}, mean restore {}",
                human(d),
                human(r),
                human(m)
            )?;
        }
        Ok(())
    }
}
