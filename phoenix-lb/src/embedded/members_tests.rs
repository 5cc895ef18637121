//! Tests of the member set's changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn target(id: &str, port: u16) -> Target {
    Target {
        server: id.parse().unwrap(),
        endpoint: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn id(s: &str) -> ServerId {
    s.parse().unwrap()
}

const DRAIN: Duration = Duration::from_secs(5);

#[test]
fn attach_is_idempotent_and_refuses_a_moved_endpoint() {
    let root = CancellationToken::new();
    let now = Instant::now();
    let c = MemberSet::default()
        .change(
            &[target("a", 1), target("b", 2), target("a", 1)],
            Join::Active,
            &[],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap();
    assert_eq!(c.set.slots.len(), 2);
    assert_eq!(c.started.len(), 2);
    let again = c
        .set
        .change(
            &[target("a", 1)],
            Join::Active,
            &[],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap();
    assert!(again.started.is_empty());
    assert_eq!(again.set.slots.len(), 2);
    let err = c
        .set
        .change(
            &[target("a", 9)],
            Join::Active,
            &[],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap_err();
    assert_eq!(err.requested.port(), 9);
    assert_eq!(err.current.port(), 1);
}

#[test]
fn detach_drains_and_reattach_reactivates_the_same_entry() {
    let root = CancellationToken::new();
    let now = Instant::now();
    let set = MemberSet::default()
        .change(
            &[target("a", 1), target("b", 2)],
            Join::Active,
            &[],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap()
        .set;
    let d = set
        .change(
            &[],
            Join::Active,
            &[id("a"), id("zzz")],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap();
    assert_eq!(d.draining.len(), 1, "a non-member is ignored");
    let (entry, token, deadline) = &d.draining[0];
    assert_eq!(entry.server, id("a"));
    assert_eq!(*deadline, now + DRAIN);
    assert_eq!(d.accepting.len(), 1);
    assert!(!d.accepting[0].1, "a draining member stops accepting");
    assert!(!d.set.get(&id("a")).unwrap().is_active());

    let r = d
        .set
        .change(
            &[target("a", 1)],
            Join::Active,
            &[],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap();
    assert!(!token.is_cancelled(), "only once stored");
    assert_eq!(r.stop_drains.len(), 1);
    r.stop_drains[0].cancel();
    assert!(token.is_cancelled(), "re-attaching stops that drain");
    assert!(r.started.is_empty(), "the same entry comes back");
    assert!(Arc::ptr_eq(&r.set.get(&id("a")).unwrap().entry, entry));
    assert!(r.set.get(&id("a")).unwrap().is_active());
    assert_eq!(r.accepting.len(), 1);
    assert!(r.accepting[0].1);
}

#[test]
fn detaching_again_only_shortens_a_drain() {
    let root = CancellationToken::new();
    let now = Instant::now();
    let set = MemberSet::default()
        .change(
            &[target("a", 1)],
            Join::Active,
            &[],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap()
        .set;
    let d = set
        .change(
            &[],
            Join::Active,
            &[id("a")],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap();
    let longer = d
        .set
        .change(
            &[],
            Join::Active,
            &[id("a")],
            Leave::Detach,
            DRAIN * 2,
            now,
            &root,
        )
        .unwrap();
    assert!(longer.draining.is_empty());
    assert!(longer.stop_drains.is_empty());
    let shorter = d
        .set
        .change(
            &[],
            Join::Active,
            &[id("a")],
            Leave::Detach,
            Duration::ZERO,
            now,
            &root,
        )
        .unwrap();
    assert_eq!(shorter.draining.len(), 1);
    assert_eq!(shorter.stop_drains.len(), 1);
    shorter.stop_drains[0].cancel();
    assert!(
        d.draining[0].1.is_cancelled(),
        "the longer drain is replaced"
    );
    assert_eq!(shorter.draining[0].2, now);
}

#[test]
fn a_refused_change_leaves_no_trace() {
    let root = CancellationToken::new();
    let now = Instant::now();
    let set = MemberSet::default()
        .change(
            &[target("a", 1), target("b", 2)],
            Join::Active,
            &[],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap()
        .set;
    let d = set
        .change(
            &[],
            Join::Active,
            &[id("a")],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap();
    let err = d
        .set
        .change(
            &[target("a", 1), target("b", 9)],
            Join::Active,
            &[],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap_err();
    assert_eq!(err.server, id("b"));
    assert!(!d.draining[0].1.is_cancelled(), "a's drain goes on");
    assert!(!d.set.get(&id("a")).unwrap().is_active());
}

#[test]
fn a_swap_is_one_snapshot() {
    let root = CancellationToken::new();
    let now = Instant::now();
    let set = MemberSet::default()
        .change(
            &[target("blue", 1)],
            Join::Active,
            &[],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap()
        .set;
    let s = set
        .change(
            &[target("green", 2)],
            Join::Active,
            &[id("blue")],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap();
    assert_eq!(s.set.slots.len(), 2);
    assert!(s.set.get(&id("green")).unwrap().is_active());
    assert!(!s.set.get(&id("blue")).unwrap().is_active());
    // The same server on both sides ends up detached, like attach then detach.
    let both = set
        .change(
            &[target("c", 3)],
            Join::Active,
            &[id("c")],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap();
    let c = both.set.get(&id("c")).unwrap();
    assert!(!c.is_active());
    assert!(!c.entry.accepting.load(Ordering::SeqCst));
}

#[test]
fn removal_matches_the_entry_not_the_name() {
    let root = CancellationToken::new();
    let now = Instant::now();
    let set = MemberSet::default()
        .change(
            &[target("a", 1)],
            Join::Active,
            &[],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap()
        .set;
    let old = set.get(&id("a")).unwrap().entry.clone();
    let stranger = Arc::new(MemberEntry::new(&target("a", 1), &root));
    assert!(set.without(&stranger).is_none());
    assert!(set.without(&old).unwrap().slots.is_empty());
}

#[test]
fn standby_members_stay_take_nothing_and_come_back_as_the_same_entry() {
    let root = CancellationToken::new();
    let now = Instant::now();
    let set = MemberSet::default()
        .change(
            &[target("a", 1)],
            Join::Active,
            &[],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap()
        .set;
    let entry = set.get(&id("a")).unwrap().entry.clone();
    let s = set
        .change(
            &[],
            Join::Active,
            &[id("a")],
            Leave::Standby,
            DRAIN,
            now,
            &root,
        )
        .unwrap();
    assert!(s.draining.is_empty(), "a standby does not leave");
    assert_eq!(s.closing.len(), 1, "what is open closes at the deadline");
    assert_eq!(s.closing[0].2, now + DRAIN);
    assert_eq!(s.accepting.len(), 1);
    assert!(Arc::ptr_eq(&s.accepting[0].0, &entry) && !s.accepting[0].1);
    let m = s.set.get(&id("a")).unwrap().member();
    assert_eq!(m.state, MemberState::Disabled);

    let back = s
        .set
        .change(
            &[target("a", 1)],
            Join::Active,
            &[],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap();
    assert!(
        back.started.is_empty(),
        "the same entry, its checks and health kept"
    );
    assert!(Arc::ptr_eq(&back.set.get(&id("a")).unwrap().entry, &entry));
    assert!(back.set.get(&id("a")).unwrap().is_active());
    assert_eq!(back.stop_drains.len(), 1, "its closing is cancelled");

    let gone = s
        .set
        .change(
            &[],
            Join::Active,
            &[id("a")],
            Leave::Detach,
            Duration::ZERO,
            now,
            &root,
        )
        .unwrap();
    assert_eq!(gone.draining.len(), 1, "a detached standby drains out");
    assert_eq!(gone.draining[0].2, now);
}

#[test]
fn staging_adds_standby_members_and_leaves_serving_ones_serving() {
    let root = CancellationToken::new();
    let now = Instant::now();
    let set = MemberSet::default()
        .change(
            &[target("a", 1)],
            Join::Active,
            &[],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap()
        .set;
    let c = set
        .change(
            &[target("a", 1), target("b", 2)],
            Join::Standby,
            &[],
            Leave::Detach,
            DRAIN,
            now,
            &root,
        )
        .unwrap();
    assert_eq!(c.started.len(), 1, "b is new and checked from now");
    assert!(c.set.get(&id("a")).unwrap().is_active(), "a still serves");
    assert!(!c.set.get(&id("b")).unwrap().is_active());
    assert!(!c.started[0].accepting.load(Ordering::SeqCst));
    assert_eq!(
        c.set.get(&id("b")).unwrap().member().state,
        MemberState::Disabled
    );
}
