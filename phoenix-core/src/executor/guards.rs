//! The safety guards, as pure functions over fresh reads, so that each can
//! be tested on its own and each call site states which invariant it
//! protects. A guard that is not sure refuses.
//!
//! Balancer members are matched to servers by id *and* endpoint: adapters
//! may report a stand-in id for a node they cannot name, or an old
//! server's id for an address a new server now has, but the endpoint is
//! where traffic goes. A member whose id and endpoint point at different
//! servers cannot be attributed, and the guard refuses.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::events::Invariant;
use crate::id::{PoolId, ReleaseLabel, RoleName, ServerId};
use crate::model::{Slot, Traffic};
use crate::ports::{Member, MemberHealth, MemberState};
use crate::records::Snapshot;

/// A refused action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The invariant that refused it.
    pub invariant: Invariant,
    /// What and why.
    pub detail: String,
}

fn refuse(invariant: Invariant, detail: String) -> Result<(), Refusal> {
    Err(Refusal { invariant, detail })
}

/// A server a guard is asked about: its id and, once it ran, the endpoint
/// the balancer reaches it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The server.
    pub server: ServerId,
    /// Where it serves, when known.
    pub endpoint: Option<SocketAddr>,
}

impl Subject {
    /// The subject a slot's server is.
    pub fn of(slot: &Slot) -> Option<Self> {
        Some(Self {
            server: slot.server.clone()?,
            endpoint: slot.endpoint,
        })
    }

    /// True when `member` is this server: the same id, or the same
    /// endpoint (whatever id the balancer reports there).
    pub fn is(&self, member: &Member) -> bool {
        member.server == self.server || self.endpoint == Some(member.endpoint)
    }

    /// A member reported under this server's id at another endpoint than
    /// the one recorded: the id cannot be trusted.
    fn misplaced(&self, member: &Member) -> bool {
        member.server == self.server && self.endpoint.is_some_and(|e| e != member.endpoint)
    }
}

/// Finds members by endpoint first (where traffic goes), else by id.
#[derive(Debug)]
pub struct MemberIndex<'a> {
    by_id: BTreeMap<&'a ServerId, &'a Member>,
    by_endpoint: BTreeMap<SocketAddr, &'a Member>,
}

impl<'a> MemberIndex<'a> {
    /// Indexes a read.
    pub fn new(members: &'a [Member]) -> Self {
        Self {
            by_id: members.iter().map(|m| (&m.server, m)).collect(),
            by_endpoint: members.iter().map(|m| (m.endpoint, m)).collect(),
        }
    }

    /// The member that is `server` at `endpoint`: the one at its endpoint
    /// when the endpoint is known, else the one with its id.
    pub fn find(&self, server: &ServerId, endpoint: Option<SocketAddr>) -> Option<&'a Member> {
        match endpoint {
            Some(e) => self.by_endpoint.get(&e).copied(),
            None => self.by_id.get(server).copied(),
        }
    }

    /// The member that is a slot's server.
    pub fn of_slot(&self, slot: &Slot) -> Option<&'a Member> {
        self.find(slot.server.as_ref()?, slot.endpoint)
    }
}

/// What the records say a recorded server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The server.
    pub server: ServerId,
    /// Its recorded endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Its pool.
    pub pool: PoolId,
    /// Its role.
    pub role: RoleName,
    /// Its pool's release.
    pub release: ReleaseLabel,
}

/// Who a balancer member is, according to the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribution<'a> {
    /// A recorded server of the deployment.
    Recorded(&'a Recorded),
    /// Neither its id nor its endpoint is recorded.
    Unknown,
    /// Its id and endpoint point at different servers, or its id is
    /// recorded at another endpoint: it cannot be trusted either way.
    Conflict(String),
}

/// The deployment's recorded servers, by id and by endpoint.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    servers: Vec<Recorded>,
    by_id: BTreeMap<ServerId, usize>,
    by_endpoint: BTreeMap<SocketAddr, Vec<usize>>,
}

impl Roster {
    /// Every server of every recorded pool that may still exist.
    pub fn of(snap: &Snapshot) -> Self {
        let mut roster = Self::default();
        for stored in snap.pools.values() {
            let pool = &stored.value;
            for slot in pool.in_service() {
                let Some(server) = &slot.server else { continue };
                roster.add(Recorded {
                    server: server.clone(),
                    endpoint: slot.endpoint,
                    pool: pool.id.clone(),
                    role: pool.role.clone(),
                    release: pool.release.clone(),
                });
            }
        }
        roster
    }

    fn add(&mut self, r: Recorded) {
        let i = self.servers.len();
        self.by_id.insert(r.server.clone(), i);
        if let Some(e) = r.endpoint {
            self.by_endpoint.entry(e).or_default().push(i);
        }
        self.servers.push(r);
    }

    /// Who `member` is.
    pub fn attribute(&self, member: &Member) -> Attribution<'_> {
        let by_id = self.by_id.get(&member.server).map(|i| &self.servers[*i]);
        let at_endpoint: Vec<&Recorded> = self
            .by_endpoint
            .get(&member.endpoint)
            .map(|v| v.iter().map(|i| &self.servers[*i]).collect())
            .unwrap_or_default();
        if at_endpoint.len() > 1 {
            return Attribution::Conflict(format!(
                "{} servers are recorded at {}",
                at_endpoint.len(),
                member.endpoint
            ));
        }
        match (by_id, at_endpoint.first()) {
            (Some(r), _) if r.endpoint.is_some_and(|e| e != member.endpoint) => {
                Attribution::Conflict(format!(
                    "the balancer reports {} at {}, but it is recorded at {}",
                    member.server,
                    member.endpoint,
                    r.endpoint.map_or("?".to_owned(), |e| e.to_string())
                ))
            }
            (Some(r), Some(other)) if other.server != r.server => Attribution::Conflict(format!(
                "the balancer reports {} at {}, where {} is recorded",
                member.server, member.endpoint, other.server
            )),
            (Some(r), _) => Attribution::Recorded(r),
            (None, Some(r)) => Attribution::Recorded(r),
            (None, None) => Attribution::Unknown,
        }
    }
}

/// Invariant 1: a server may be stopped or terminated only when a fresh
/// read of every balancer shows it detached and drained: absent, or not
/// active and with zero open connections. A member reported under the
/// server's id at another endpoint fails closed.
pub fn not_serving(servers: &[Subject], members: &[Member]) -> Result<(), Refusal> {
    let mut serving = Vec::new();
    for m in members {
        let Some(s) = servers.iter().find(|s| s.is(m)) else {
            continue;
        };
        if s.misplaced(m) {
            serving.push(format!(
                "{} is reported at {} but recorded at {}; the member cannot be attributed",
                m.server,
                m.endpoint,
                s.endpoint.map_or("?".to_owned(), |e| e.to_string())
            ));
            continue;
        }
        if m.carries_traffic() {
            serving.push(format!(
                "{}{} is {} with {} open connection(s)",
                s.server,
                if m.server == s.server {
                    String::new()
                } else {
                    format!(" (member {} at {})", m.server, m.endpoint)
                },
                match m.state {
                    MemberState::Active => "an active member",
                    MemberState::Draining => "draining",
                    MemberState::Disabled => "disabled",
                },
                m.connections
                    .map_or("an unknown number of".to_owned(), |c| c.to_string())
            ));
        }
    }
    if serving.is_empty() {
        Ok(())
    } else {
        refuse(
            Invariant::NoServingTermination,
            format!("still serving: {}", serving.join("; ")),
        )
    }
}

/// True when some of `servers` is still an active member (as opposed to
/// merely draining): waiting will not help.
pub fn any_active(servers: &[Subject], members: &[Member]) -> bool {
    members
        .iter()
        .any(|m| m.state == MemberState::Active && servers.iter().any(|s| s.is(m)))
}

/// Invariant 2: servers may leave the balancer only when their
/// replacements are attached, verified, baked and healthy in this fresh
/// read, and the healthy serving members *of this role* left behind stay
/// at or above the floor (members of other deployments or roles sharing
/// the balancer are not its capacity). Detaching members that are not
/// healthy never lowers capacity and is allowed; the last healthy members
/// never leave; a member that cannot be attributed refuses.
pub fn may_detach(
    detach: &[Subject],
    replacements: &[&Slot],
    members: &[Member],
    floor: usize,
    roster: &Roster,
    role: &RoleName,
) -> Result<(), Refusal> {
    let index = MemberIndex::new(members);
    for slot in replacements {
        let Some(server) = &slot.server else {
            return refuse(
                Invariant::CapacityFloor,
                format!("replacement slot {} has no server yet", slot.index),
            );
        };
        let member = index.of_slot(slot);
        let ready = slot.traffic == Traffic::Attached
            && slot.verified
            && slot.baked_at.is_some()
            && member.is_some_and(Member::is_serving_healthy);
        if !ready {
            let seen = member.map_or("not a member".to_owned(), |m| {
                format!("{:?}/{:?}", m.state, m.health)
            });
            return refuse(
                Invariant::CapacityFloor,
                format!(
                    "replacement {server} (slot {}) is not attached, verified, baked and healthy \
                     (attached: {}, verified: {}, baked: {}, balancer: {seen})",
                    slot.index,
                    slot.traffic == Traffic::Attached,
                    slot.verified,
                    slot.baked_at.is_some()
                ),
            );
        }
    }
    let mut healthy_before = 0;
    let mut healthy_after = 0;
    for m in members {
        if detach.iter().any(|s| s.misplaced(m)) {
            return refuse(
                Invariant::CapacityFloor,
                format!(
                    "member {} at {} cannot be attributed: its id is recorded elsewhere",
                    m.server, m.endpoint
                ),
            );
        }
        if !m.is_serving_healthy() {
            continue;
        }
        let ours = match roster.attribute(m) {
            Attribution::Recorded(r) => &r.role == role,
            Attribution::Unknown => false,
            Attribution::Conflict(why) => {
                return refuse(
                    Invariant::CapacityFloor,
                    format!("cannot count the floor: {why}"),
                )
            }
        };
        if !ours {
            continue;
        }
        healthy_before += 1;
        if !detach.iter().any(|s| s.is(m)) {
            healthy_after += 1;
        }
    }
    if healthy_after == healthy_before {
        return Ok(());
    }
    if healthy_after == 0 {
        return refuse(
            Invariant::CapacityFloor,
            format!(
                "detaching {} would leave no healthy member of {role} ({healthy_before} healthy now)",
                detach.len()
            ),
        );
    }
    if healthy_after < floor {
        return refuse(
            Invariant::CapacityFloor,
            format!(
                "detaching {} would leave {healthy_after} healthy member(s) of {role}, below the floor of {floor}",
                detach.len()
            ),
        );
    }
    Ok(())
}

/// Invariant 2 for an atomic switch, on a fresh read of the balancer: the
/// servers that are to take all the traffic are staged there (present and
/// not draining), pass the balancer's own checks, were smoke-tested and
/// baked; there are at least `floor` of them and at least one; and every
/// member about to leave can be attributed.
///
/// `interval` is the balancer's check interval, where it declares one:
/// health it last checked longer ago than that (its checks stopped) is no
/// evidence.
pub fn may_switch(
    incoming: &[&Slot],
    leaving: &[Subject],
    members: &[Member],
    floor: usize,
    interval: Option<std::time::Duration>,
) -> Result<(), Refusal> {
    let index = MemberIndex::new(members);
    for slot in incoming {
        let Some(server) = &slot.server else {
            return refuse(
                Invariant::CapacityFloor,
                format!("slot {} to switch to has no server yet", slot.index),
            );
        };
        let member = index.of_slot(slot);
        let ready = slot.verified
            && slot.baked_at.is_some()
            && member.is_some_and(|m| {
                m.health == MemberHealth::Healthy
                    && m.state != MemberState::Draining
                    && m.checked_recently(interval)
            });
        if !ready {
            let seen = member.map_or("not staged".to_owned(), |m| {
                format!(
                    "{:?}/{:?}{}",
                    m.state,
                    m.health,
                    m.checked_ago
                        .map(|a| format!(", checked {a:?} ago"))
                        .unwrap_or_default()
                )
            });
            return refuse(
                Invariant::CapacityFloor,
                format!(
                    "{server} (slot {}) is not staged, healthy, verified and baked \
                     (verified: {}, baked: {}, balancer: {seen})",
                    slot.index,
                    slot.verified,
                    slot.baked_at.is_some()
                ),
            );
        }
    }
    for m in members {
        if leaving.iter().any(|s| s.misplaced(m)) {
            return refuse(
                Invariant::CapacityFloor,
                format!(
                    "member {} at {} cannot be attributed: its id is recorded elsewhere",
                    m.server, m.endpoint
                ),
            );
        }
    }
    if incoming.is_empty() || incoming.len() < floor {
        return refuse(
            Invariant::CapacityFloor,
            format!(
                "switching to {} server(s) would leave fewer than the floor of {floor}",
                incoming.len()
            ),
        );
    }
    Ok(())
}

/// Whose a serving member is, for invariant 8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A recorded server of this role, running this release.
    Release(ReleaseLabel),
    /// A server of another deployment sharing the balancer (its labels
    /// say so): not this deployment's to judge.
    Foreign,
    /// Nobody can say: an unrecorded server of this deployment, another
    /// role's server, a stand-in id with an unknown endpoint.
    Unattributed(String),
}

/// Invariant 8: every serving member of this deployment runs the target
/// release, there is at least one, and no serving member is unaccounted
/// for. `owner` says whose a member is.
pub fn serving_release<F>(
    members: &[Member],
    target: &ReleaseLabel,
    owner: F,
) -> Result<usize, Refusal>
where
    F: Fn(&Member) -> Owner,
{
    let mut ours = 0;
    let mut wrong = Vec::new();
    for m in members.iter().filter(|m| m.state == MemberState::Active) {
        match owner(m) {
            Owner::Release(r) if &r == target => ours += 1,
            Owner::Release(r) => wrong.push(format!("{} runs {r}", m.server)),
            Owner::Foreign => {}
            Owner::Unattributed(why) => {
                wrong.push(format!("{} at {}: {why}", m.server, m.endpoint))
            }
        }
    }
    if !wrong.is_empty() {
        return Err(Refusal {
            invariant: Invariant::DoneMeansDone,
            detail: format!(
                "not every serving member runs {target}: {}",
                wrong.join("; ")
            ),
        });
    }
    if ours == 0 {
        return Err(Refusal {
            invariant: Invariant::DoneMeansDone,
            detail: "no member of this deployment serves".into(),
        });
    }
    Ok(ours)
}

/// Invariant 9: deleting `deleting` rollback pools out of `available`
/// must leave at least `keep` (or all of them, when there are fewer).
pub fn retention(available: usize, deleting: usize, keep: usize) -> Result<(), Refusal> {
    let left = available.saturating_sub(deleting);
    if left < keep.min(available) {
        return refuse(
            Invariant::Retention,
            format!(
                "deleting {deleting} of {available} rollback pool(s) would leave {left}, below keep = {keep}"
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
#[path = "guards_tests.rs"]
mod tests;
