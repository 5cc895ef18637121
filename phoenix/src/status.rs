//! The status of a deployment as a tree: deployment → role → release →
//! pool (live, standby hot or cold, draining, failed, …) → server (health,
//! traffic, age, max-age deadline).

use std::fmt;
use std::time::Duration;

use phoenix_core::model::{Pool, PoolState, SlotState, Traffic};
use phoenix_core::records::Snapshot;
use phoenix_core::time::{elapsed_between, human, Timestamp};
use serde::Serialize;

/// A deployment's status.
#[derive(Debug, Clone, Serialize)]
pub struct StatusTree {
    /// The deployment.
    pub deployment: String,
    /// Its environment.
    pub environment: String,
    /// Its generation (bumped by every change).
    pub generation: u64,
    /// The unfinished operation, if any.
    pub active_operation: Option<String>,
    /// Its roles.
    pub roles: Vec<RoleStatus>,
    /// What its retained pools cost, when prices are known
    /// ([`StatusTree::with_cost`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_cost: Option<phoenix_core::cost::CostReport>,
}

/// A role's status.
#[derive(Debug, Clone, Serialize)]
pub struct RoleStatus {
    /// Its name.
    pub role: String,
    /// Desired servers.
    pub desired: usize,
    /// Servers taking traffic now, by the records.
    pub serving: usize,
    /// Releases that have pools, newest pool first.
    pub releases: Vec<ReleaseStatus>,
}

/// A release's pools in a role.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseStatus {
    /// The label.
    pub release: String,
    /// Its pools.
    pub pools: Vec<PoolStatus>,
}

/// A pool's status.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    /// Its id.
    pub pool: String,
    /// Its state: `live`, `standby(hot)`, `standby(cold)`, `draining`
    /// (live members leaving), `failed`, `ready`, …
    pub state: String,
    /// Desired size.
    pub size: usize,
    /// Its servers in service.
    pub servers: Vec<ServerStatus>,
}

/// A server's status.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    /// Its id (or the slot, before it has one).
    pub server: String,
    /// Where it serves.
    pub endpoint: Option<String>,
    /// `running`, `booting`, `stopped`, …
    pub state: String,
    /// Healthy by its last check.
    pub healthy: bool,
    /// `attached` (taking traffic), `draining`, `standby member` (kept
    /// behind the balancer under its checks, taking no traffic) or `out`.
    pub traffic: String,
    /// Its age.
    pub age_secs: Option<u64>,
    /// Time left before it passes the policy's `max_age` (negative: past it).
    pub max_age_in_secs: Option<i64>,
    /// Why its last launch attempt failed, if it did.
    pub last_failure: Option<String>,
}

fn slot_state(s: SlotState) -> &'static str {
    match s {
        SlotState::Pending => "pending",
        SlotState::Requested => "requested",
        SlotState::Booting => "booting",
        SlotState::Running => "running",
        SlotState::Stopped => "stopped",
        SlotState::Terminated => "terminated",
        SlotState::Abandoned => "abandoned",
    }
}

fn pool_state(p: &Pool) -> String {
    let draining = p.in_service().any(|s| s.traffic == Traffic::Draining);
    match p.state {
        PoolState::Live | PoolState::Standby { .. } if draining => {
            format!("{} (draining)", p.state)
        }
        other => other.to_string(),
    }
}

impl StatusTree {
    /// The tree of a snapshot at `now`, with servers' deadlines from
    /// `max_age`. Deleted pools are left out unless `all`.
    pub fn of(snap: &Snapshot, now: Timestamp, max_age: Duration, all: bool) -> Self {
        let d = snap.deployment();
        let mut roles = Vec::new();
        for (name, role) in &d.roles {
            let mut pools: Vec<&Pool> = snap
                .pools
                .values()
                .map(|p| &p.value)
                .filter(|p| &p.role == name && (all || p.state != PoolState::Deleted))
                .collect();
            pools.sort_by_key(|p| std::cmp::Reverse(p.created_at));
            let mut releases: Vec<ReleaseStatus> = Vec::new();
            let mut serving = 0;
            for p in pools {
                let servers: Vec<ServerStatus> = p
                    .in_service()
                    .map(|s| {
                        let age = s.launched_at.map(|at| elapsed_between(at, now));
                        let traffic = match s.traffic {
                            Traffic::Attached => "attached",
                            Traffic::Draining => "draining",
                            Traffic::Out if s.standby => "standby member",
                            Traffic::Out => "out",
                        };
                        if traffic == "attached" {
                            serving += 1;
                        }
                        ServerStatus {
                            server: s
                                .server
                                .as_ref()
                                .map_or_else(|| format!("slot {}", s.index), |id| id.to_string()),
                            endpoint: s.endpoint.map(|e| e.to_string()),
                            state: slot_state(s.state).into(),
                            healthy: s.healthy,
                            traffic: traffic.into(),
                            age_secs: age.map(|a| a.as_secs()),
                            max_age_in_secs: age.map(|a| {
                                i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)
                                    - i64::try_from(a.as_secs()).unwrap_or(i64::MAX)
                            }),
                            last_failure: s.last_failure.clone(),
                        }
                    })
                    .collect();
                let status = PoolStatus {
                    pool: p.id.to_string(),
                    state: pool_state(p),
                    size: p.size,
                    servers,
                };
                match releases
                    .iter_mut()
                    .find(|r| r.release == p.release.as_str())
                {
                    Some(r) => r.pools.push(status),
                    None => releases.push(ReleaseStatus {
                        release: p.release.to_string(),
                        pools: vec![status],
                    }),
                }
            }
            roles.push(RoleStatus {
                role: name.to_string(),
                desired: role.desired,
                serving,
                releases,
            });
        }
        Self {
            deployment: d.id.to_string(),
            environment: d.environment.name.to_string(),
            generation: snap.generation(),
            active_operation: snap
                .record
                .value
                .active_operation
                .as_ref()
                .map(|o| o.to_string()),
            roles,
            rollback_cost: None,
        }
    }

    /// With what the snapshot's retained pools cost at `prices`.
    pub fn with_cost(mut self, snap: &Snapshot, prices: &phoenix_core::cost::PriceTable) -> Self {
        self.rollback_cost = Some(phoenix_core::cost::retention_cost(snap, prices));
        self
    }
}

fn secs(n: u64) -> String {
    if n == 0 {
        "<1s".into()
    } else {
        human(Duration::from_secs(n))
    }
}

impl fmt::Display for StatusTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (environment {}, generation {})",
            self.deployment, self.environment, self.generation
        )?;
        if let Some(op) = &self.active_operation {
            write!(f, ", unfinished operation {op}")?;
        }
        writeln!(f)?;
        for (ri, role) in self.roles.iter().enumerate() {
            let last_role = ri + 1 == self.roles.len();
            let (branch, indent) = if last_role {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            writeln!(
                f,
                "{branch}role {}: {}/{} serving",
                role.role, role.serving, role.desired
            )?;
            if role.releases.is_empty() {
                writeln!(f, "{indent}└─ no pools")?;
            }
            for (li, rel) in role.releases.iter().enumerate() {
                let last_rel = li + 1 == role.releases.len();
                let (b2, i2) = if last_rel {
                    ("└─ ", "   ")
                } else {
                    ("├─ ", "│  ")
                };
                writeln!(f, "{indent}{b2}release {}", rel.release)?;
                for (pi, pool) in rel.pools.iter().enumerate() {
                    let last_pool = pi + 1 == rel.pools.len();
                    let (b3, i3) = if last_pool {
                        ("└─ ", "   ")
                    } else {
                        ("├─ ", "│  ")
                    };
                    writeln!(
                        f,
                        "{indent}{i2}{b3}pool {} {} ({} of {} servers)",
                        pool.pool,
                        pool.state,
                        pool.servers.len(),
                        pool.size
                    )?;
                    for (si, s) in pool.servers.iter().enumerate() {
                        let b4 = if si + 1 == pool.servers.len() {
                            "└─ "
                        } else {
                            "├─ "
                        };
                        write!(
                            f,
                            "{indent}{i2}{i3}{b4}{} {} {}, {}, {}",
                            s.server,
                            s.endpoint.as_deref().unwrap_or("-"),
                            s.state,
                            if s.healthy { "healthy" } else { "unhealthy" },
                            s.traffic
                        )?;
                        if let Some(age) = s.age_secs {
                            write!(f, ", age {}", secs(age))?;
                        }
                        match s.max_age_in_secs {
                            Some(left) if left >= 0 => {
                                write!(f, ", max age in {}", secs(left.unsigned_abs()))?
                            }
                            Some(left) => {
                                write!(f, ", past max age by {}", secs(left.unsigned_abs()))?
                            }
                            None => {}
                        }
                        if let Some(why) = &s.last_failure {
                            write!(f, ", last failure: {why}")?;
                        }
                        writeln!(f)?;
                    }
                }
            }
        }
        if let Some(cost) = &self.rollback_cost {
            write!(f, "{cost}")?;
        }
        Ok(())
    }
}
