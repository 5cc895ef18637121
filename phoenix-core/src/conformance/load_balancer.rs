//! The `LoadBalancer` contract.

use std::time::Duration;

use crate::id::ServerId;
use crate::ports::{LoadBalancer, Member, MemberHealth, MemberState, Target};

/// What the suite needs from the balancer under test.
#[derive(Debug, Clone)]
pub struct LbFixture {
    /// At least three healthy backends (real servers the balancer's checks
    /// reach), not yet members.
    pub healthy: Vec<Target>,
    /// A backend that fails health checks, if the balancer checks health.
    pub unhealthy: Option<Target>,
    /// How long health changes may take to show.
    pub settle: Duration,
    /// Drain time to ask for.
    pub drain: Duration,
    /// How often to poll.
    pub poll: Duration,
}

fn find<'a>(members: &'a [Member], id: &ServerId) -> Option<&'a Member> {
    members.iter().find(|m| &m.server == id)
}

/// Runs every check against a balancer that starts with no members; it
/// ends with none.
pub async fn run(lb: &dyn LoadBalancer, f: &LbFixture) {
    assert!(
        f.healthy.len() >= 3,
        "the fixture needs three healthy backends"
    );
    let caps = lb.capabilities();
    assert!(caps.max_batch >= 1);
    assert!(lb.members().await.unwrap().is_empty(), "starts empty");
    let (a, b, c) = (&f.healthy[0], &f.healthy[1], &f.healthy[2]);

    lb.attach(&[a.clone(), b.clone()]).await.unwrap();
    lb.attach(std::slice::from_ref(a)).await.unwrap();
    let members = lb.members().await.unwrap();
    assert_eq!(
        members.len(),
        2,
        "attaching twice does not duplicate: {members:?}"
    );
    let ma = find(&members, &a.server).expect("a is a member");
    assert_eq!(ma.endpoint, a.endpoint);
    assert_eq!(ma.state, MemberState::Active);
    super::eventually("a and b are healthy", f.settle, f.poll, || async {
        let m = lb.members().await.ok()?;
        [&a.server, &b.server]
            .iter()
            .all(|id| find(&m, id).is_some_and(Member::is_serving_healthy))
            .then_some(())
    })
    .await;

    if let Some(bad) = &f.unhealthy {
        lb.attach(std::slice::from_ref(bad)).await.unwrap();
        super::eventually("the bad backend is unhealthy", f.settle, f.poll, || async {
            let m = lb.members().await.ok()?;
            (find(&m, &bad.server)?.health == MemberHealth::Unhealthy).then_some(())
        })
        .await;
        lb.detach(std::slice::from_ref(&bad.server), f.drain)
            .await
            .unwrap();
    }

    lb.detach(std::slice::from_ref(&a.server), f.drain)
        .await
        .unwrap();
    let m = lb.members().await.unwrap();
    if let Some(ma) = find(&m, &a.server) {
        assert_ne!(
            ma.state,
            MemberState::Active,
            "a detached member takes no new traffic"
        );
    }
    assert!(find(&m, &b.server).is_some_and(|m| m.state == MemberState::Active));
    super::eventually(
        "a is gone after draining",
        f.drain + f.settle,
        f.poll,
        || async {
            let m = lb.members().await.ok()?;
            find(&m, &a.server).is_none().then_some(())
        },
    )
    .await;
    lb.detach(std::slice::from_ref(&a.server), f.drain)
        .await
        .expect("detaching a non-member succeeds");

    lb.swap(
        std::slice::from_ref(c),
        std::slice::from_ref(&b.server),
        f.drain,
    )
    .await
    .unwrap();
    super::eventually(
        "the swap leaves only c",
        f.drain + f.settle,
        f.poll,
        || async {
            let m = lb.members().await.ok()?;
            let ok = m.len() == 1
                && find(&m, &c.server).is_some_and(|m| m.state == MemberState::Active)
                && f.unhealthy
                    .as_ref()
                    .is_none_or(|bad| find(&m, &bad.server).is_none());
            ok.then_some(())
        },
    )
    .await;
    lb.detach(std::slice::from_ref(&c.server), f.drain)
        .await
        .unwrap();
    super::eventually("empty again", f.drain + f.settle, f.poll, || async {
        lb.members().await.ok()?.is_empty().then_some(())
    })
    .await;
}
