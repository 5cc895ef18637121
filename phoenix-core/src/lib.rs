//! # phoenix-core
//!
//! The core of Phoenix, a library for running production on the **Phoenix
//! Server pattern**: servers are never patched in place. A versioned image
//! is baked and certified, a fresh pool of servers is created from it with
//! its configuration injected at boot, smoke-tested, swapped in behind the
//! load balancer, and old pools are kept for a one-step rollback until
//! reaped.
//!
//! This crate holds the domain model ([`model`]), the ports that adapters
//! implement ([`ports`]), plans ([`plan`]) built by planners ([`ops`]), the
//! [`executor`] that applies them under the safety invariants of the
//! design, typed [`events`], and with the `sim` feature a deterministic
//! simulated cloud (module `sim`) that runs under tokio's paused clock.
//!
//! Every operation is *plan, then apply*: a [`plan::Plan`] prints as a dry
//! run, serialises, and is checked before any API call; the executor
//! journals every step so that a crashed orchestrator resumes and
//! converges.
//!
//! ```
//! # #[cfg(feature = "sim")]
//! # {
//! use phoenix_core::sim::{SimCloud, SimConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
//! // A simulated cloud with one deployment "shop" (role "web", 3 servers)
//! // and two certified releases, v1 and v2.
//! let cloud = SimCloud::new(SimConfig::default());
//! let phoenix = cloud.phoenix().build().unwrap();
//! let (shop, web) = cloud.demo_deployment(&phoenix, 3).await.unwrap();
//!
//! // Plan a blue-green deploy of v1: a dry run first, then apply it.
//! let v1 = "v1".parse().unwrap();
//! let plan = phoenix.plan_deploy(&shop, &web, &v1).await.unwrap();
//! println!("{plan}");
//! let report = phoenix.apply(plan).await.unwrap();
//! assert_eq!(report.outcome, phoenix_core::events::Outcome::Succeeded);
//! # });
//! # }
//! ```
//!
//! Features: `sim` (the simulated cloud), `mock` (mockall mocks of every
//! port for downstream tests), `conformance` (the suites every adapter
//! passes).

pub mod campaign;
pub mod canary;
pub mod chaos;
pub mod cost;
pub mod events;
pub mod executor;
pub mod id;
pub mod labels;
pub mod memory_store;
pub mod model;
pub mod ops;
pub mod phoenix;
pub mod plan;
pub mod policy;
pub mod ports;
pub mod ports_set;
pub mod records;
pub mod retry;
pub mod store_layer;
pub mod time;

#[cfg(feature = "sim")]
pub mod sim;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use phoenix::{Phoenix, PhoenixBuilder};

/// An error and its sources on one line, `outer: inner: innermost`, for
/// journals and events (which hold text, not error objects).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = e.source();
    }
    out
}

/// A stable hex SHA-256 of a text, for fingerprints.
pub fn fingerprint_of(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}
