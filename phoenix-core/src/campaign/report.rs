//! What a campaign did, what remains, when it will end, and which servers
//! will outlive `max_age`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{DeploymentId, EnvironmentName, RoleName, ServerId};
use crate::records::Stored;
use crate::time::{elapsed_between, human, Timestamp};

use super::state::{self, CampaignRecord, CampaignStatus, UnitStatus, WaveStatus};
use super::{Campaign, CampaignError};

/// One wave, as run so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveSummary {
    /// Position.
    pub index: usize,
    /// Environment.
    pub environment: EnvironmentName,
    /// Failure domain.
    pub failure_domain: String,
    /// Servers it replaces.
    pub servers: usize,
    /// Status.
    pub status: WaveStatus,
    /// Started.
    pub started_at: Option<Timestamp>,
    /// Finished.
    pub finished_at: Option<Timestamp>,
    /// Projected finish (for a wave not finished).
    pub projected_finish: Option<Timestamp>,
    /// Units rolled back because the wave failed (`deployment/role`).
    pub rolled_back: Vec<String>,
    /// Units whose own operation failed, with why.
    pub failed: Vec<String>,
}

/// One deployment's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentProgress {
    /// Deployment.
    pub deployment: DeploymentId,
    /// Failure domain.
    pub failure_domain: String,
    /// Roles serving their target release.
    pub done: Vec<RoleName>,
    /// Roles still to move (pending, or stopped by a halt).
    pub remaining: Vec<RoleName>,
    /// Servers moved.
    pub servers_done: usize,
    /// Servers still to move.
    pub servers_remaining: usize,
    /// When its last unit finished or is projected to (none when halted
    /// before it).
    pub completion: Option<Timestamp>,
    /// Whether that is by the deadline.
    pub on_time: bool,
}

/// A server that will be older than `max_age` before the deadline if
/// nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgingServer {
    /// Deployment.
    pub deployment: DeploymentId,
    /// Role.
    pub role: RoleName,
    /// Server.
    pub server: ServerId,
    /// When it was launched.
    pub launched_at: Timestamp,
    /// When it passes `max_age`.
    pub exceeds_at: Timestamp,
    /// When the campaign is projected to replace it (none: it does not).
    pub replaced_by: Option<Timestamp>,
}

/// A campaign's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignReport {
    /// Campaign.
    pub name: String,
    /// When the report was made.
    pub now: Timestamp,
    /// Status (`Running` also before it started).
    pub status: CampaignStatus,
    /// Whether it was started.
    pub started: bool,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// The deadline.
    pub deadline: Timestamp,
    /// The campaign's `max_age`.
    #[serde(with = "crate::time::duration_ms")]
    pub max_age: Duration,
    /// The wave duration projections use: the mean observed, or the spec's
    /// estimate before any wave finished.
    #[serde(with = "crate::time::duration_ms")]
    pub wave_duration: Duration,
    /// Whether that is observed.
    pub observed: bool,
    /// Waves.
    pub waves: Vec<WaveSummary>,
    /// Per deployment.
    pub deployments: Vec<DeploymentProgress>,
    /// When the campaign ends or is projected to (none once halted).
    pub completion: Option<Timestamp>,
    /// Whether that is by the deadline.
    pub on_time: bool,
    /// Servers that will pass `max_age` before the deadline if nothing
    /// changes, oldest first.
    pub aging: Vec<AgingServer>,
    /// How many times a process resumed it.
    pub resumes: u32,
}

impl CampaignReport {
    /// True once every wave succeeded.
    pub fn is_completed(&self) -> bool {
        matches!(self.status, CampaignStatus::Completed { .. })
    }

    /// The failed wave, if the campaign halted.
    pub fn halted_at(&self) -> Option<usize> {
        match self.status {
            CampaignStatus::Halted { wave, .. } => Some(wave),
            _ => None,
        }
    }
}

fn offset(start: Option<Timestamp>, t: Option<Timestamp>) -> String {
    match (start, t) {
        (Some(s), Some(t)) => format!("+{}", human(elapsed_between(s, t))),
        _ => "-".into(),
    }
}

impl fmt::Display for CampaignReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match &self.status {
            CampaignStatus::Running if !self.started => "not started".to_owned(),
            CampaignStatus::Running => "running".to_owned(),
            CampaignStatus::Halted { wave, reason, at } => format!(
                "HALTED at wave {wave} ({}): {reason}",
                offset(self.started_at, Some(*at))
            ),
            CampaignStatus::Completed { at } => {
                format!("completed ({})", offset(self.started_at, Some(*at)))
            }
        };
        writeln!(f, "campaign {}: {status}", self.name)?;
        let base = self.started_at.or(Some(self.now));
        writeln!(
            f,
            "  deadline {} ({}), projected completion {} -> {}; wave duration {} ({})",
            self.deadline,
            offset(base, Some(self.deadline)),
            offset(base, self.completion),
            if self.completion.is_none() {
                "never (halted)"
            } else if self.on_time {
                "on time"
            } else {
                "LATE"
            },
            human(self.wave_duration),
            if self.observed {
                "observed"
            } else {
                "estimate"
            }
        )?;
        writeln!(
            f,
            "  wave  env        domain     servers  status       start       end         rolled back"
        )?;
        for w in &self.waves {
            let end = w.finished_at.or(w.projected_finish);
            writeln!(
                f,
                "  {:>4}  {:<10} {:<10} {:>7}  {:<11}  {:<10}  {:<10}{} {}",
                w.index,
                w.environment.as_str(),
                w.failure_domain,
                w.servers,
                format!("{:?}", w.status),
                offset(base, w.started_at),
                offset(base, end),
                if w.finished_at.is_none() && end.is_some() {
                    "*"
                } else {
                    " "
                },
                w.rolled_back.join(" ")
            )?;
        }
        writeln!(
            f,
            "  deployment  domain     done  remaining  servers done/left  completion"
        )?;
        for d in &self.deployments {
            writeln!(
                f,
                "  {:<10}  {:<10} {:>4}  {:>9}  {:>8}/{:<8}  {} {}",
                d.deployment.as_str(),
                d.failure_domain,
                d.done.len(),
                d.remaining.len(),
                d.servers_done,
                d.servers_remaining,
                offset(base, d.completion),
                if d.completion.is_none() {
                    "(halted)"
                } else if d.on_time {
                    ""
                } else {
                    "LATE"
                }
            )?;
        }
        writeln!(
            f,
            "  {} server(s) will pass max_age {} before the deadline if nothing changes",
            self.aging.len(),
            human(self.max_age)
        )?;
        for a in self.aging.iter().take(5) {
            writeln!(
                f,
                "    {}/{} {} passes it at {}, replaced {}",
                a.deployment,
                a.role,
                a.server,
                offset(base, Some(a.exceeds_at)),
                offset(base, a.replaced_by)
            )?;
        }
        Ok(())
    }
}

impl Campaign<'_> {
    /// The campaign's report: its stored progress (or its plan, if it was
    /// not started), projections from now, and the aging servers.
    pub async fn report(&self) -> Result<CampaignReport, CampaignError> {
        let record = match state::load(self.phoenix.records(), &self.spec.name).await? {
            Some(Stored { value, .. }) => value,
            None => {
                let plan = self.plan().await?;
                let r = CampaignRecord::new(self.spec.clone(), plan, self.now());
                return self.report_on(&r, false).await;
            }
        };
        self.report_on(&record, true).await
    }

    pub(super) async fn report_on(
        &self,
        record: &CampaignRecord,
        started: bool,
    ) -> Result<CampaignReport, CampaignError> {
        let now = self.now();
        let spec = &record.spec;
        let halted = matches!(record.status, CampaignStatus::Halted { .. });

        // Wave duration: the mean of the waves that succeeded.
        let observed: Vec<Duration> = record
            .waves
            .iter()
            .filter(|w| w.status == WaveStatus::Succeeded)
            .filter_map(|w| Some(elapsed_between(w.started_at?, w.finished_at?)))
            .collect();
        let wave_duration = if observed.is_empty() {
            spec.wave_estimate
        } else {
            observed.iter().sum::<Duration>() / u32::try_from(observed.len()).unwrap_or(1)
        };

        // Projected finishes, under the replacement budget.
        let mut starts: Vec<(Timestamp, usize)> = record
            .waves
            .iter()
            .zip(&record.plan.waves)
            .filter_map(|(r, p)| r.started_at.map(|t| (t, p.servers())))
            .collect();
        let mut projected: Vec<Option<Timestamp>> = vec![None; record.waves.len()];
        let mut t = now;
        if !halted {
            for (i, (r, p)) in record.waves.iter().zip(&record.plan.waves).enumerate() {
                match r.status {
                    WaveStatus::Succeeded | WaveStatus::RolledBack => {}
                    WaveStatus::Running => {
                        let s = r.started_at.unwrap_or(now);
                        t = t.max(add(s, wave_duration));
                        projected[i] = Some(t);
                    }
                    WaveStatus::Pending => {
                        let need = p.servers();
                        let mut s = t;
                        loop {
                            let window: Vec<Timestamp> = starts
                                .iter()
                                .filter(|(x, _)| {
                                    *x <= s && elapsed_between(*x, s) < spec.budget.window
                                })
                                .map(|(x, _)| *x)
                                .collect();
                            let used: usize = starts
                                .iter()
                                .filter(|(x, _)| {
                                    *x <= s && elapsed_between(*x, s) < spec.budget.window
                                })
                                .map(|(_, n)| n)
                                .sum();
                            if used + need <= spec.budget.per_window || window.is_empty() {
                                break;
                            }
                            let oldest = window.iter().min().copied().unwrap_or(s);
                            s = add(oldest, spec.budget.window);
                        }
                        starts.push((s, need));
                        t = add(s, wave_duration);
                        projected[i] = Some(t);
                    }
                }
            }
        }
        let completion = match &record.status {
            CampaignStatus::Completed { at } => Some(*at),
            CampaignStatus::Halted { .. } => None,
            CampaignStatus::Running => {
                Some(projected.iter().flatten().max().copied().unwrap_or(now))
            }
        };

        let mut waves = Vec::with_capacity(record.waves.len());
        // Per deployment: (domain, done, remaining, servers done, left, completion)
        let mut per: BTreeMap<&DeploymentId, DeploymentProgress> = BTreeMap::new();
        for t in &spec.targets {
            per.insert(
                &t.deployment,
                DeploymentProgress {
                    deployment: t.deployment.clone(),
                    failure_domain: t.failure_domain.clone(),
                    done: Vec::new(),
                    remaining: Vec::new(),
                    servers_done: 0,
                    servers_remaining: 0,
                    completion: None,
                    on_time: false,
                },
            );
        }
        // When each (deployment, role) is (projected to be) replaced.
        let mut replaced: BTreeMap<(&DeploymentId, &RoleName), Timestamp> = BTreeMap::new();
        let mut blocked: BTreeMap<&DeploymentId, bool> = BTreeMap::new();
        for (i, (r, p)) in record.waves.iter().zip(&record.plan.waves).enumerate() {
            let mut rolled_back = Vec::new();
            let mut failed = Vec::new();
            for (ur, u) in r.units.iter().zip(&p.units) {
                let Some(d) = per.get_mut(&u.deployment) else {
                    continue;
                };
                let finish = match ur.status {
                    UnitStatus::Done => ur.finished_at,
                    _ => projected[i],
                };
                if ur.status == UnitStatus::Done {
                    d.done.push(u.role.clone());
                    d.servers_done += u.servers;
                } else {
                    d.remaining.push(u.role.clone());
                    d.servers_remaining += u.servers;
                    if projected[i].is_none() {
                        blocked.insert(&u.deployment, true);
                    }
                }
                if let Some(f) = finish {
                    d.completion = Some(d.completion.map_or(f, |c| c.max(f)));
                    replaced.insert((&u.deployment, &u.role), f);
                }
                match ur.status {
                    UnitStatus::RolledBack => {
                        rolled_back.push(format!("{}/{}", u.deployment, u.role));
                    }
                    UnitStatus::Done if r.status == WaveStatus::RolledBack => {
                        failed.push(format!(
                            "{}/{}: {}",
                            u.deployment,
                            u.role,
                            ur.error.as_deref().unwrap_or("not rolled back")
                        ));
                    }
                    UnitStatus::Failed => failed.push(format!(
                        "{}/{}: {}",
                        u.deployment,
                        u.role,
                        ur.error.as_deref().unwrap_or("failed")
                    )),
                    _ => {}
                }
            }
            waves.push(WaveSummary {
                index: p.index,
                environment: p.environment.clone(),
                failure_domain: p.failure_domain.clone(),
                servers: p.servers(),
                status: r.status,
                started_at: r.started_at,
                finished_at: r.finished_at,
                projected_finish: projected[i],
                rolled_back,
                failed,
            });
        }
        for (id, d) in per.iter_mut() {
            if blocked.contains_key(id) {
                d.completion = None;
            }
            d.on_time = d.completion.is_some_and(|c| c <= spec.deadline);
        }

        // Servers that will pass max_age before the deadline, unless the
        // campaign replaces them first.
        let mut aging = Vec::new();
        for t in &spec.targets {
            let snap = self.phoenix.snapshot(&t.deployment).await?;
            for role in snap.deployment().roles.keys() {
                for pool in snap.live_pools(role) {
                    let moved = pool.release == *t.releases.get(role).unwrap_or(&pool.release)
                        && t.releases.contains_key(role);
                    for slot in pool.attached() {
                        let (Some(server), Some(launched_at)) = (&slot.server, slot.launched_at)
                        else {
                            continue;
                        };
                        let exceeds_at = add(launched_at, spec.max_age);
                        if exceeds_at > spec.deadline {
                            continue;
                        }
                        let replaced_by = if moved {
                            None
                        } else {
                            replaced.get(&(&t.deployment, role)).copied()
                        };
                        if replaced_by.is_some_and(|r| r <= exceeds_at) {
                            continue;
                        }
                        aging.push(AgingServer {
                            deployment: t.deployment.clone(),
                            role: role.clone(),
                            server: server.clone(),
                            launched_at,
                            exceeds_at,
                            replaced_by,
                        });
                    }
                }
            }
        }
        aging.sort_by(|a, b| {
            a.launched_at
                .cmp(&b.launched_at)
                .then(a.server.cmp(&b.server))
        });

        Ok(CampaignReport {
            name: spec.name.clone(),
            now,
            status: record.status.clone(),
            started,
            started_at: started.then_some(record.started_at),
            deadline: spec.deadline,
            max_age: spec.max_age,
            wave_duration,
            observed: !observed.is_empty(),
            waves,
            deployments: per.into_values().collect(),
            completion,
            on_time: completion.is_some_and(|c| c <= spec.deadline),
            aging,
            resumes: record.resumes,
        })
    }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}
