//! Helpers for the tests that run a real haproxy (`PHOENIX_HAPROXY`, set by
//! the test script; else `haproxy` on `PATH`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use phoenix_core::id::ServerId;
use phoenix_core::ports::{LoadBalancer, Member};
use phoenix_lb::haproxy::{LocalHaproxy, LocalHaproxyBuilder, Mode};

/// A haproxy of its own (killed when dropped, even if the test fails).
pub(crate) async fn haproxy(mode: Mode) -> LocalHaproxy {
    start(LocalHaproxy::builder().mode(mode)).await
}

pub(crate) async fn start(builder: LocalHaproxyBuilder) -> LocalHaproxy {
    match builder.start().await {
        Ok(h) => h,
        Err(e) => panic!(
            "starting haproxy failed (run scripts/test, or set PHOENIX_HAPROXY): {}",
            phoenix_core::error_chain(&e)
        ),
    }
}

pub(crate) fn find<'a>(members: &'a [Member], id: &ServerId) -> Option<&'a Member> {
    members.iter().find(|m| &m.server == id)
}

/// Polls `f` every 5 ms until it returns `Some`, or panics after `limit`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, limit: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    phoenix_core::conformance::eventually(what, limit, Duration::from_millis(5), f).await
}

/// Waits until every one of `ids` is an active, healthy member.
pub(crate) async fn wait_healthy(lb: &dyn LoadBalancer, ids: &[ServerId], limit: Duration) {
    eventually("members healthy", limit, || async {
        let members = lb.members().await.ok()?;
        ids.iter()
            .all(|id| find(&members, id).is_some_and(Member::is_serving_healthy))
            .then_some(())
    })
    .await;
}

/// Median and maximum.
pub(crate) fn median_max(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (
        times.get(times.len() / 2).copied().unwrap_or_default(),
        times.last().copied().unwrap_or_default(),
    )
}
