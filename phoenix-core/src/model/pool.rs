use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::TransitionError;
use crate::id::{
    DeploymentId, EnvironmentName, IdempotencyToken, ImageId, OperationId, PoolId, ReleaseLabel,
    RoleName, ServerId,
};
use crate::time::Timestamp;

/// How a standby pool waits to be made live again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StandbyKind {
    /// Running, ready to take traffic at once.
    Hot,
    /// Stopped; must be started and verified before taking traffic.
    Cold,
}

/// Where a pool is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PoolState {
    /// Servers are being launched.
    Provisioning,
    /// Servers are being health-checked and smoke-tested.
    Verifying,
    /// Verified; can be made live.
    Ready,
    /// Behind the load balancer.
    Live,
    /// Kept for a one-step rollback.
    Standby {
        /// Hot (running) or cold (stopped).
        kind: StandbyKind,
    },
    /// No longer kept; its servers are being removed.
    Retired,
    /// Gone.
    Deleted,
    /// Failed provisioning, verification or its rollout; kept for
    /// inspection until reaped.
    Failed,
}

impl PoolState {
    /// A hot standby.
    pub const HOT: Self = Self::Standby {
        kind: StandbyKind::Hot,
    };
    /// A cold standby.
    pub const COLD: Self = Self::Standby {
        kind: StandbyKind::Cold,
    };

    fn allowed(self, to: Self) -> bool {
        use PoolState::*;
        use StandbyKind::*;
        matches!(
            (self, to),
            (Provisioning, Verifying | Failed | Retired)
                | (Verifying, Ready | Failed | Retired)
                | (Ready, Live | Standby { .. } | Retired | Failed)
                | (Live, Standby { .. } | Retired | Failed)
                | (Standby { kind: Hot }, Live | Retired | Failed)
                | (Standby { kind: Hot }, Standby { kind: Cold })
                | (
                    Standby { kind: Cold },
                    Standby { kind: Hot } | Retired | Failed
                )
                | (Failed, Retired)
                | (Retired, Deleted)
        )
    }

    /// True for pools that may be made live (possibly after starting).
    pub fn is_rollback_candidate(self) -> bool {
        matches!(self, Self::Ready | Self::Standby { .. })
    }

    /// True once a pool has no future.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Deleted)
    }
}

impl fmt::Display for PoolState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Provisioning => "provisioning",
            Self::Verifying => "verifying",
            Self::Ready => "ready",
            Self::Live => "live",
            Self::Standby {
                kind: StandbyKind::Hot,
            } => "standby(hot)",
            Self::Standby {
                kind: StandbyKind::Cold,
            } => "standby(cold)",
            Self::Retired => "retired",
            Self::Deleted => "deleted",
            Self::Failed => "failed",
        };
        f.write_str(s)
    }
}

/// The cloud-side life of one slot's current server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// Nothing requested yet.
    Pending,
    /// A launch was requested; the server id may not be known yet.
    Requested,
    /// The server exists and is booting.
    Booting,
    /// The server runs.
    Running,
    /// The server is stopped (cold standby).
    Stopped,
    /// The server was terminated.
    Terminated,
    /// Every launch attempt failed; the slot has no server.
    Abandoned,
}

impl SlotState {
    /// True while the slot has or may get a server.
    pub fn is_in_service(self) -> bool {
        !matches!(self, Self::Terminated | Self::Abandoned)
    }
}

/// Whether a slot's server takes traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Traffic {
    /// Not behind the balancer.
    Out,
    /// A member of the balancer.
    Attached,
    /// Detached, finishing open connections.
    Draining,
}

/// One position in a pool. A failed launch is retried in the same slot with
/// a new attempt (and so a new idempotency token); a replacement for age or
/// health is a new slot that names the one it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Index within the pool, never reused.
    pub index: u32,
    /// Launch attempt, from 0.
    pub attempt: u32,
    /// Of those attempts, how many replaced a launch whose answer was lost
    /// (not a failure: they use no replacement budget).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub relaunches: u32,
    /// Fingerprint of the payload the current attempt was launched with
    /// (never the payload: it holds secrets). A relaunch under the same
    /// token must carry the same payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Idempotency token of the current attempt.
    pub token: IdempotencyToken,
    /// Cloud-side state.
    pub state: SlotState,
    /// The server of the current attempt, once known.
    pub server: Option<ServerId>,
    /// Where the balancer reaches it.
    pub endpoint: Option<SocketAddr>,
    /// When the current attempt was requested.
    pub requested_at: Option<Timestamp>,
    /// When the provider says it launched.
    pub launched_at: Option<Timestamp>,
    /// Passed its direct health check since it last started.
    pub healthy: bool,
    /// Smoke-tested.
    pub verified: bool,
    /// Its warm-up hook ran since it was last attached.
    #[serde(default, skip_serializing_if = "is_false")]
    pub warmed: bool,
    /// Its drain hook ran since it was last attached.
    #[serde(default, skip_serializing_if = "is_false")]
    pub drained: bool,
    /// Traffic state.
    pub traffic: Traffic,
    /// Its server stays a member of the balancer while out of the
    /// traffic, a standby kept under the balancer's checks (a hot standby
    /// on a balancer that keeps them): it must leave the balancer before
    /// it is stopped or terminated, and a rollback may give it the traffic
    /// on the balancer's fresh evidence alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby: bool,
    /// When it finished its bake time behind the balancer.
    pub baked_at: Option<Timestamp>,
    /// The slot this one replaces, for heal and refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<u32>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

// A pool record holds every slot and is written again with every change,
// so a slot leaves out the fields that hold their default (some 70 of its
// 460 bytes); each reads back as its default, in earlier versions too.
fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Slot {
    /// A fresh slot for `operation`'s first attempt.
    pub fn pending(
        operation: &OperationId,
        pool: &PoolId,
        index: u32,
        replaces: Option<u32>,
    ) -> Self {
        Self {
            index,
            attempt: 0,
            relaunches: 0,
            payload: None,
            token: IdempotencyToken::derive(operation, pool, index, 0),
            state: SlotState::Pending,
            server: None,
            endpoint: None,
            requested_at: None,
            launched_at: None,
            healthy: false,
            verified: false,
            warmed: false,
            drained: false,
            traffic: Traffic::Out,
            standby: false,
            baked_at: None,
            replaces,
            last_failure: None,
        }
    }

    /// True when a launch under the slot's token was sent (its answer
    /// lost, or it waits to be sent again to a provider that
    /// de-duplicates): a server may exist, or appear, under the token.
    pub fn may_have_launched(&self) -> bool {
        self.state == SlotState::Requested
            || (self.state == SlotState::Pending && self.requested_at.is_some())
    }

    /// Starts a new launch attempt after a failure. The caller records the
    /// old server (if any) for clean-up first.
    pub fn next_attempt(&mut self, operation: &OperationId, pool: &PoolId, failure: String) {
        self.attempt += 1;
        self.token = IdempotencyToken::derive(operation, pool, self.index, self.attempt);
        self.payload = None;
        self.state = SlotState::Pending;
        self.server = None;
        self.endpoint = None;
        self.requested_at = None;
        self.launched_at = None;
        self.healthy = false;
        self.verified = false;
        self.warmed = false;
        self.drained = false;
        self.baked_at = None;
        self.last_failure = Some(failure);
    }
}

/// A server Phoenix launched and then gave up on (failed, stuck, lost). It
/// stays recorded until it is terminated, so nothing is orphaned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscardedServer {
    /// The server.
    pub server: ServerId,
    /// The slot it was launched for.
    pub slot: u32,
    /// Which attempt.
    pub attempt: u32,
    /// Why it was given up.
    pub reason: String,
    /// Whether termination succeeded.
    pub terminated: bool,
    /// Where the balancer reached it, if it ran (a server that served
    /// before it failed may still be pointed at, under another id).
    #[serde(default)]
    pub endpoint: Option<std::net::SocketAddr>,
}

/// A launch whose answer was lost and that was given up on (its slot
/// moved on to a new attempt, or was terminated): its server may still
/// appear, late, beyond the provider's consistency window. The pool keeps
/// its token so that such a server is recognised, and adopted or
/// terminated, instead of running unowned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostLaunch {
    /// The slot it was launched for.
    pub slot: u32,
    /// Which attempt.
    pub attempt: u32,
    /// Its idempotency token (also a label on the server).
    pub token: IdempotencyToken,
    /// When it was requested.
    pub requested_at: Option<Timestamp>,
}

/// A recorded state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolTransition {
    /// Previous state.
    pub from: PoolState,
    /// New state.
    pub to: PoolState,
    /// When.
    pub at: Timestamp,
}

/// The servers of one release and one role in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// Its id.
    pub id: PoolId,
    /// Its deployment.
    pub deployment: DeploymentId,
    /// Its environment.
    pub environment: EnvironmentName,
    /// Its role.
    pub role: RoleName,
    /// The release it runs.
    pub release: ReleaseLabel,
    /// The image its servers boot.
    pub image: ImageId,
    /// Lifecycle state.
    pub state: PoolState,
    /// Desired number of in-service servers.
    pub size: usize,
    /// When it was created.
    pub created_at: Timestamp,
    /// The operation that created it.
    pub created_by: OperationId,
    /// Slots in index order. Terminated slots are pruned (their history is
    /// in the event stream), so the record stays the size of the pool.
    pub slots: Vec<Slot>,
    /// The next slot index; indices are never reused, even once pruned.
    #[serde(default)]
    pub next_slot: u32,
    /// How many terminated slots were pruned.
    #[serde(default)]
    pub pruned_slots: u64,
    /// Servers given up on, kept until terminated.
    pub discarded: Vec<DiscardedServer>,
    /// Launches given up on whose server may still appear.
    #[serde(default)]
    pub lost: Vec<LostLaunch>,
    /// When it last became live, for ordering rollback candidates (`None`
    /// if it never served).
    #[serde(default)]
    pub last_live: Option<Timestamp>,
    /// When it last stopped being live (`None` while it never left), so
    /// that how long it served can be told: promotion needs it.
    #[serde(default)]
    pub left_live: Option<Timestamp>,
    /// State changes recorded in the pool by earlier versions. New
    /// records leave it empty: every state change is a
    /// [`PoolStateChanged`](crate::events::EventKind::PoolStateChanged)
    /// event in the deployment's event log, so the record does not grow
    /// with every operation. An old record's list is folded into
    /// `last_live` and dropped at its next state change. (Still written,
    /// empty, so that earlier versions can read new records.)
    #[serde(default)]
    pub history: Vec<PoolTransition>,
}

impl Pool {
    /// Moves to `to`, refusing illegal transitions.
    pub fn transition(&mut self, to: PoolState, at: Timestamp) -> Result<(), TransitionError> {
        if self.state == to {
            return Ok(());
        }
        if !self.state.allowed(to) {
            return Err(TransitionError {
                entity: "pool",
                id: self.id.to_string(),
                from: self.state.to_string(),
                to: to.to_string(),
                reason: "not a legal lifecycle step".into(),
            });
        }
        if !self.history.is_empty() {
            // An old record: keep what the list was read for, drop the
            // rest (the event log has every change).
            self.last_live = self.last_live_at();
            self.history = Vec::new();
        }
        if to == PoolState::Live {
            self.last_live = Some(at);
        } else if self.state == PoolState::Live {
            self.left_live = Some(at);
        }
        self.state = to;
        Ok(())
    }

    /// The slot with this index.
    pub fn slot(&self, index: u32) -> Option<&Slot> {
        self.slots
            .binary_search_by_key(&index, |s| s.index)
            .ok()
            .map(|i| &self.slots[i])
    }

    /// The slot with this index, mutably.
    pub fn slot_mut(&mut self, index: u32) -> Option<&mut Slot> {
        self.slots
            .binary_search_by_key(&index, |s| s.index)
            .ok()
            .map(|i| &mut self.slots[i])
    }

    /// The next unused slot index.
    pub fn next_index(&self) -> u32 {
        self.next_slot
            .max(self.slots.last().map_or(0, |s| s.index + 1))
    }

    /// Adds a slot at the end (its index must be the next unused one or
    /// later) and keeps `next_slot` ahead of it.
    pub fn add_slot(&mut self, slot: Slot) {
        self.next_slot = self.next_index().max(slot.index + 1);
        self.slots.push(slot);
    }

    /// True for an index that existed and was pruned once terminated.
    pub fn was_pruned(&self, index: u32) -> bool {
        index < self.next_index() && self.slot(index).is_none()
    }

    /// Drops terminated slots from the record; returns how many.
    pub fn prune_terminated(&mut self) -> usize {
        let before = self.slots.len();
        self.next_slot = self.next_index();
        self.slots.retain(|s| s.state != SlotState::Terminated);
        let pruned = before - self.slots.len();
        self.pruned_slots += pruned as u64;
        pruned
    }

    /// Slots that have or may get a server.
    pub fn in_service(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.state.is_in_service())
    }

    /// Slots whose server is behind the balancer.
    pub fn attached(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.traffic == Traffic::Attached)
    }

    /// Every server id this pool knows, current and discarded, that may
    /// still exist in the cloud.
    pub fn known_servers(&self) -> impl Iterator<Item = &ServerId> {
        self.slots
            .iter()
            .filter(|s| s.state != SlotState::Terminated)
            .filter_map(|s| s.server.as_ref())
            .chain(
                self.discarded
                    .iter()
                    .filter(|d| !d.terminated)
                    .map(|d| &d.server),
            )
    }

    /// True when this pool owns `server`: an in-service slot holds it, or
    /// it was given up on and is not terminated yet.
    pub fn owns(&self, server: &ServerId) -> bool {
        self.slot_of(server)
            .is_some_and(|s| s.state.is_in_service())
            || self
                .discarded
                .iter()
                .any(|d| &d.server == server && !d.terminated)
    }

    /// The slot that holds `server` now.
    pub fn slot_of(&self, server: &ServerId) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|s| s.server.as_ref() == Some(server))
    }

    /// When the pool last became live, for ordering rollback candidates.
    pub fn last_live_at(&self) -> Option<Timestamp> {
        let legacy = self
            .history
            .iter()
            .rev()
            .find(|t| t.to == PoolState::Live)
            .map(|t| t.at);
        self.last_live.max(legacy)
    }
}

#[cfg(test)]
mod tests;
