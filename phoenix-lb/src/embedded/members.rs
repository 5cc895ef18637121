//! The member set: an immutable snapshot that the data path reads without
//! locking and the control path replaces whole ([`arc_swap::ArcSwap`]), and
//! the per-member state that outlives snapshots (health, counters, open
//! connections).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use phoenix_core::id::ServerId;
use phoenix_core::ports::{Member, MemberHealth, MemberState, Target};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::stats::{MemberCounters, MemberStats};

/// Thirty years: "never" for a drain deadline.
const FOREVER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

const UNKNOWN: u8 = 0;
const HEALTHY: u8 = 1;
const UNHEALTHY: u8 = 2;

/// One attached server. Shared by the snapshots that contain it, its
/// health-check task, its drain task and its open connections.
#[derive(Debug)]
pub(crate) struct MemberEntry {
    pub(crate) server: ServerId,
    pub(crate) endpoint: SocketAddr,
    health: AtomicU8,
    /// Open connections to it, counted from the moment one is routed here
    /// (before the connect) until it closes.
    pub(crate) active: AtomicU64,
    /// Whether it takes new connections. Cleared right after a snapshot
    /// marks it draining, so that a connection routed with an older
    /// snapshot cannot slip in after its drain found it idle.
    pub(crate) accepting: AtomicBool,
    /// Connect failures and requests dropped unanswered since the last
    /// successful connect or passed check: routing tries such members
    /// last.
    pub(crate) recent_failures: AtomicU32,
    /// Woken when `active` drops to zero.
    pub(crate) idle: Notify,
    /// Cancelled when the member leaves the set: stops its health checks
    /// and closes whatever connections remain. A child of the balancer's
    /// token, so shutdown cancels it too.
    pub(crate) retired: CancellationToken,
    pub(crate) counters: MemberCounters,
    last_check_error: Mutex<Option<String>>,
    /// When its last check finished: a standby member's health is
    /// evidence only while its checks run.
    last_check: Mutex<Option<Instant>>,
    /// Cancelled to close the member's open connections without taking it
    /// out of the set (a standby's drain deadline); replaced afterwards,
    /// so that later connections get a live one.
    cut: Mutex<CancellationToken>,
}

impl MemberEntry {
    pub(crate) fn new(target: &Target, root: &CancellationToken) -> Self {
        Self {
            server: target.server.clone(),
            endpoint: target.endpoint,
            health: AtomicU8::new(UNKNOWN),
            active: AtomicU64::new(0),
            accepting: AtomicBool::new(true),
            recent_failures: AtomicU32::new(0),
            idle: Notify::new(),
            retired: root.child_token(),
            counters: MemberCounters::default(),
            last_check_error: Mutex::new(None),
            last_check: Mutex::new(None),
            cut: Mutex::new(CancellationToken::new()),
        }
    }

    /// Notes that a check of it just finished.
    pub(crate) fn checked(&self, at: Instant) {
        *self
            .last_check
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(at);
    }

    fn checked_ago(&self, now: Instant) -> Option<Duration> {
        self.last_check
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|t| now.saturating_duration_since(t))
    }

    /// The token a connection opened now is closed by (besides the
    /// member's retirement).
    pub(crate) fn cut_token(&self) -> CancellationToken {
        self.cut
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Closes the connections open now; the member stays.
    pub(crate) fn cut_open_connections(&self) {
        let old = std::mem::replace(
            &mut *self.cut.lock().unwrap_or_else(PoisonError::into_inner),
            CancellationToken::new(),
        );
        old.cancel();
    }

    pub(crate) fn health(&self) -> MemberHealth {
        match self.health.load(Ordering::Acquire) {
            HEALTHY => MemberHealth::Healthy,
            UNHEALTHY => MemberHealth::Unhealthy,
            _ => MemberHealth::Unknown,
        }
    }

    pub(crate) fn set_health(&self, health: MemberHealth) {
        let v = match health {
            MemberHealth::Healthy => HEALTHY,
            MemberHealth::Unhealthy => UNHEALTHY,
            MemberHealth::Unknown => UNKNOWN,
        };
        self.health.store(v, Ordering::Release);
    }

    pub(crate) fn set_last_check_error(&self, error: Option<String>) {
        *self
            .last_check_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }

    fn last_check_error(&self) -> Option<String> {
        self.last_check_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A member's administrative state within one snapshot.
#[derive(Debug, Clone)]
pub(crate) enum Admin {
    /// Takes new connections.
    Active,
    /// Takes none; leaves the set when idle or at `deadline`. `cancel`
    /// stops its drain task (re-attached, re-detached, shut down).
    Draining {
        deadline: Instant,
        cancel: CancellationToken,
    },
    /// A standby: takes none, stays in the set under its checks; what is
    /// open at `deadline` is closed. `cancel` stops that closing
    /// (re-attached, detached, shut down).
    Standby {
        deadline: Instant,
        cancel: CancellationToken,
    },
}

impl Admin {
    fn cancel(&self) -> Option<&CancellationToken> {
        match self {
            Self::Active => None,
            Self::Draining { cancel, .. } | Self::Standby { cancel, .. } => Some(cancel),
        }
    }
}

/// What the targets of a change's `attach` list become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Join {
    /// Active members (re-activated if they drain or stand by).
    Active,
    /// Standby members, checked and taking nothing (staged); members that
    /// serve are left serving.
    Standby,
}

/// What the members of a change's `detach` list become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leave {
    /// They drain and leave the set.
    Detach,
    /// They drain and stay, as standby members.
    Standby,
}

/// A member in one snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) entry: Arc<MemberEntry>,
    pub(crate) admin: Admin,
}

impl Slot {
    pub(crate) fn is_active(&self) -> bool {
        matches!(self.admin, Admin::Active)
    }

    fn state(&self) -> MemberState {
        match self.admin {
            Admin::Active => MemberState::Active,
            Admin::Draining { .. } => MemberState::Draining,
            Admin::Standby { .. } => MemberState::Disabled,
        }
    }

    pub(crate) fn member(&self) -> Member {
        Member {
            server: self.entry.server.clone(),
            endpoint: self.entry.endpoint,
            health: self.entry.health(),
            state: self.state(),
            connections: Some(self.entry.active.load(Ordering::Acquire)),
            checked_ago: self.entry.checked_ago(Instant::now()),
        }
    }

    pub(crate) fn stats(&self) -> MemberStats {
        let e = &self.entry;
        let c = &e.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MemberStats {
            server: e.server.clone(),
            endpoint: e.endpoint,
            state: self.state(),
            health: e.health(),
            connections_total: get(&c.connections_total),
            connections_active: get(&e.active),
            bytes_in: get(&c.bytes_in),
            bytes_out: get(&c.bytes_out),
            connect_failures: get(&c.connect_failures),
            connection_errors: get(&c.connection_errors),
            unanswered: get(&c.unanswered),
            forced_closes: get(&c.forced_closes),
            checks_passed: get(&c.checks_passed),
            checks_failed: get(&c.checks_failed),
            last_check_error: e.last_check_error(),
            http_responses: get(&c.responses),
            http_5xx: get(&c.responses_5xx),
            mean_latency: match get(&c.latency_samples) {
                0 => None,
                n => Some(std::time::Duration::from_micros(
                    get(&c.latency_us_total) / n,
                )),
            },
        }
    }
}

/// One immutable snapshot of the members, in attach order.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemberSet {
    pub(crate) slots: Vec<Slot>,
}

/// A server named twice with different endpoints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server {server} is attached at {current}, not {requested}: detach it first")]
pub(crate) struct EndpointConflict {
    pub(crate) server: ServerId,
    pub(crate) current: SocketAddr,
    pub(crate) requested: SocketAddr,
}

/// A new snapshot and the side effects that must follow storing it.
#[derive(Debug, Default)]
pub(crate) struct Change {
    /// The snapshot to store.
    pub(crate) set: MemberSet,
    /// New members: their health checks must start.
    pub(crate) started: Vec<Arc<MemberEntry>>,
    /// Members whose drain must start (or restart with an earlier
    /// deadline).
    pub(crate) draining: Vec<(Arc<MemberEntry>, CancellationToken, Instant)>,
    /// Members whose `accepting` flag must follow their new state.
    pub(crate) accepting: Vec<(Arc<MemberEntry>, bool)>,
    /// Standby members whose open connections must be closed at their
    /// deadline.
    pub(crate) closing: Vec<(Arc<MemberEntry>, CancellationToken, Instant)>,
    /// Drains to stop (re-attached members, drains replaced by an earlier
    /// deadline): cancelled once the snapshot is stored, under the control
    /// lock.
    pub(crate) stop_drains: Vec<CancellationToken>,
}

impl MemberSet {
    #[cfg(test)]
    fn position(&self, server: &ServerId) -> Option<usize> {
        self.slots.iter().position(|s| &s.entry.server == server)
    }

    /// Whether `entry` (this very entry, not just its server id) is in the
    /// set, and where.
    pub(crate) fn position_of(&self, entry: &Arc<MemberEntry>) -> Option<usize> {
        self.slots.iter().position(|s| Arc::ptr_eq(&s.entry, entry))
    }

    /// The snapshot after attaching `attach` (as `join` says), then
    /// detaching `detach` with a drain of `drain` from `now` (as `leave`
    /// says), and what must follow once it is stored. Nothing shared
    /// changes here, so an error leaves no trace.
    ///
    /// Attaching a member is idempotent; attaching a draining or standby
    /// one makes it active again (its health is kept). Detaching a
    /// non-member does nothing; detaching a draining member again keeps
    /// the earlier of the two deadlines.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn change(
        &self,
        attach: &[Target],
        join: Join,
        detach: &[ServerId],
        leave: Leave,
        drain: Duration,
        now: Instant,
        root: &CancellationToken,
    ) -> Result<Change, EndpointConflict> {
        let mut slots = self.slots.clone();
        let mut change = Change::default();
        let mut touched: Vec<Arc<MemberEntry>> = Vec::new();
        for target in attach {
            match slots.iter_mut().find(|s| s.entry.server == target.server) {
                Some(slot) if slot.entry.endpoint != target.endpoint => {
                    return Err(EndpointConflict {
                        server: target.server.clone(),
                        current: slot.entry.endpoint,
                        requested: target.endpoint,
                    });
                }
                Some(slot) => match (join, &slot.admin) {
                    (_, Admin::Active) | (Join::Standby, Admin::Standby { .. }) => {}
                    (Join::Active, admin) => {
                        change.stop_drains.extend(admin.cancel().cloned());
                        slot.admin = Admin::Active;
                        touched.push(slot.entry.clone());
                    }
                    (Join::Standby, Admin::Draining { deadline, cancel }) => {
                        // It stays, and closes what is open at the drain's end.
                        let deadline = *deadline;
                        change.stop_drains.push(cancel.clone());
                        let cancel = root.child_token();
                        slot.admin = Admin::Standby {
                            deadline,
                            cancel: cancel.clone(),
                        };
                        change.closing.push((slot.entry.clone(), cancel, deadline));
                    }
                },
                None => {
                    let entry = Arc::new(MemberEntry::new(target, root));
                    change.started.push(entry.clone());
                    let admin = match join {
                        Join::Active => Admin::Active,
                        Join::Standby => Admin::Standby {
                            deadline: now,
                            cancel: root.child_token(),
                        },
                    };
                    if join == Join::Standby {
                        touched.push(entry.clone());
                    }
                    slots.push(Slot { entry, admin });
                }
            }
        }
        // A drain too long to represent is as good as forever.
        let deadline = now.checked_add(drain).unwrap_or_else(|| now + FOREVER);
        for server in detach {
            let Some(slot) = slots.iter_mut().find(|s| &s.entry.server == server) else {
                continue;
            };
            let (current, replaced) = match &slot.admin {
                Admin::Active => (None, None),
                Admin::Draining {
                    deadline: current,
                    cancel,
                } if leave == Leave::Detach => (Some(*current), Some(cancel.clone())),
                Admin::Standby {
                    deadline: current,
                    cancel,
                } if leave == Leave::Standby => (Some(*current), Some(cancel.clone())),
                // Changing between draining and standby keeps the earlier
                // deadline, under a new task.
                Admin::Draining {
                    deadline: current,
                    cancel,
                }
                | Admin::Standby {
                    deadline: current,
                    cancel,
                } => {
                    change.stop_drains.push(cancel.clone());
                    let d = deadline.min(*current);
                    let cancel = root.child_token();
                    slot.admin = match leave {
                        Leave::Detach => {
                            change
                                .draining
                                .push((slot.entry.clone(), cancel.clone(), d));
                            Admin::Draining {
                                deadline: d,
                                cancel,
                            }
                        }
                        Leave::Standby => {
                            change.closing.push((slot.entry.clone(), cancel.clone(), d));
                            Admin::Standby {
                                deadline: d,
                                cancel,
                            }
                        }
                    };
                    continue;
                }
            };
            let restart = match current {
                None => true,
                Some(current) => deadline < current,
            };
            if !restart {
                continue;
            }
            change.stop_drains.extend(replaced);
            let cancel = root.child_token();
            slot.admin = match leave {
                Leave::Detach => {
                    change
                        .draining
                        .push((slot.entry.clone(), cancel.clone(), deadline));
                    Admin::Draining { deadline, cancel }
                }
                Leave::Standby => {
                    change
                        .closing
                        .push((slot.entry.clone(), cancel.clone(), deadline));
                    Admin::Standby { deadline, cancel }
                }
            };
            touched.push(slot.entry.clone());
        }
        change.set = MemberSet { slots };
        for entry in touched {
            if change.accepting.iter().any(|(e, _)| Arc::ptr_eq(e, &entry)) {
                continue;
            }
            let active = change
                .set
                .position_of(&entry)
                .is_some_and(|i| change.set.slots[i].is_active());
            change.accepting.push((entry, active));
        }
        // A member added and detached (or staged) in the same change
        // starts closed.
        for entry in &change.started {
            if let Some((_, accepting)) =
                change.accepting.iter().find(|(e, _)| Arc::ptr_eq(e, entry))
            {
                entry.accepting.store(*accepting, Ordering::SeqCst);
            }
        }
        Ok(change)
    }

    /// The snapshot without `entry`, if it is there.
    pub(crate) fn without(&self, entry: &Arc<MemberEntry>) -> Option<MemberSet> {
        let i = self.position_of(entry)?;
        let mut slots = self.slots.clone();
        slots.remove(i);
        Some(MemberSet { slots })
    }

    /// Looks a member up by server id.
    #[cfg(test)]
    pub(crate) fn get(&self, server: &ServerId) -> Option<&Slot> {
        self.position(server).map(|i| &self.slots[i])
    }
}

#[cfg(test)]
#[path = "members_tests.rs"]
mod tests;
