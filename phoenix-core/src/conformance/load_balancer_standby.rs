//! [`standby`]: members that leave the traffic and stay under the
//! balancer's checks (see [`LoadBalancer::standby`]).

use crate::ports::{ErrorKind, LoadBalancer, MemberState};

use super::{find, wait_serving, LbFixture};

/// A balancer that declares `keeps_standby` (and a check interval): a
/// member moved to standby stays, takes no traffic (`Disabled` once its
/// open connections are done), and its health is fresh evidence (checked
/// within the interval); attaching it again makes it serve at once with
/// that health, no re-check; a detached standby leaves. A balancer that
/// keeps no standby answers `standby` with [`ErrorKind::Unsupported`].
/// Needs two healthy backends and a balancer with no members; leaves it
/// with none.
pub async fn standby(lb: &dyn LoadBalancer, f: &LbFixture) {
    let caps = lb.capabilities();
    if !caps.keeps_standby {
        let e = lb
            .standby(&[f.healthy[0].server.clone()], f.drain)
            .await
            .expect_err("a balancer that keeps no standby refuses to");
        assert!(
            matches!(e.kind, ErrorKind::Unsupported(_)),
            "refused as unsupported: {e}"
        );
        return;
    }
    let interval = caps
        .check_interval
        .expect("a balancer that keeps standby members says how often it checks them");
    assert!(
        f.healthy.len() >= 2,
        "the fixture needs two healthy backends"
    );
    let (a, b) = (&f.healthy[0], &f.healthy[1]);
    assert!(lb.members().await.unwrap().is_empty(), "starts empty");
    lb.attach(&[a.clone(), b.clone()]).await.unwrap();
    wait_serving(lb, f, &[a, b], "both serve").await;

    lb.standby(std::slice::from_ref(&a.server), f.drain)
        .await
        .unwrap();
    let m = lb.members().await.unwrap();
    let ma = find(&m, &a.server).expect("a standby stays a member");
    assert_ne!(
        ma.state,
        MemberState::Active,
        "a standby takes no new traffic: {m:?}"
    );
    assert!(
        find(&m, &b.server).is_some_and(|x| x.state == MemberState::Active),
        "the others serve on: {m:?}"
    );
    super::super::eventually(
        "the standby is checked, healthy, and takes nothing",
        f.drain + f.settle + interval,
        f.poll,
        || async {
            let m = lb.members().await.ok()?;
            find(&m, &a.server)
                .is_some_and(|x| x.is_checked_standby(interval) && !x.carries_traffic())
                .then_some(())
        },
    )
    .await;
    // Still checked a while later: its checks run on.
    tokio::time::sleep((interval * 2).min(f.settle)).await;
    let m = lb.members().await.unwrap();
    assert!(
        find(&m, &a.server).is_some_and(|x| x.is_checked_standby(interval)),
        "a standby stays under the balancer's checks: {m:?}"
    );

    lb.attach(std::slice::from_ref(a)).await.unwrap();
    let m = lb.members().await.unwrap();
    assert_eq!(
        m.iter().filter(|x| x.server == a.server).count(),
        1,
        "the same member, not a second: {m:?}"
    );
    let back = find(&m, &a.server).expect("still a member");
    assert_eq!(
        back.state,
        MemberState::Active,
        "attached again it takes traffic at once: {m:?}"
    );
    wait_serving(lb, f, &[a], "the standby serves again").await;

    // Moved to standby and attached again while its drain runs (a
    // switch undone at once): it serves, at once or, on a balancer that
    // drains to the end, after a retryable refusal; never a standby
    // after an attach that succeeded.
    lb.standby(std::slice::from_ref(&a.server), f.drain)
        .await
        .unwrap();
    super::super::eventually(
        "attached during its drain, the standby serves again",
        f.drain + f.settle,
        f.poll,
        || async {
            match lb.attach(std::slice::from_ref(a)).await {
                Ok(()) => {
                    let m = lb.members().await.ok()?;
                    let back = find(&m, &a.server)?;
                    assert_eq!(
                        back.state,
                        MemberState::Active,
                        "an attach that succeeded gives the standby traffic: {m:?}"
                    );
                    Some(())
                }
                Err(e) => {
                    assert!(e.is_retryable(), "refused only for now: {e}");
                    None
                }
            }
        },
    )
    .await;
    wait_serving(lb, f, &[a], "the standby serves again after its drain").await;

    lb.standby(std::slice::from_ref(&a.server), f.drain)
        .await
        .unwrap();
    lb.detach(&[a.server.clone(), b.server.clone()], f.drain)
        .await
        .unwrap();
    super::super::eventually("empty again", f.drain + f.settle, f.poll, || async {
        lb.members().await.ok()?.is_empty().then_some(())
    })
    .await;
}
