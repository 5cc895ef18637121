//! Draining: requests in flight finish, nothing new reaches a draining
//! member, and the drain deadline closes what is stuck.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{find, get, quick_lb, wait_gone, wait_healthy, Backend, Spec};
use phoenix_core::ports::{LoadBalancer, MemberState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const SETTLE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_finishes_while_its_member_drains() {
    let old = Backend::start("drain-old", Spec::release("old")).await;
    let new = Backend::start("drain-new", Spec::release("new")).await;
    let lb = quick_lb(Duration::from_millis(50)).start().await.unwrap();
    lb.attach(&[old.target()]).await.unwrap();
    wait_healthy(&lb, std::slice::from_ref(&old.id), SETTLE).await;

    // A request that takes 300 ms, through the only member.
    let addr = lb.local_addr();
    let slow = tokio::spawn(async move { get(addr, "/slow").await });
    common::eventually("the slow request is in the old member", SETTLE, || async {
        (old.hits() == 1).then_some(())
    })
    .await;

    lb.attach(&[new.target()]).await.unwrap();
    wait_healthy(&lb, std::slice::from_ref(&new.id), SETTLE).await;
    let drain = Duration::from_secs(5);
    let detached = Instant::now();
    lb.detach(std::slice::from_ref(&old.id), drain)
        .await
        .unwrap();
    let members = lb.members().await.unwrap();
    let draining = find(&members, &old.id).expect("still a member while a connection is open");
    assert_eq!(draining.state, MemberState::Draining);
    assert_eq!(draining.connections, Some(1));

    // New connections go to the new member only.
    for _ in 0..20 {
        let (status, release) = get(addr, "/").await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(release.as_deref(), Some("new"));
    }
    let old_stats = lb.stats().member(&old.id).cloned().unwrap();
    assert_eq!(
        old_stats.connections_total, 1,
        "no new connection reached the draining member"
    );
    assert_eq!(old.hits(), 1);

    let (status, release) = slow.await.unwrap().unwrap();
    assert_eq!(
        (status, release.as_deref()),
        (200, Some("old")),
        "the slow request completed"
    );
    wait_gone(&lb, &old.id, SETTLE).await;
    let took = detached.elapsed();
    assert!(
        took < drain,
        "removed once idle ({took:?}), not at the deadline"
    );
    let stats = lb.stats();
    assert_eq!(stats.forced_closes, 0);
    assert_eq!(stats.members.len(), 1);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_connection_is_closed_at_the_drain_deadline() {
    let stuck = Backend::start("drain-stuck", Spec::release("old")).await;
    let other = Backend::start("drain-other", Spec::release("new")).await;
    let lb = quick_lb(Duration::from_millis(50)).start().await.unwrap();
    lb.attach(&[stuck.target()]).await.unwrap();
    wait_healthy(&lb, std::slice::from_ref(&stuck.id), SETTLE).await;

    // A request the backend never answers (it sleeps 30 s).
    let mut client = TcpStream::connect(lb.local_addr()).await.unwrap();
    client
        .write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    common::eventually("the request hangs in the member", SETTLE, || async {
        (stuck.hits() == 1).then_some(())
    })
    .await;

    lb.attach(&[other.target()]).await.unwrap();
    let drain = Duration::from_millis(400);
    let detached = Instant::now();
    lb.detach(std::slice::from_ref(&stuck.id), drain)
        .await
        .unwrap();

    // The balancer closes the client's connection at the deadline.
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
        .await
        .expect("the connection is closed within the drain deadline plus slack");
    let closed_after = detached.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without an answer: {read:?}"
    );
    assert!(closed_after >= drain, "closed early: {closed_after:?}");
    assert!(
        closed_after < drain + Duration::from_secs(1),
        "closed late: {closed_after:?}"
    );

    wait_gone(&lb, &stuck.id, SETTLE).await;
    let stats = lb.stats();
    assert_eq!(stats.forced_closes, 1);
    assert!(stats.member(&stuck.id).is_none());
    assert!(stats.member(&other.id).is_some());
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattaching_a_draining_member_makes_it_active_again() {
    let a = Backend::start("drain-a", Spec::release("a")).await;
    let lb = quick_lb(Duration::from_millis(50)).start().await.unwrap();
    lb.attach(&[a.target()]).await.unwrap();
    wait_healthy(&lb, std::slice::from_ref(&a.id), SETTLE).await;

    // Hold a connection open so that the drain lasts.
    let mut held = TcpStream::connect(lb.local_addr()).await.unwrap();
    held.write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    common::eventually("held", SETTLE, || async { (a.hits() == 1).then_some(()) }).await;
    lb.detach(std::slice::from_ref(&a.id), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        find(&lb.members().await.unwrap(), &a.id).unwrap().state,
        MemberState::Draining
    );

    lb.attach(&[a.target()]).await.unwrap();
    let members = lb.members().await.unwrap();
    let m = find(&members, &a.id).unwrap();
    assert_eq!(m.state, MemberState::Active);
    assert!(
        m.is_serving_healthy(),
        "health is kept across the re-attach"
    );
    let (status, release) = get(lb.local_addr(), "/").await.unwrap();
    assert_eq!((status, release.as_deref()), (200, Some("a")));

    // A zero drain closes at once what is still open.
    lb.detach(std::slice::from_ref(&a.id), Duration::ZERO)
        .await
        .unwrap();
    wait_gone(&lb, &a.id, SETTLE).await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), held.read(&mut buf))
        .await
        .expect("closed");
    assert!(matches!(read, Ok(0) | Err(_)));
    lb.shutdown().await;
}
