//! [`staging`]: the half of an atomic switch a balancer that stages does
//! before the switch (see [`LoadBalancer::stage`]).

use crate::ports::{ErrorKind, LoadBalancer, Member, MemberHealth, MemberState};

use super::{find, wait_serving, LbFixture};

/// A balancer that declares `stages`: staged targets are members that take
/// no traffic (`Disabled`) and pass its checks, staging is idempotent and
/// leaves a serving member serving, and a swap to staged members makes
/// them serve at once, healthy (their checks carry over), while the old
/// ones leave. A balancer that does not stage answers `stage` with
/// [`ErrorKind::Unsupported`]. Needs three healthy backends and a
/// balancer with no members; leaves it with none.
pub async fn staging(lb: &dyn LoadBalancer, f: &LbFixture) {
    let caps = lb.capabilities();
    if !caps.stages {
        let e = lb
            .stage(&f.healthy[..1])
            .await
            .expect_err("a balancer that does not stage refuses to");
        assert!(
            matches!(e.kind, ErrorKind::Unsupported(_)),
            "refused as unsupported: {e}"
        );
        return;
    }
    assert!(
        caps.atomic_swap,
        "a balancer that stages switches atomically"
    );
    assert!(
        f.healthy.len() >= 3,
        "the fixture needs three healthy backends"
    );
    let (a, b, c) = (&f.healthy[0], &f.healthy[1], &f.healthy[2]);
    assert!(lb.members().await.unwrap().is_empty(), "starts empty");
    lb.attach(std::slice::from_ref(a)).await.unwrap();
    wait_serving(lb, f, &[a], "a serves").await;

    lb.stage(&[b.clone(), c.clone()]).await.unwrap();
    lb.stage(&[b.clone(), a.clone()]).await.unwrap();
    let staged = |m: &[Member], id| {
        find(m, id).is_some_and(|m| m.state == MemberState::Disabled && !m.carries_traffic())
    };
    let m = lb.members().await.unwrap();
    assert!(
        staged(&m, &b.server) && staged(&m, &c.server),
        "staged members take no traffic: {m:?}"
    );
    assert_eq!(
        m.iter().filter(|x| x.server == b.server).count(),
        1,
        "staging twice does not duplicate: {m:?}"
    );
    assert!(
        find(&m, &a.server).is_some_and(|x| x.state == MemberState::Active),
        "staging a serving member leaves it serving: {m:?}"
    );
    super::super::eventually(
        "b and c pass the checks while staged",
        f.settle,
        f.poll,
        || async {
            let m = lb.members().await.ok()?;
            [&b.server, &c.server]
                .iter()
                .all(|id| {
                    find(&m, id).is_some_and(|x| {
                        x.health == MemberHealth::Healthy && x.state == MemberState::Disabled
                    })
                })
                .then_some(())
        },
    )
    .await;

    lb.swap(
        &[b.clone(), c.clone()],
        std::slice::from_ref(&a.server),
        f.drain,
    )
    .await
    .unwrap();
    let m = lb.members().await.unwrap();
    for t in [b, c] {
        assert!(
            find(&m, &t.server).is_some_and(Member::is_serving_healthy),
            "{} serves healthy right after the switch: {m:?}",
            t.server
        );
    }
    assert!(
        find(&m, &a.server).is_none_or(|x| x.state != MemberState::Active),
        "a takes no new traffic after the switch: {m:?}"
    );
    lb.detach(&[b.server.clone(), c.server.clone()], f.drain)
        .await
        .unwrap();
    super::empty_again(lb, f).await;
}
