use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{PortError, TrafficStats};
use crate::id::ServerId;

/// What a balancer can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbCapabilities {
    /// Swaps a member set in one atomic call (Octavia's batch member
    /// update, the embedded proxy).
    pub atomic_swap: bool,
    /// Drains members (no new connections, open ones finish).
    pub drain: bool,
    /// Reports open connections per member.
    pub reports_connections: bool,
    /// Most members one attach or detach call accepts.
    pub max_batch: usize,
    /// Whether `attach` makes a draining member active again at once.
    /// ELBv2 cannot: a target it deregisters drains for the whole
    /// deregistration delay, and `attach` fails (temporarily) until then.
    pub reactivates_draining: bool,
    /// Holds members that take no traffic yet but pass the balancer's own
    /// checks (ELBv2's idle target group), so that a pool is seen healthy
    /// by the balancer *before* an atomic [`swap`](LoadBalancer::swap)
    /// gives it the traffic. See [`LoadBalancer::stage`].
    pub stages: bool,
    /// Keeps members that leave the traffic as *standby* members: they
    /// take no new traffic but stay under the balancer's checks
    /// ([`standby`](LoadBalancer::standby),
    /// [`swap_standby`](LoadBalancer::swap_standby)), and `attach` gives
    /// them the traffic again with the health those checks found. A
    /// rollback to such a pool needs no re-check when the balancer's fresh
    /// read shows each member passing checks within [`check_interval`].
    ///
    /// [`check_interval`]: Self::check_interval
    pub keeps_standby: bool,
    /// How often the balancer's own checks run, where it says: a member
    /// whose last check is older was not checked lately (its checks were
    /// stopped), and its health is no evidence.
    pub check_interval: Option<Duration>,
}

impl LbCapabilities {
    /// A balancer with none of the optional abilities: no atomic swap,
    /// staging or standby, members re-activated on attach, `max_batch`
    /// members per call. Adapters start from it and say what they add.
    pub fn basic(max_batch: usize) -> Self {
        Self {
            atomic_swap: false,
            drain: true,
            reports_connections: false,
            max_batch,
            reactivates_draining: true,
            stages: false,
            keeps_standby: false,
            check_interval: None,
        }
    }
}

/// A member's health as the balancer's own checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberHealth {
    /// Passing checks.
    Healthy,
    /// Failing checks.
    Unhealthy,
    /// Not checked yet.
    Unknown,
}

/// A member's administrative state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Takes new connections.
    Active,
    /// Takes no new connections; open ones finish.
    Draining,
    /// Takes no traffic at all.
    Disabled,
}

/// A balancer member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The server behind it.
    pub server: ServerId,
    /// Where traffic goes.
    pub endpoint: SocketAddr,
    /// Health.
    pub health: MemberHealth,
    /// Administrative state.
    pub state: MemberState,
    /// Open connections, where the balancer reports them.
    pub connections: Option<u64>,
    /// At most how long ago the balancer's checks last judged this member,
    /// where it tells (`None`: it does not say).
    #[serde(default, with = "opt_ms", skip_serializing_if = "Option::is_none")]
    pub checked_ago: Option<Duration>,
}

mod opt_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

impl Member {
    /// Takes new traffic and passes its checks.
    pub fn is_serving_healthy(&self) -> bool {
        self.state == MemberState::Active && self.health == MemberHealth::Healthy
    }

    /// A standby member whose health is fresh evidence: it takes no
    /// traffic (`Disabled`, not draining), passes the balancer's checks,
    /// and the last of them ran within `interval`. A rollback may give it
    /// the traffic without checking it again (invariant 2).
    pub fn is_checked_standby(&self, interval: Duration) -> bool {
        self.state == MemberState::Disabled
            && self.health == MemberHealth::Healthy
            && self.checked_ago.is_some()
            && self.checked_recently(Some(interval))
    }

    /// Whether its health is recent evidence: the balancer's checks judged
    /// it within `interval`, the balancer's check interval. A balancer
    /// that declares no interval, or does not say when it checked, is
    /// believed.
    pub fn checked_recently(&self, interval: Option<Duration>) -> bool {
        match (interval, self.checked_ago) {
            (Some(interval), Some(ago)) => ago <= interval,
            _ => true,
        }
    }

    /// Still carries or may carry traffic: active, or draining with open
    /// connections (or an unknown number of them).
    pub fn carries_traffic(&self) -> bool {
        match self.state {
            MemberState::Active => true,
            MemberState::Draining => self.connections != Some(0),
            MemberState::Disabled => self.connections.is_some_and(|c| c > 0),
        }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {} ({:?}, {:?})",
            self.server, self.endpoint, self.state, self.health
        )
    }
}

/// A server to put behind the balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The server.
    pub server: ServerId,
    /// Where traffic goes.
    pub endpoint: SocketAddr,
}

/// Puts servers behind a load balancer and takes them out.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait LoadBalancer: Send + Sync {
    /// What this balancer can do.
    fn capabilities(&self) -> LbCapabilities;

    /// Current members with health, read fresh from the balancer.
    ///
    /// The safety guards decide from this read whether a server still
    /// serves and whether it may be terminated, so it reports what the
    /// balancer does, not what this process remembers:
    ///
    /// - every member the balancer holds is reported, with its true
    ///   endpoint and its true state (a member draining, at weight 0,
    ///   disabled or in maintenance is not `Active`);
    /// - the server id is the one behind that member now. An adapter that
    ///   maps addresses to servers never reports a server that has left an
    ///   endpoint for another server attached there since (by this
    ///   instance or any other); where it cannot tell which server a
    ///   member is, it reports a stand-in id, never a guess;
    /// - a member the adapter cannot read is never left out: the read
    ///   fails with [`ErrorKind::BadResponse`](super::ErrorKind::BadResponse),
    ///   or the member is reported at its true endpoint under a stand-in
    ///   id;
    /// - another instance of the adapter on the same balancer (another
    ///   orchestrator process, a restarted one) reports the same
    ///   endpoints.
    async fn members(&self) -> Result<Vec<Member>, PortError>;

    /// Adds members, each at its target's endpoint, and makes them take
    /// new traffic.
    ///
    /// Attaching a server that is already an active member at the same
    /// endpoint changes nothing (no duplicate, its health kept). One that
    /// is present but draining, at weight 0, disabled or in maintenance —
    /// a rollback re-attaches a pool whose detach stopped part-way — is
    /// made `Active` again, the same member, not a second one, and is
    /// healthy again once its checks pass; an adapter that cannot
    /// re-activate it fails. Where the balancer holds one member per
    /// endpoint, attaching a server at an endpoint that another server
    /// held makes that member the new server's.
    async fn attach(&self, targets: &[Target]) -> Result<(), PortError>;

    /// Starts removing members: they take no new connections and are gone
    /// once drained or after `drain`. Detaching a non-member succeeds.
    async fn detach(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError>;

    /// Readies targets for a later [`swap`](Self::swap) without giving
    /// them traffic: where the balancer stages (`stages` declared), they
    /// become members that take no traffic (`members` reports them
    /// `Disabled`) and that the balancer checks, so their health is known
    /// before the switch. Staging a member that already serves changes
    /// nothing. A balancer that does not stage answers
    /// [`ErrorKind::Unsupported`](super::ErrorKind::Unsupported).
    async fn stage(&self, targets: &[Target]) -> Result<(), PortError> {
        let _ = targets;
        Err(PortError::new(
            "staging members",
            super::ErrorKind::Unsupported("this balancer cannot stage members".into()),
        ))
    }

    /// Moves members to standby where the balancer keeps standby members
    /// (`keeps_standby` declared): they take no new connections, open ones
    /// finish (closed after `drain`), and they stay members, reported
    /// `Disabled` with the health the balancer's checks keep finding.
    /// Non-members are left alone. A balancer that does not keep standby
    /// members answers [`ErrorKind::Unsupported`](super::ErrorKind::Unsupported).
    async fn standby(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        let _ = (servers, drain);
        Err(PortError::new(
            "moving members to standby",
            super::ErrorKind::Unsupported("this balancer keeps no standby members".into()),
        ))
    }

    /// Gives `attach` the traffic and moves `standby` to standby (see
    /// [`standby`](Self::standby)); atomically where `atomic_swap` is
    /// declared, otherwise attach first, then standby.
    async fn swap_standby(
        &self,
        attach: &[Target],
        standby: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        self.attach(attach).await?;
        self.standby(standby, drain).await
    }

    /// What the balancer measured of the traffic it sent to `servers`
    /// (see [`TrafficStats`]): cumulative request and error counters and
    /// the recent latencies, summed over the members. A member it does not
    /// hold counts nothing. A balancer that keeps no such counters answers
    /// [`ErrorKind::Unsupported`](super::ErrorKind::Unsupported); a canary
    /// gate fails closed on it.
    async fn traffic_stats(&self, servers: &[ServerId]) -> Result<TrafficStats, PortError> {
        let _ = servers;
        Err(PortError::new(
            "reading traffic statistics",
            super::ErrorKind::Unsupported("this balancer reports no traffic statistics".into()),
        ))
    }

    /// Sets the members' share of new traffic, in percent of their normal
    /// weight (100 restores it), where the balancer routes by weight
    /// (HAProxy's `set server … weight N%`). A balancer that does not
    /// answers [`ErrorKind::Unsupported`](super::ErrorKind::Unsupported):
    /// there, a canary's share is its number of members.
    async fn set_weight(&self, servers: &[ServerId], percent: u8) -> Result<(), PortError> {
        let _ = (servers, percent);
        Err(PortError::new(
            "setting member weights",
            super::ErrorKind::Unsupported("this balancer does not route by weight".into()),
        ))
    }

    /// Adds `attach` and removes `detach`; atomically where
    /// `atomic_swap` is declared, otherwise attach first, then detach.
    async fn swap(
        &self,
        attach: &[Target],
        detach: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        self.attach(attach).await?;
        self.detach(detach, drain).await
    }
}
