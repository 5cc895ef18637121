use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::PortError;
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
}

impl Member {
    /// Takes new traffic and passes its checks.
    pub fn is_serving_healthy(&self) -> bool {
        self.state == MemberState::Active && self.health == MemberHealth::Healthy
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
