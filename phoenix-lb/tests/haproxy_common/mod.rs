//! Helpers for the tests that run a real haproxy (`PHOENIX_HAPROXY`, set by
//! the test script; else `haproxy` on `PATH`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

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
