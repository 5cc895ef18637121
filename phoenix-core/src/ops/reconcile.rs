use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::executor::guards::{Attribution, MemberIndex, Roster};
use crate::id::{PoolId, ServerId};
use crate::labels::keys;
use crate::model::{PoolState, Server, ServerStatus, SlotState, Traffic};
use crate::plan::{OperationKind, Plan, Step};
use crate::policy::FailurePolicy;
use crate::ports::{Member, MemberState};
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
    /// lost them (a balancer restarted empty, members removed by hand), and
    /// activate again those it keeps draining, disabled or in maintenance.
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
    /// A slot recorded behind the balancer whose member is there but takes
    /// no new traffic (left draining by a detach that failed part-way,
    /// disabled, in maintenance).
    InactiveMember {
        /// Pool.
        pool: PoolId,
        /// Slot.
        slot: u32,
        /// Server.
        server: ServerId,
        /// What the balancer says.
        state: MemberState,
    },
    /// A member whose id and endpoint point at different recorded servers
    /// (an adapter's stale address map): guards refuse to act near it.
    UnattributedMember {
        /// The id the balancer reports.
        server: ServerId,
        /// Where it sends traffic.
        endpoint: std::net::SocketAddr,
        /// Why it cannot be attributed.
        detail: String,
    },
    /// A server that appeared for a launch given up on (its token is
    /// remembered by its pool): an orphan, removed with the others.
    LateLaunch {
        /// Server.
        server: ServerId,
        /// Pool.
        pool: PoolId,
        /// Slot it was launched for.
        slot: u32,
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
            Self::InactiveMember {
                pool,
                slot,
                server,
                state,
            } => write!(
                f,
                "slot {slot} of {pool} ({server}) is recorded behind the balancer but the member is {state:?}"
            ),
            Self::UnattributedMember {
                server,
                endpoint,
                detail,
            } => write!(f, "member {server} at {endpoint} cannot be attributed: {detail}"),
            Self::LateLaunch { server, pool, slot } => write!(
                f,
                "{server} appeared for slot {slot} of {pool} after its launch was given up"
            ),
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
/// server labelled with this deployment), of the role's balancer
/// (`members`) and of every balancer Phoenix knows (`serving`), and plans
/// the requested repairs. `consistency_window` keeps servers launched
/// moments ago from being reported missing. Members are matched to servers
/// by id and endpoint.
pub fn reconcile(
    input: &PlanInput<'_>,
    cloud: &[Server],
    members: &[Member],
    serving: &[Member],
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
                    (
                        &p.value.id,
                        s.index,
                        s.state,
                        s.server.is_none() && s.may_have_launched(),
                    ),
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
                let token = server.labels.token();
                let pending = token
                    .as_ref()
                    .and_then(|t| tokens.get(t.as_str()).copied())
                    .filter(|(_, _, _, awaited)| *awaited);
                let late = token
                    .as_ref()
                    .and_then(|t| snap.lost_launch(t.as_str()))
                    .map(|(pool, lost)| (pool.id.clone(), lost.slot));
                match (pending, late) {
                    (Some((pool, slot, _, _)), _) => report.drift.push(Drift::PendingAdoption {
                        server: server.id.clone(),
                        pool: pool.clone(),
                        slot,
                    }),
                    (None, Some((pool, slot))) => {
                        report.drift.push(Drift::LateLaunch {
                            server: server.id.clone(),
                            pool,
                            slot,
                        });
                        report.orphans.push(server.id.clone());
                    }
                    (None, None) => report.orphans.push(server.id.clone()),
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
    let roster = Roster::of(snap);
    let index = MemberIndex::new(members);
    for m in members {
        match roster.attribute(m) {
            Attribution::Unknown => report.drift.push(Drift::UnknownMember {
                server: m.server.clone(),
            }),
            Attribution::Conflict(detail) => report.drift.push(Drift::UnattributedMember {
                server: m.server.clone(),
                endpoint: m.endpoint,
                detail,
            }),
            Attribution::Recorded(r) => {
                let Some(pool) = snap.pool(&r.pool) else {
                    continue;
                };
                let recorded_in = pool
                    .slot_of(&r.server)
                    .is_some_and(|s| s.traffic != Traffic::Out);
                let unexpected = !recorded_in || !matches!(pool.state, PoolState::Live);
                if unexpected && m.state != MemberState::Disabled {
                    report.drift.push(Drift::UnexpectedMember {
                        server: r.server.clone(),
                        pool: pool.id.clone(),
                        state: pool.state,
                    });
                }
            }
        }
    }
    for pool in snap.live_pools(&input.role) {
        for s in pool.attached() {
            let Some(server) = &s.server else { continue };
            match index.of_slot(s) {
                None => report.drift.push(Drift::MissingMember {
                    pool: pool.id.clone(),
                    slot: s.index,
                    server: server.clone(),
                }),
                Some(m) if m.state != MemberState::Active => {
                    report.drift.push(Drift::InactiveMember {
                        pool: pool.id.clone(),
                        slot: s.index,
                        server: server.clone(),
                        state: m.state,
                    })
                }
                Some(_) => {}
            }
        }
    }

    let mut steps = Vec::new();
    let mut notes = Vec::new();
    if options.record_missing {
        for (pool, slots) in &missing_by_pool {
            // A vanished server's member still points at its address: no
            // one answers there, or, once the address is reused, someone
            // else does. It leaves the balancer before the slot is
            // recorded gone (the slot no longer names it afterwards).
            // Matched by id or endpoint (a balancer may know the member
            // under a stand-in id), or recorded behind it: a read that
            // lists nothing may be wrong, and detaching a non-member
            // changes nothing.
            let index = MemberIndex::new(members);
            let behind: Vec<u32> = snap
                .pool(pool)
                .map(|p| {
                    slots
                        .iter()
                        .copied()
                        .filter(|i| {
                            p.slot(*i).is_some_and(|s| {
                                s.traffic == Traffic::Attached || index.of_slot(s).is_some()
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            // In batches: the blast radius holds for repairs too.
            for chunk in behind.chunks(input.policy.rollout.batch_size.max(1)) {
                steps.push(Step::Detach {
                    pool: pool.clone(),
                    slots: chunk.to_vec(),
                    replacements: Vec::new(),
                });
            }
            steps.push(Step::MarkMissing {
                pool: pool.clone(),
                slots: slots.clone(),
            });
        }
    }
    if options.remove_orphans {
        // Never an orphan that serves behind any balancer, by id or by
        // endpoint (the executor checks again, on a fresh read).
        let port = input.role_spec().map(|r| r.port).ok();
        let busy = |o: &ServerId| {
            let endpoint = cloud
                .iter()
                .find(|s| &s.id == o)
                .and_then(|s| port.and_then(|p| s.endpoint(p)));
            serving
                .iter()
                .filter(|m| m.carries_traffic())
                .any(|m| &m.server == o || Some(m.endpoint) == endpoint)
        };
        let (refused, removable): (Vec<&ServerId>, Vec<&ServerId>) =
            report.orphans.iter().partition(|o| busy(o));
        for o in refused {
            notes.push(format!("refused: orphan {o} is served by a balancer"));
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
                    }
                    | Drift::InactiveMember {
                        pool: p,
                        slot,
                        server,
                        ..
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
