//! The safety guards, as pure functions over fresh reads, so that each can
//! be tested on its own and each call site states which invariant it
//! protects. A guard that is not sure refuses.

use std::collections::{BTreeMap, BTreeSet};

use crate::events::Invariant;
use crate::id::{ReleaseLabel, ServerId};
use crate::model::{Slot, Traffic};
use crate::ports::{Member, MemberState};

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

/// Invariant 1: a server may be stopped or terminated only when a fresh
/// balancer read shows it detached and drained: absent, or not active and
/// with zero open connections.
pub fn not_serving(servers: &[ServerId], members: &[Member]) -> Result<(), Refusal> {
    let wanted: BTreeSet<&ServerId> = servers.iter().collect();
    let serving: Vec<String> = members
        .iter()
        .filter(|m| wanted.contains(&m.server) && m.carries_traffic())
        .map(|m| {
            format!(
                "{} is {} with {} open connection(s)",
                m.server,
                match m.state {
                    MemberState::Active => "an active member",
                    MemberState::Draining => "draining",
                    MemberState::Disabled => "disabled",
                },
                m.connections
                    .map_or("an unknown number of".to_owned(), |c| c.to_string())
            )
        })
        .collect();
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
pub fn any_active(servers: &[ServerId], members: &[Member]) -> bool {
    let wanted: BTreeSet<&ServerId> = servers.iter().collect();
    members
        .iter()
        .any(|m| wanted.contains(&m.server) && m.state == MemberState::Active)
}

/// Invariant 2: servers may leave the balancer only when their
/// replacements are attached, verified, baked and healthy in this fresh
/// read, and the healthy serving members left behind stay at or above
/// the floor. Detaching members that are not healthy never lowers
/// capacity and is allowed; the last healthy members never leave.
pub fn may_detach(
    detach: &[ServerId],
    replacements: &[&Slot],
    members: &[Member],
    floor: usize,
) -> Result<(), Refusal> {
    let by_server: BTreeMap<&ServerId, &Member> = members.iter().map(|m| (&m.server, m)).collect();
    for slot in replacements {
        let Some(server) = &slot.server else {
            return refuse(
                Invariant::CapacityFloor,
                format!("replacement slot {} has no server yet", slot.index),
            );
        };
        let ready = slot.traffic == Traffic::Attached
            && slot.verified
            && slot.baked_at.is_some()
            && by_server
                .get(server)
                .is_some_and(|m| m.is_serving_healthy());
        if !ready {
            let seen = by_server
                .get(server)
                .map_or("not a member".to_owned(), |m| {
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
    let leaving: BTreeSet<&ServerId> = detach.iter().collect();
    let healthy_before = members.iter().filter(|m| m.is_serving_healthy()).count();
    let healthy_after = members
        .iter()
        .filter(|m| m.is_serving_healthy() && !leaving.contains(&m.server))
        .count();
    if healthy_after == healthy_before {
        return Ok(());
    }
    if healthy_after == 0 {
        return refuse(
            Invariant::CapacityFloor,
            format!(
                "detaching {} would leave no healthy member ({healthy_before} healthy now)",
                detach.len()
            ),
        );
    }
    if healthy_after < floor {
        return refuse(
            Invariant::CapacityFloor,
            format!(
                "detaching {} would leave {healthy_after} healthy member(s), below the floor of {floor}",
                detach.len()
            ),
        );
    }
    Ok(())
}

/// Invariant 8: every serving member runs the target release, and there
/// is at least one. `release_of` maps a server to the release of the
/// recorded pool that owns it.
pub fn serving_release<F>(
    members: &[Member],
    target: &ReleaseLabel,
    release_of: F,
) -> Result<usize, Refusal>
where
    F: Fn(&ServerId) -> Option<ReleaseLabel>,
{
    let serving: Vec<&Member> = members
        .iter()
        .filter(|m| m.state == MemberState::Active)
        .collect();
    if serving.is_empty() {
        return Err(Refusal {
            invariant: Invariant::DoneMeansDone,
            detail: "no member serves".into(),
        });
    }
    let wrong: Vec<String> = serving
        .iter()
        .filter_map(|m| match release_of(&m.server) {
            Some(r) if &r == target => None,
            Some(r) => Some(format!("{} runs {r}", m.server)),
            None => Some(format!("{} belongs to no recorded pool", m.server)),
        })
        .collect();
    if wrong.is_empty() {
        Ok(serving.len())
    } else {
        Err(Refusal {
            invariant: Invariant::DoneMeansDone,
            detail: format!(
                "not every serving member runs {target}: {}",
                wrong.join("; ")
            ),
        })
    }
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
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::id::{OperationId, PoolId};
    use crate::ports::MemberHealth;
    use crate::time::{Clock, TokioClock};

    fn member(id: &str, state: MemberState, health: MemberHealth, conns: Option<u64>) -> Member {
        Member {
            server: ServerId::new(id).unwrap(),
            endpoint: SocketAddr::from(([127, 0, 0, 1], 80)),
            health,
            state,
            connections: conns,
        }
    }

    fn sid(s: &str) -> ServerId {
        ServerId::new(s).unwrap()
    }

    fn ready_slot(server: &str) -> Slot {
        let mut s = Slot::pending(
            &OperationId::new("op").unwrap(),
            &PoolId::new("p").unwrap(),
            0,
            None,
        );
        s.server = Some(sid(server));
        s.traffic = Traffic::Attached;
        s.verified = true;
        s.baked_at = Some(TokioClock::fixed().now());
        s
    }

    use MemberHealth::*;
    use MemberState::*;

    #[test]
    fn invariant_1_refuses_serving_and_draining_servers() {
        let members = vec![
            member("a", Active, Healthy, Some(0)),
            member("b", Draining, Healthy, Some(3)),
            member("c", Disabled, Healthy, Some(0)),
            member("d", Draining, Healthy, None),
        ];
        assert_eq!(
            not_serving(&[sid("a")], &members).unwrap_err().invariant,
            Invariant::NoServingTermination
        );
        assert!(not_serving(&[sid("b")], &members).is_err());
        assert!(
            not_serving(&[sid("d")], &members).is_err(),
            "unknown count refuses"
        );
        assert!(not_serving(&[sid("c")], &members).is_ok());
        assert!(not_serving(&[sid("z")], &members).is_ok());
        // Even an unhealthy active member may get traffic.
        let sick = vec![member("a", Active, Unhealthy, Some(0))];
        assert!(not_serving(&[sid("a")], &sick).is_err());
    }

    #[tokio::test]
    async fn invariant_2_requires_ready_replacements_and_the_floor() {
        let members = vec![
            member("old1", Active, Healthy, None),
            member("old2", Active, Healthy, None),
            member("new1", Active, Healthy, None),
        ];
        let new1 = ready_slot("new1");
        assert!(may_detach(&[sid("old1")], &[&new1], &members, 2).is_ok());
        assert_eq!(
            may_detach(&[sid("old1"), sid("old2")], &[&new1], &members, 2)
                .unwrap_err()
                .invariant,
            Invariant::CapacityFloor
        );
        let mut unbaked = ready_slot("new1");
        unbaked.baked_at = None;
        assert!(may_detach(&[sid("old1")], &[&unbaked], &members, 0).is_err());
        let mut unverified = ready_slot("new1");
        unverified.verified = false;
        assert!(may_detach(&[sid("old1")], &[&unverified], &members, 0).is_err());
        let sick = vec![
            member("old1", Active, Healthy, None),
            member("new1", Active, Unhealthy, None),
        ];
        assert!(may_detach(&[sid("old1")], &[&new1], &sick, 0).is_err());
        // The last healthy member never leaves, even with a zero floor.
        assert!(may_detach(&[sid("old1"), sid("old2"), sid("new1")], &[], &members, 0).is_err());
        // Removing an unhealthy member lowers nothing.
        let dead = vec![
            member("live", Active, Healthy, None),
            member("dead", Active, Unhealthy, None),
        ];
        assert!(may_detach(&[sid("dead")], &[], &dead, 1).is_ok());
    }

    #[test]
    fn invariant_8_every_serving_member_runs_the_target() {
        let v2 = ReleaseLabel::new("v2").unwrap();
        let members = vec![
            member("a", Active, Healthy, None),
            member("b", Draining, Healthy, Some(1)),
        ];
        let ok = serving_release(&members, &v2, |_| Some(v2.clone()));
        assert_eq!(ok.unwrap(), 1);
        let wrong = serving_release(&members, &v2, |_| ReleaseLabel::new("v1").ok());
        assert_eq!(wrong.unwrap_err().invariant, Invariant::DoneMeansDone);
        assert!(serving_release(&members, &v2, |_| None).is_err());
        assert!(serving_release(&[], &v2, |_| Some(v2.clone())).is_err());
    }

    #[test]
    fn invariant_9_retention() {
        assert!(retention(3, 2, 1).is_ok());
        assert_eq!(
            retention(3, 3, 1).unwrap_err().invariant,
            Invariant::Retention
        );
        assert!(retention(1, 1, 2).is_err());
        assert!(retention(0, 0, 2).is_ok());
    }
}
