//! Tests of the guards, each on hand-made reads.

use std::net::SocketAddr;

use super::*;
use crate::id::{OperationId, PoolId};
use crate::ports::MemberHealth;
use crate::time::{Clock, TokioClock};

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

/// A member whose endpoint is derived from its name, as if each server
/// listened on its own port.
fn member(id: &str, state: MemberState, health: MemberHealth, conns: Option<u64>) -> Member {
    Member {
        server: ServerId::new(id).unwrap(),
        endpoint: at(port_of(id)),
        health,
        state,
        connections: conns,
        checked_ago: None,
    }
}

fn port_of(id: &str) -> u16 {
    1000 + id.bytes().map(u16::from).sum::<u16>()
}

fn sid(s: &str) -> ServerId {
    ServerId::new(s).unwrap()
}

fn subject(s: &str) -> Subject {
    Subject {
        server: sid(s),
        endpoint: Some(at(port_of(s))),
    }
}

fn ready_slot(server: &str) -> Slot {
    let mut s = Slot::pending(
        &OperationId::new("op").unwrap(),
        &PoolId::new("p").unwrap(),
        0,
        None,
    );
    s.server = Some(sid(server));
    s.endpoint = Some(at(port_of(server)));
    s.traffic = Traffic::Attached;
    s.verified = true;
    s.baked_at = Some(TokioClock::fixed().now());
    s
}

fn web() -> RoleName {
    RoleName::new("web").unwrap()
}

fn roster(servers: &[&str], role: &str) -> Roster {
    let mut r = Roster::default();
    for s in servers {
        r.add(Recorded {
            server: sid(s),
            endpoint: Some(at(port_of(s))),
            pool: PoolId::new("p").unwrap(),
            role: RoleName::new(role).unwrap(),
            release: ReleaseLabel::new("v1").unwrap(),
        });
    }
    r
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
        not_serving(&[subject("a")], &members)
            .unwrap_err()
            .invariant,
        Invariant::NoServingTermination
    );
    assert!(not_serving(&[subject("b")], &members).is_err());
    assert!(
        not_serving(&[subject("d")], &members).is_err(),
        "unknown count refuses"
    );
    assert!(not_serving(&[subject("c")], &members).is_ok());
    assert!(not_serving(&[subject("z")], &members).is_ok());
    // Even an unhealthy active member may get traffic.
    let sick = vec![member("a", Active, Unhealthy, Some(0))];
    assert!(not_serving(&[subject("a")], &sick).is_err());
}

#[test]
fn invariant_1_matches_members_by_endpoint_and_refuses_what_it_cannot_attribute() {
    // A stand-in id at a's endpoint is a's member.
    let mut stand_in = member("a", Active, Healthy, Some(2));
    stand_in.server = sid("lb-node-7");
    assert!(not_serving(&[subject("a")], &[stand_in]).is_err());
    // A stale id: the balancer names an old server at a's address.
    let mut stale = member("a", Active, Healthy, Some(2));
    stale.server = sid("old-server");
    assert!(not_serving(&[subject("a")], &[stale]).is_err());
    // a's id reported at another endpoint: not trusted either way.
    let mut elsewhere = member("a", Disabled, Healthy, Some(0));
    elsewhere.endpoint = at(9);
    let err = not_serving(&[subject("a")], &[elsewhere]).unwrap_err();
    assert!(err.detail.contains("cannot be attributed"), "{err:?}");
}

#[tokio::test]
async fn invariant_2_requires_ready_replacements_and_the_floor() {
    let members = vec![
        member("old1", Active, Healthy, None),
        member("old2", Active, Healthy, None),
        member("new1", Active, Healthy, None),
    ];
    let r = roster(&["old1", "old2", "new1"], "web");
    let new1 = ready_slot("new1");
    assert!(may_detach(&[subject("old1")], &[&new1], &members, 2, &r, &web()).is_ok());
    assert_eq!(
        may_detach(
            &[subject("old1"), subject("old2")],
            &[&new1],
            &members,
            2,
            &r,
            &web()
        )
        .unwrap_err()
        .invariant,
        Invariant::CapacityFloor
    );
    let mut unbaked = ready_slot("new1");
    unbaked.baked_at = None;
    assert!(may_detach(&[subject("old1")], &[&unbaked], &members, 0, &r, &web()).is_err());
    let mut unverified = ready_slot("new1");
    unverified.verified = false;
    assert!(may_detach(&[subject("old1")], &[&unverified], &members, 0, &r, &web()).is_err());
    let sick = vec![
        member("old1", Active, Healthy, None),
        member("new1", Active, Unhealthy, None),
    ];
    assert!(may_detach(&[subject("old1")], &[&new1], &sick, 0, &r, &web()).is_err());
    // The last healthy member never leaves, even with a zero floor.
    assert!(may_detach(
        &[subject("old1"), subject("old2"), subject("new1")],
        &[],
        &members,
        0,
        &r,
        &web()
    )
    .is_err());
    // Removing an unhealthy member lowers nothing.
    let dead = vec![
        member("live", Active, Healthy, None),
        member("dead", Active, Unhealthy, None),
    ];
    let rd = roster(&["live", "dead"], "web");
    assert!(may_detach(&[subject("dead")], &[], &dead, 1, &rd, &web()).is_ok());
}

#[test]
fn invariant_2_counts_only_the_roles_own_members() {
    // Two healthy members of another deployment share the balancer:
    // they are not web's capacity.
    let members = vec![
        member("web1", Active, Healthy, None),
        member("web2", Active, Healthy, None),
        member("theirs1", Active, Healthy, None),
        member("theirs2", Active, Healthy, None),
    ];
    let r = roster(&["web1", "web2"], "web");
    let err = may_detach(&[subject("web1")], &[], &members, 2, &r, &web()).unwrap_err();
    assert_eq!(err.invariant, Invariant::CapacityFloor, "{err:?}");
    // Nor is another role's.
    let mut r = roster(&["web1", "web2"], "web");
    for s in ["theirs1", "theirs2"] {
        r.add(Recorded {
            server: sid(s),
            endpoint: Some(at(port_of(s))),
            pool: PoolId::new("q").unwrap(),
            role: RoleName::new("api").unwrap(),
            release: ReleaseLabel::new("v1").unwrap(),
        });
    }
    assert!(may_detach(&[subject("web1")], &[], &members, 2, &r, &web()).is_err());
    // A stand-in id at web2's endpoint still counts as web2.
    let mut members = members;
    members[1].server = sid("lb-node-2");
    let r = roster(&["web1", "web2"], "web");
    assert!(may_detach(&[subject("web1")], &[], &members, 1, &r, &web()).is_ok());
}

#[test]
fn invariant_8_every_serving_member_runs_the_target() {
    let v2 = ReleaseLabel::new("v2").unwrap();
    let members = vec![
        member("a", Active, Healthy, None),
        member("b", Draining, Healthy, Some(1)),
    ];
    let ok = serving_release(&members, &v2, |_| Owner::Release(v2.clone()));
    assert_eq!(ok.unwrap(), 1);
    let wrong = serving_release(&members, &v2, |_| {
        Owner::Release(ReleaseLabel::new("v1").unwrap())
    });
    assert_eq!(wrong.unwrap_err().invariant, Invariant::DoneMeansDone);
    assert!(serving_release(&members, &v2, |_| Owner::Unattributed("?".into())).is_err());
    assert!(serving_release(&[], &v2, |_| Owner::Release(v2.clone())).is_err());
    // Another deployment's member neither counts nor blocks.
    let shared = vec![
        member("a", Active, Healthy, None),
        member("theirs", Active, Healthy, None),
    ];
    let owner = |m: &Member| {
        if m.server == sid("theirs") {
            Owner::Foreign
        } else {
            Owner::Release(v2.clone())
        }
    };
    assert_eq!(serving_release(&shared, &v2, owner).unwrap(), 1);
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
