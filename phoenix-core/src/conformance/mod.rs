//! Conformance suites, one per port, written once and run against every
//! adapter and its real peer (in the style of `object_store`'s integration
//! tests). Enable the `conformance` feature in an adapter crate's
//! dev-dependencies and call the suite from a test:
//!
//! ```text
//! #[tokio::test]
//! async fn sqlite_conforms() {
//!     let store = SqliteStore::open_in_memory().await.unwrap();
//!     phoenix_core::conformance::state_store::run(&store, StoreFixture::real_clock()).await;
//! }
//! ```
//!
//! The suites panic with a message naming the broken expectation, as test
//! assertions do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod compute;
pub mod images;
pub mod load_balancer;
pub mod state_store;

use std::time::Duration;

/// Polls `f` every `every` until it returns `Some`, or panics after
/// `limit` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, every: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// A label value unique to one suite run, so runs against a shared peer
/// do not see each other's servers.
pub fn unique(prefix: &str) -> String {
    use rand::{Rng, SeedableRng};
    let n: u32 = rand::rngs::StdRng::from_os_rng().random();
    format!("{prefix}-{n:08x}")
}
