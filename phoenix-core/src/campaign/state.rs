//! The campaign's durable progress: one record in the state store, written
//! with compare-and-swap after every unit and wave, so that a restarted
//! process resumes from the wave it was in and never redoes a finished one.

use serde::{Deserialize, Serialize};

use crate::id::OperationId;
use crate::ports::{Commit, Expect, StoreError, Write};
use crate::records::{encode, Records, Stored};
use crate::time::Timestamp;

use super::{CampaignError, CampaignPlan, CampaignSpec};

/// The store key of a campaign's record.
pub fn key(name: &str) -> String {
    format!("campaigns/{name}")
}

/// Where the campaign stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CampaignStatus {
    /// Waves remain.
    Running,
    /// A wave failed: nothing after it starts.
    Halted {
        /// The failed wave.
        wave: usize,
        /// Why.
        reason: String,
        /// When.
        at: Timestamp,
    },
    /// Every wave succeeded.
    Completed {
        /// When.
        at: Timestamp,
    },
}

/// Where a wave stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaveStatus {
    /// Not started.
    Pending,
    /// Started (a crash leaves it here; resuming continues it).
    Running,
    /// Every unit serves its release, healthy after the bake.
    Succeeded,
    /// A unit failed; the wave's units were rolled back.
    RolledBack,
}

/// Where a unit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitStatus {
    /// Not started.
    Pending,
    /// Serves its target release.
    Done,
    /// Its operation failed (the executor rolled it back or halted it).
    Failed,
    /// It had moved, and was rolled back because its wave failed.
    RolledBack,
    /// Its wave failed before it started.
    Skipped,
}

/// A unit's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRecord {
    /// Status.
    pub status: UnitStatus,
    /// The release it served before the campaign moved it (recorded before
    /// its operation starts): what a rollback of the wave returns it to.
    #[serde(default)]
    pub from: Option<crate::id::ReleaseLabel>,
    /// The operation that moved it (none when it already served the release).
    pub operation: Option<OperationId>,
    /// The rollback's operation, if one ran.
    pub rollback: Option<OperationId>,
    /// What failed.
    pub error: Option<String>,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
}

/// A wave's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveRecord {
    /// Status.
    pub status: WaveStatus,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
    /// Its units, in the plan's order.
    pub units: Vec<UnitRecord>,
}

/// Everything durable about a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignRecord {
    /// The spec it runs.
    pub spec: CampaignSpec,
    /// Its plan, made once when it started.
    pub plan: CampaignPlan,
    /// Status.
    pub status: CampaignStatus,
    /// One record per wave of the plan.
    pub waves: Vec<WaveRecord>,
    /// When it started.
    pub started_at: Timestamp,
    /// How many times a process took it up after another left it running.
    pub resumes: u32,
}

impl CampaignRecord {
    /// A fresh record: every wave pending.
    pub fn new(spec: CampaignSpec, plan: CampaignPlan, now: Timestamp) -> Self {
        let waves = plan
            .waves
            .iter()
            .map(|w| WaveRecord {
                status: WaveStatus::Pending,
                started_at: None,
                finished_at: None,
                units: w
                    .units
                    .iter()
                    .map(|_| UnitRecord {
                        status: UnitStatus::Pending,
                        from: None,
                        operation: None,
                        rollback: None,
                        error: None,
                        finished_at: None,
                    })
                    .collect(),
            })
            .collect();
        Self {
            spec,
            plan,
            status: CampaignStatus::Running,
            waves,
            started_at: now,
            resumes: 0,
        }
    }
}

/// Reads a campaign's record, refusing one whose progress does not fit
/// its plan.
pub async fn load(
    records: &Records,
    name: &str,
) -> Result<Option<Stored<CampaignRecord>>, CampaignError> {
    let Some(stored) = records
        .get::<CampaignRecord>(&key(name), "campaign")
        .await?
    else {
        return Ok(None);
    };
    let r = &stored.value;
    let fits = r.waves.len() == r.plan.waves.len()
        && r.waves
            .iter()
            .zip(&r.plan.waves)
            .all(|(w, p)| w.units.len() == p.units.len());
    if !fits || r.spec.name != name {
        return Err(CampaignError::Corrupt {
            name: name.to_owned(),
            detail: "its wave and unit records do not match its plan".into(),
        });
    }
    Ok(Some(stored))
}

/// Writes the record if nobody else wrote it since it was read; refuses
/// otherwise (another process runs the campaign). A store that is
/// briefly unavailable is retried; a retried write that finds its own
/// earlier attempt landed counts as written.
pub async fn save(
    records: &Records,
    stored: &mut Stored<CampaignRecord>,
) -> Result<(), CampaignError> {
    let k = key(&stored.value.spec.name);
    let expect = if stored.version == 0 {
        Expect::Absent
    } else {
        Expect::Version(stored.version)
    };
    let bytes = encode(&k, &stored.value)?;
    let mut retried = false;
    for attempt in 0..6u32 {
        let result = records
            .store()
            .commit(Commit {
                fence: None,
                writes: vec![Write {
                    value: Some(bytes.clone()),
                    key: k.clone(),
                    expect,
                }],
                events: vec![],
            })
            .await;
        match result {
            Ok(versions) => {
                stored.version = versions.first().copied().unwrap_or(stored.version + 1);
                return Ok(());
            }
            Err(StoreError::Conflict { .. }) => {
                if retried {
                    if let Some(now) = records.store().get(&k).await? {
                        if now.value == bytes {
                            stored.version = now.version;
                            return Ok(());
                        }
                    }
                }
                return Err(CampaignError::Conflict(stored.value.spec.name.clone()));
            }
            Err(e) if e.is_retryable() && attempt < 5 => {
                retried = true;
                tokio::time::sleep(std::time::Duration::from_secs(1 << attempt)).await;
            }
            Err(e) => return Err(CampaignError::Records(e.into())),
        }
    }
    Err(CampaignError::Conflict(stored.value.spec.name.clone()))
}
