use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{PoolId, ServerId};
use crate::labels::keys;
use crate::model::{PoolState, Server, ServerStatus, SlotState, Traffic};
use crate::plan::{OperationKind, Plan, Step};
use crate::policy::FailurePolicy;
use crate::ports::Member;
use crate::time::elapsed_between;

use super::{PlanInput, PlanningError};

/// What reconcile may repair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileOptions {
    /// Terminate orphans (never one the balancer serves).
    pub remove_orphans: bool,
    /// Record servers that vanished from the cloud as gone.
    pub record_missing: bool,
    /// Put live servers recorded behind the balancer back into it when it
    /// lost them (a balancer restarted empty, members removed by hand).
    pub restore_members: bool,
}

/// A disagreement between the records, the cloud and the balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "drift", rename_all = "snake_case")]
pub enum Drift {
    /// A balancer member that no recorded pool owns.
    UnknownMember {
        /// Server.
        server: ServerId,
    },
    /// A member owned by a pool that should not serve, or by a slot
    /// recorded out of the balancer.
    UnexpectedMember {
        /// Server.
        server: ServerId,
        /// Owner.
        pool: PoolId,
        /// Owner's state.
        state: PoolState,
    },
    /// A slot recorded behind the balancer that is not a member.
    MissingMember {
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Server.
        server: ServerId,
    },
    /// A server whose labels disagree with its recorded pool.
    LabelMismatch {
        /// Server.
        server: ServerId,
        /// Pool.
        pool: PoolId,
        /// What differs.
        detail: String,
    },
    /// A launch whose answer was lost; the next step of its operation
    /// adopts it by its token.
    PendingAdoption {
        /// Server.
        server: ServerId,
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownMember { server } => {
                write!(f, "balancer member {server} belongs to no recorded pool")
            }
            Self::UnexpectedMember {
                server,
                pool,
                state,
            } => write!(f, "{server} of pool {pool} ({state}) is a balancer member"),
            Self::MissingMember { pool, slot, server } => write!(
                f,
                "slot {slot} of {pool} ({server}) is recorded behind the balancer but is not a member"
            ),
            Self::LabelMismatch {
                server,
                pool,
                detail,
            } => write!(f, "{server} of pool {pool}: {detail}"),
            Self::PendingAdoption { server, pool, slot } => write!(
                f,
                "{server} was launched for slot {slot} of {pool}; its launch answer was lost"
            ),
        }
    }
}

/// What reconcile found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// Labelled servers of this role that no recorded pool owns.
    pub orphans: Vec<ServerId>,
    /// Recorded servers the cloud does not have.
    pub missing: Vec<(PoolId, u32, ServerId)>,
    /// Disagreements.
    pub drift: Vec<Drift>,
}

impl ReconcileReport {
    /// True when store, cloud and balancer agree.
    pub fn is_clean(&self) -> bool {
        self.orphans.is_empty() && self.missing.is_empty() && self.drift.is_empty()
    }
}

impl fmt::Display for ReconcileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return writeln!(f, "store, cloud and balancer agree");
        }
        for o in &self.orphans {
            writeln!(
                f,
                "orphan: {o} carries Phoenix labels but belongs to no recorded pool"
            )?;
        }
        for (pool, slot, server) in &self.missing {
            writeln!(
                f,
                "missing: slot {slot} of {pool} ({server}) is not in the cloud"
            )?;
        }
        for d in &self.drift {
            writeln!(f, "drift: {d}")?;
        }
        Ok(())
    }
}

/// Compares the records with fresh reads of the cloud (`cloud`: every
/// server labelled with this deployment) and of the role's balancer, and
/// plans the requested repairs. `consistency_window` keeps servers
/// launched moments ago from being reported missing.
pub fn reconcile(
    input: &PlanInput<'_>,
    cloud: &[Server],
    members: &[Member],
    consistency_window: Duration,
    options: ReconcileOptions,
) -> Result<(ReconcileReport, Plan), PlanningError> {
    input.check()?;
    let snap = input.snap;
    let mut report = ReconcileReport::default();
    let tokens: BTreeMap<&str, (&PoolId, u32, SlotState, bool)> = snap
        .pools
        .values()
        .flat_map(|p| {
            p.value.slots.iter().map(move |s| {
                (
                    s.token.as_str(),
                    (&p.value.id, s.index, s.state, s.server.is_none()),
                )
            })
        })
        .collect();
    let present: BTreeSet<&ServerId> = cloud
        .iter()
        .filter(|s| s.status != ServerStatus::Deleted)
        .map(|s| &s.id)
        .collect();
    for server in cloud.iter().filter(|s| s.status != ServerStatus::Deleted) {
        let role = server.labels.get(keys::ROLE);
        if role.is_some_and(|r| r != input.role.as_str()) {
            continue;
        }
        match snap.owner_of(&server.id) {
            Some((pool, _)) => {
                let label_release = server.labels.release();
                if label_release.as_ref() != Some(&pool.release) {
                    report.drift.push(Drift::LabelMismatch {
                        server: server.id.clone(),
                        pool: pool.id.clone(),
                        detail: format!(
                            "labelled release {} but the pool runs {}",
                            label_release.map_or("none".to_owned(), |r| r.to_string()),
                            pool.release
                        ),
                    });
                }
            }
            None => {
                let pending = server
                    .labels
                    .token()
                    .and_then(|t| tokens.get(t.as_str()).copied())
                    .filter(|(_, _, state, no_server)| {
                        *state == SlotState::Requested && *no_server
                    });
                match pending {
                    Some((pool, slot, _, _)) => report.drift.push(Drift::PendingAdoption {
                        server: server.id.clone(),
                        pool: pool.clone(),
                        slot,
                    }),
                    None => report.orphans.push(server.id.clone()),
                }
            }
        }
    }
    let mut missing_by_pool: BTreeMap<PoolId, Vec<u32>> = BTreeMap::new();
    for pool in snap.pools_of(&input.role) {
        for s in &pool.slots {
            let Some(server) = &s.server else { continue };
            if !matches!(
                s.state,
                SlotState::Booting | SlotState::Running | SlotState::Stopped
            ) {
                continue;
            }
            let fresh = s
                .requested_at
                .is_some_and(|t| elapsed_between(t, input.now) <= consistency_window);
            if !present.contains(server) && !fresh {
                report
                    .missing
                    .push((pool.id.clone(), s.index, server.clone()));
                missing_by_pool
                    .entry(pool.id.clone())
                    .or_default()
                    .push(s.index);
            }
        }
    }
    let member_ids: BTreeSet<&ServerId> = members.iter().map(|m| &m.server).collect();
    for m in members {
        match snap.owner_of(&m.server) {
            None => report.drift.push(Drift::UnknownMember {
                server: m.server.clone(),
            }),
            Some((pool, slot)) => {
                let recorded_in = slot
                    .and_then(|i| pool.slot(i))
                    .is_some_and(|s| s.traffic != Traffic::Out);
                if !recorded_in || !matches!(pool.state, PoolState::Live) {
                    report.drift.push(Drift::UnexpectedMember {
                        server: m.server.clone(),
                        pool: pool.id.clone(),
                        state: pool.state,
                    });
                }
            }
        }
    }
    for pool in snap.live_pools(&input.role) {
        for s in pool.attached() {
            if let Some(server) = &s.server {
                if !member_ids.contains(server) {
                    report.drift.push(Drift::MissingMember {
                        pool: pool.id.clone(),
                        slot: s.index,
                        server: server.clone(),
                    });
                }
            }
        }
    }

    let mut steps = Vec::new();
    let mut notes = Vec::new();
    if options.record_missing {
        for (pool, slots) in &missing_by_pool {
            steps.push(Step::MarkMissing {
                pool: pool.clone(),
                slots: slots.clone(),
            });
        }
    }
    if options.remove_orphans {
        let serving: BTreeSet<&ServerId> = members
            .iter()
            .filter(|m| m.carries_traffic())
            .map(|m| &m.server)
            .collect();
        let (refused, removable): (Vec<&ServerId>, Vec<&ServerId>) =
            report.orphans.iter().partition(|o| serving.contains(o));
        for o in refused {
            notes.push(format!("refused: orphan {o} is served by the balancer"));
        }
        let removable: Vec<ServerId> = removable.into_iter().cloned().collect();
        for chunk in removable.chunks(input.policy.rollout.batch_size.max(1)) {
            steps.push(Step::TerminateOrphans {
                servers: chunk.to_vec(),
            });
        }
    }
    if options.restore_members {
        let missing_servers: BTreeSet<&ServerId> =
            report.missing.iter().map(|(_, _, s)| s).collect();
        for pool in snap.live_pools(&input.role) {
            let lost: Vec<u32> = report
                .drift
                .iter()
                .filter_map(|d| match d {
                    Drift::MissingMember {
                        pool: p,
                        slot,
                        server,
                    } if p == &pool.id && !missing_servers.contains(server) => Some(*slot),
                    _ => None,
                })
                .collect();
            if lost.is_empty() {
                continue;
            }
            for chunk in lost.chunks(input.policy.rollout.batch_size.max(1)) {
                steps.push(Step::Attach {
                    pool: pool.id.clone(),
                    slots: chunk.to_vec(),
                });
            }
            steps.push(Step::AwaitHealthy {
                pool: pool.id.clone(),
                slots: lost,
            });
        }
    }
    let summary = format!(
        "reconcile {}: {} orphan(s), {} missing, {} drift",
        input.role,
        report.orphans.len(),
        report.missing.len(),
        report.drift.len()
    );
    let mut plan = input.plan(
        OperationKind::Reconcile,
        summary,
        steps,
        FailurePolicy::Halt,
        None,
        None,
    );
    plan.notes = notes;
    Ok((report, plan))
}
