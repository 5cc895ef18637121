//! Planners: each operation first builds a [`Plan`]
//! from the records and, where it matters, fresh reads of the cloud and
//! the balancer. Planners change nothing.

mod canary;
mod deploy;
mod heal;
pub mod promotion;
mod provision;
mod reap;
mod reconcile;
mod refresh;
mod rollback;
mod rolling;

pub use deploy::{deploy, deploy_seen};
pub use heal::heal;
pub use provision::provision;
pub use reap::reap;
pub use reconcile::{reconcile, Drift, ReconcileOptions, ReconcileReport};
pub use refresh::refresh;
pub use rollback::rollback;
pub use rolling::rolling_replace;

use crate::id::{ImageId, OperationId, PoolId, ReleaseLabel, RoleName};
use crate::model::{Pool, PoolState, Role, SlotState, Traffic};
use crate::plan::{OperationKind, Plan, Precondition, SlotRef, Step};
use crate::policy::{FailurePolicy, Policy};
use crate::records::Snapshot;
use crate::time::Timestamp;

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanningError {
    /// The role is not part of the deployment.
    #[error("role {role} is not defined in deployment {deployment}")]
    UnknownRole {
        /// Deployment.
        deployment: String,
        /// Role.
        role: RoleName,
    },
    /// The release is not recorded.
    #[error("release {0} is not recorded")]
    UnknownRelease(ReleaseLabel),
    /// The release names no image for the role.
    #[error("release {release} has no image for role {role}")]
    NoImageForRole {
        /// Release.
        release: ReleaseLabel,
        /// Role.
        role: RoleName,
    },
    /// The image does not exist.
    #[error("image {0} does not exist")]
    UnknownImage(ImageId),
    /// The image may not be launched here.
    #[error("image {image} is {state}; {reason}")]
    ImageNotLaunchable {
        /// Image.
        image: ImageId,
        /// Its state.
        state: crate::model::ImageState,
        /// Why that is not enough.
        reason: String,
    },
    /// The role has no live pool.
    #[error("role {0} has no live pool")]
    NothingLive(RoleName),
    /// The role has several live pools (an unfinished rolling replacement).
    #[error("role {role} has {count} live pools; resume or reconcile first")]
    SeveralLive {
        /// Role.
        role: RoleName,
        /// How many.
        count: usize,
    },
    /// Nothing to roll back to.
    #[error("no pool of role {role} to roll back to{}", .release.as_ref().map(|r| format!(" for release {r}")).unwrap_or_default())]
    NoRollbackTarget {
        /// Role.
        role: RoleName,
        /// The release asked for.
        release: Option<ReleaseLabel>,
    },
    /// The policy is unusable.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// A pool id could not be made.
    #[error(transparent)]
    Id(#[from] crate::id::InvalidId),
    /// The records could not be read.
    #[error("reading the records failed")]
    Records(#[from] crate::records::RecordError),
    /// A fresh read of the cloud or balancer failed (fail closed).
    #[error("fresh read failed: {0}")]
    Read(#[source] crate::ports::PortError),
    /// A fresh read answered something a plan must not be built on (an
    /// empty balancer while servers are recorded behind it).
    #[error("not planning on an untrusted read: {0}")]
    UntrustedRead(String),
    /// An earlier operation is unfinished.
    #[error("operation {0} is unfinished; resume it first")]
    Unfinished(OperationId),
    /// The deployment's promotion rule is not met: the image has not
    /// served long enough in staging.
    #[error(transparent)]
    NotPromoted(#[from] promotion::NotPromoted),
}

/// What every planner receives.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// The records, read just now.
    pub snap: &'a Snapshot,
    /// The policy.
    pub policy: &'a Policy,
    /// The new operation's id.
    pub operation: OperationId,
    /// Now.
    pub now: Timestamp,
    /// The role.
    pub role: RoleName,
    /// What the role's balancer can do (`None`: unknown, plans the
    /// batched cutover).
    pub balancer: Option<crate::ports::LbCapabilities>,
}

impl PlanInput<'_> {
    pub(crate) fn role_spec(&self) -> Result<&Role, PlanningError> {
        self.snap
            .deployment()
            .roles
            .get(&self.role)
            .ok_or_else(|| PlanningError::UnknownRole {
                deployment: self.snap.deployment().id.to_string(),
                role: self.role.clone(),
            })
    }

    /// True when a cutover is planned as one atomic switch: the policy
    /// asks for it and the balancer swaps atomically and stages.
    pub(crate) fn switches(&self) -> bool {
        self.policy.rollout.cutover == crate::policy::Cutover::Switch
            && self
                .balancer
                .as_ref()
                .is_some_and(|b| b.atomic_swap && b.stages)
    }

    /// True when the pools a cutover takes the traffic from stay on the
    /// balancer as standby members under its checks.
    pub(crate) fn keeps_standby(&self) -> bool {
        self.balancer.as_ref().is_some_and(|b| b.keeps_standby)
    }

    pub(crate) fn check(&self) -> Result<(), PlanningError> {
        self.policy.validate()?;
        if let Some(op) = &self.snap.record.value.active_operation {
            return Err(PlanningError::Unfinished(op.clone()));
        }
        self.role_spec()?;
        Ok(())
    }

    /// The live pools of the role, oldest first: normally one, two after a
    /// halted rolling replacement.
    pub(crate) fn live_pools(&self) -> Vec<&Pool> {
        self.snap.live_pools(&self.role).collect()
    }

    /// Pools of the role with servers behind the balancer (attached or
    /// draining), or marked live (a live pool whose servers all left stays
    /// one until an operation moves it on), other than `except`, oldest
    /// first.
    pub(crate) fn serving_pools(&self, except: Option<&PoolId>) -> Vec<&Pool> {
        self.snap
            .pools_of(&self.role)
            .filter(|p| Some(&p.id) != except)
            .filter(|p| {
                p.state == PoolState::Live || p.slots.iter().any(|s| s.traffic != Traffic::Out)
            })
            .collect()
    }

    pub(crate) fn new_pool_id(&self, release: &ReleaseLabel) -> Result<PoolId, PlanningError> {
        Ok(PoolId::new(format!(
            "{}-{}-{}",
            self.role, release, self.snap.record.value.next_pool_seq
        ))?)
    }

    pub(crate) fn image_of(&self, release: &ReleaseLabel) -> Result<ImageId, PlanningError> {
        let r = self
            .snap
            .releases
            .get(release)
            .ok_or_else(|| PlanningError::UnknownRelease(release.clone()))?;
        r.image_for(&self.role)
            .cloned()
            .ok_or_else(|| PlanningError::NoImageForRole {
                release: release.clone(),
                role: self.role.clone(),
            })
    }

    pub(crate) fn plan(
        &self,
        kind: OperationKind,
        summary: String,
        steps: Vec<Step>,
        on_failure: FailurePolicy,
        restore: Option<PoolId>,
        target_release: Option<ReleaseLabel>,
    ) -> Plan {
        Plan {
            id: self.operation.clone(),
            kind,
            deployment: self.snap.deployment().id.clone(),
            role: self.role.clone(),
            summary,
            created_at: self.now,
            policy: self.policy.clone(),
            preconditions: vec![Precondition::Generation {
                generation: self.snap.generation(),
            }],
            steps,
            on_failure,
            restore,
            target_release,
            notes: Vec::new(),
        }
    }
}

/// The steps that create and verify a pool, ending Ready.
pub(crate) fn provision_steps(
    pool: &PoolId,
    role: &RoleName,
    release: &ReleaseLabel,
    image: &ImageId,
    size: usize,
) -> Vec<Step> {
    let slots: Vec<u32> = (0..u32::try_from(size).unwrap_or(u32::MAX)).collect();
    vec![
        Step::CreatePool {
            pool: pool.clone(),
            role: role.clone(),
            release: release.clone(),
            image: image.clone(),
            size,
            slots: u32::try_from(size).unwrap_or(u32::MAX),
        },
        Step::Launch {
            pool: pool.clone(),
            slots: slots.clone(),
        },
        Step::SetPoolState {
            pool: pool.clone(),
            to: PoolState::Verifying,
        },
        Step::Verify {
            pool: pool.clone(),
            slots,
        },
        Step::SetPoolState {
            pool: pool.clone(),
            to: PoolState::Ready,
        },
    ]
}

/// True when every in-service slot of the pool serves and there are at
/// least `size` of them.
pub(crate) fn is_full(pool: &Pool) -> bool {
    let in_service: Vec<&crate::model::Slot> = pool.in_service().collect();
    in_service.len() >= pool.size && in_service.iter().all(|s| s.traffic == Traffic::Attached)
}

/// The pool among `pools` with the most attached servers (the first on a
/// tie): the one a failed operation restores.
pub(crate) fn main_pool<'a>(pools: &[&'a Pool]) -> Option<&'a Pool> {
    pools
        .iter()
        .copied()
        .rev()
        .max_by_key(|p| p.attached().count())
}

/// Brings an existing pool to `size` running, healthy, verified servers
/// that are not yet serving: starts stopped ones, revalidates (and
/// replaces if dead) those that wait, adds missing slots. Returns the steps
/// and every in-service slot afterwards.
pub(crate) fn fill_steps(pool: &Pool, batch: usize) -> (Vec<Step>, Vec<u32>) {
    let mut steps = Vec::new();
    let stopped: Vec<u32> = pool
        .slots
        .iter()
        .filter(|s| s.state == SlotState::Stopped)
        .map(|s| s.index)
        .collect();
    for chunk in stopped.chunks(batch.max(1)) {
        steps.push(Step::Start {
            pool: pool.id.clone(),
            slots: chunk.to_vec(),
        });
    }
    if pool.state == PoolState::COLD {
        steps.push(Step::SetPoolState {
            pool: pool.id.clone(),
            to: PoolState::HOT,
        });
    }
    let mut all = in_service(pool);
    let missing = pool.size.saturating_sub(all.len());
    let first = pool.next_index();
    let new: Vec<u32> = (first..first + u32::try_from(missing).unwrap_or(0)).collect();
    if !new.is_empty() {
        steps.push(Step::AddSlots {
            pool: pool.id.clone(),
            slots: new
                .iter()
                .map(|i| crate::plan::NewSlot {
                    index: *i,
                    replaces: None,
                })
                .collect(),
        });
    }
    let waiting: Vec<u32> = pool
        .in_service()
        .filter(|s| s.traffic == Traffic::Out && s.state != SlotState::Stopped)
        .map(|s| s.index)
        .chain(new.iter().copied())
        .collect();
    if !waiting.is_empty() {
        steps.push(Step::Launch {
            pool: pool.id.clone(),
            slots: waiting.clone(),
        });
    }
    let verify: Vec<u32> = waiting
        .iter()
        .copied()
        .chain(stopped.iter().copied())
        .collect();
    if !verify.is_empty() {
        steps.push(Step::Verify {
            pool: pool.id.clone(),
            slots: verify,
        });
    }
    all.extend(new);
    (steps, all)
}

/// Attach in batches, wait healthy, go live, bake.
pub(crate) fn expose_steps(
    pool: &PoolId,
    all: &[u32],
    to_attach: &[u32],
    batch: usize,
    bake: std::time::Duration,
    state: PoolState,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for chunk in to_attach.chunks(batch.max(1)) {
        steps.push(Step::Attach {
            pool: pool.clone(),
            slots: chunk.to_vec(),
        });
    }
    steps.push(Step::AwaitHealthy {
        pool: pool.clone(),
        slots: all.to_vec(),
    });
    if state != PoolState::Live {
        steps.push(Step::SetPoolState {
            pool: pool.clone(),
            to: PoolState::Live,
        });
    }
    steps.push(Step::Bake {
        pool: pool.clone(),
        slots: all.to_vec(),
        duration: bake,
    });
    steps
}

/// Detach a pool's serving slots in batches once `replacements` serve,
/// wait until drained.
pub(crate) fn retire_traffic_steps(
    pool: &Pool,
    replacements: &[SlotRef],
    batch: usize,
    standby: bool,
) -> (Vec<Step>, Vec<u32>) {
    let serving: Vec<u32> = pool
        .slots
        .iter()
        .filter(|s| s.traffic != Traffic::Out)
        .map(|s| s.index)
        .collect();
    let mut steps = Vec::new();
    for chunk in serving.chunks(batch.max(1)) {
        let (pool, slots, replacements) = (pool.id.clone(), chunk.to_vec(), replacements.to_vec());
        steps.push(if standby {
            Step::Standby {
                pool,
                slots,
                replacements,
            }
        } else {
            Step::Detach {
                pool,
                slots,
                replacements,
            }
        });
    }
    if !serving.is_empty() {
        steps.push(Step::AwaitDrained {
            pool: pool.id.clone(),
            slots: serving.clone(),
        });
    }
    (steps, serving)
}

/// The cutover to `pool`'s slots `all` from `others` as one atomic switch:
/// stage the new members, wait until the balancer finds them healthy, bake
/// them there (healthy for `bake` while taking no traffic), switch, wait
/// until they serve healthy, then let the old members drain; a pool that
/// was live becomes a hot standby (with `standby`, its members stay on the
/// balancer under its checks). Returns the steps and the preconditions
/// they rely on.
pub(crate) fn switch_steps(
    pool: &PoolId,
    all: &[u32],
    state: PoolState,
    others: &[&Pool],
    bake: std::time::Duration,
    standby: bool,
) -> (Vec<Step>, Vec<Precondition>) {
    let mut steps = vec![
        Step::Stage {
            pool: pool.clone(),
            slots: all.to_vec(),
        },
        Step::Bake {
            pool: pool.clone(),
            slots: all.to_vec(),
            duration: bake,
        },
    ];
    let mut away = Vec::new();
    let mut preconditions = Vec::new();
    for o in others {
        preconditions.push(Precondition::PoolState {
            pool: o.id.clone(),
            state: o.state,
        });
        away.extend(
            o.slots
                .iter()
                .filter(|s| s.traffic != Traffic::Out)
                .map(|s| SlotRef {
                    pool: o.id.clone(),
                    slot: s.index,
                }),
        );
    }
    steps.push(Step::Switch {
        pool: pool.clone(),
        slots: all.to_vec(),
        away: away.clone(),
        standby: standby && others.iter().all(|o| o.state == PoolState::Live),
    });
    steps.push(Step::AwaitHealthy {
        pool: pool.clone(),
        slots: all.to_vec(),
    });
    if state != PoolState::Live {
        steps.push(Step::SetPoolState {
            pool: pool.clone(),
            to: PoolState::Live,
        });
    }
    for o in others {
        let leaving: Vec<u32> = away
            .iter()
            .filter(|r| r.pool == o.id)
            .map(|r| r.slot)
            .collect();
        if !leaving.is_empty() {
            steps.push(Step::AwaitDrained {
                pool: o.id.clone(),
                slots: leaving,
            });
        }
        if o.state == PoolState::Live {
            steps.push(Step::SetPoolState {
                pool: o.id.clone(),
                to: PoolState::HOT,
            });
        }
    }
    (steps, preconditions)
}

/// True when the cutover to `target` (an existing pool, or a new one) is
/// planned as one atomic switch: the policy and the balancer allow it,
/// something serves to switch away from, and none of the target's slots
/// serves yet (a mixed state left by a halted batched cutover goes on
/// batched).
pub(crate) fn switches(input: &PlanInput<'_>, target: Option<&Pool>, others: &[&Pool]) -> bool {
    input.switches()
        && !others.is_empty()
        && target.is_none_or(|p| p.slots.iter().all(|s| s.traffic == Traffic::Out))
}

/// Moves traffic away from `others` once `target`'s slots `all` serve:
/// their members leave in batches with drain, and a pool that was live
/// becomes a hot standby (one-step rollback; with `standby`, its members
/// stay on the balancer under its checks). Returns the steps and the
/// preconditions they rely on.
pub(crate) fn switch_away(
    others: &[&Pool],
    target: &PoolId,
    all: &[u32],
    batch: usize,
    standby: bool,
) -> (Vec<Step>, Vec<Precondition>) {
    let mut steps = Vec::new();
    let mut preconditions = Vec::new();
    for o in others {
        preconditions.push(Precondition::PoolState {
            pool: o.id.clone(),
            state: o.state,
        });
        let keep = standby && o.state == PoolState::Live;
        let (detach, _) = retire_traffic_steps(o, &refs(target, all), batch, keep);
        steps.extend(detach);
        if o.state == PoolState::Live {
            steps.push(Step::SetPoolState {
                pool: o.id.clone(),
                to: PoolState::HOT,
            });
        }
    }
    (steps, preconditions)
}

/// Slot references for a pool's slots.
pub(crate) fn refs(pool: &PoolId, slots: &[u32]) -> Vec<SlotRef> {
    slots
        .iter()
        .map(|s| SlotRef {
            pool: pool.clone(),
            slot: *s,
        })
        .collect()
}

/// A pool's slots that have or may get a server.
pub(crate) fn in_service(pool: &Pool) -> Vec<u32> {
    pool.in_service().map(|s| s.index).collect()
}

/// A pool's slots with a running server.
pub(crate) fn running(pool: &Pool) -> Vec<u32> {
    pool.slots
        .iter()
        .filter(|s| s.state == SlotState::Running)
        .map(|s| s.index)
        .collect()
}

/// Terminate in batches.
pub(crate) fn terminate_steps(pool: &PoolId, slots: &[u32], batch: usize) -> Vec<Step> {
    slots
        .chunks(batch.max(1))
        .map(|c| Step::Terminate {
            pool: pool.clone(),
            slots: c.to_vec(),
        })
        .collect()
}
