//! Phoenix servers in one crate: servers are never patched in place. A
//! versioned image is baked and certified, a fresh pool is created from it,
//! smoke-tested and switched in behind the load balancer, the old pools are
//! kept for a one-step rollback, then reaped.
//!
//! This facade stands over the five libraries the way `kube` stands over
//! `kube-core` and `kube-runtime`: it re-exports them ([`core`],
//! [`providers`], [`lb`], [`config`], [`state`]) with the back ends behind
//! features, and adds ready compositions and the `phoenix` command.
//!
//! - [`local()`]: the whole stack on this machine (local processes, the
//!   embedded balancer, SQLite), builder-style;
//! - [`Stack::from_file`]: any provider and balancer, from a
//!   `phoenix.toml` ([`mod@file`] documents it);
//! - the `phoenix` command (feature `cli`): `plan`, `apply`, `deploy`,
//!   `rollback`, `status`, `report`, `lb serve`, … (see its `--help`).
//!
//! # Ten lines
//!
//! ```
//! # #[cfg(not(feature = "local"))] fn main() {}
//! # #[cfg(feature = "local")]
//! # fn main() -> std::process::ExitCode {
//! // A demo's image is this program: started with the demo argument, it
//! // serves a small HTTP app instead.
//! if let Some(code) = phoenix::local::serve_demo_app_if_asked() {
//!     return code;
//! }
//! # let dir = tempfile::tempdir().unwrap();
//! phoenix::block_on_main(async {
//!     let stack = phoenix::local().dir(dir.path()).servers(2).open().await?;
//!     stack.release("v1").await?; // bake, certify, record
//!     stack.deploy("v1").await?; // a verified pool goes live
//!     stack.release("v2").await?;
//!     stack.deploy("v2").await?; // blue-green switch; v1 kept hot
//!     stack.rollback(None).await?; // v1 serves again
//!     let snap = stack.phoenix.snapshot(&stack.deployment).await?;
//!     println!("{}", phoenix::status::StatusTree::of(&snap, chrono::Utc::now(), std::time::Duration::from_secs(3600), false));
//!     stack.teardown().await?;
//!     Ok::<_, phoenix::StackError>(true)
//! })
//! # }
//! ```
//!
//! The README's version of this (provision, deploy, switch, rollback)
//! runs in `cargo test` too.
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `local` (default) | the local provider: servers are processes started from baked, content-addressed images ([`mod@local`], [`local()`], `kind = "local"` in a `phoenix.toml`) |
//! | `cli` (default) | the `phoenix` command |
//! | `openstack` | Nova, Glance (Keystone v3, Rackspace identity), Octavia, Rackspace CLB, floating IPs |
//! | `aws` | EC2, AMIs, ELBv2, Elastic IPs, AWS's credential chain |
//! | `vsphere` | VMs cloned from templates on vCenter (`GOVC_*`) |
//! | `packer` | images baked by `packer build`, with their provenance |
//! | `haproxy` | HAProxy through its runtime API |
//! | `postgres` | PostgreSQL state shared by orchestrators |
//! | `sim`, `mock` | the simulated cloud and port mocks, for tests |
//!
//! Every build has the embedded balancer and its admin socket
//! (`remote`), HTTP probes, SQLite state and hooks. A build for a cloud
//! only can leave the local provider out
//! (`default-features = false, features = ["aws"]`); a `phoenix.toml`
//! with `kind = "local"` is then refused, naming the feature.
//!
//! # Exit statuses of the `phoenix` command
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | an error (a port, the store, a file): the message says which |
//! | 2 | bad usage or a bad `phoenix.toml` (the message names file, line and key) |
//! | 3 | busy: another orchestrator holds the deployment's lease |
//! | 4 | lease lost: another orchestrator took the deployment over while this one stalled |
//! | 5 | refused: a guard or the planner refused (an invariant, a stale plan, an unfinished operation) |
//! | 6 | the operation failed and was rolled back (the previous pool serves) |
//! | 7 | the operation failed and halted (see `phoenix status` and `phoenix report`) |

// The crate's docs link to the local stack, which a build for the clouds
// only leaves out.
#![cfg_attr(not(feature = "local"), allow(rustdoc::broken_intra_doc_links))]

pub use phoenix_config as config;
pub use phoenix_core as core;
pub use phoenix_lb as lb;
pub use phoenix_providers as providers;
pub use phoenix_state as state;

pub use phoenix_core::{
    events::{Event, EventKind},
    executor::{ExecError, FailureCause, OperationReport},
    plan::Plan,
    policy::Policy,
    Phoenix, PhoenixBuilder,
};
/// Cancellation of long-running services (the balancer's admin socket),
/// re-exported so that no `tokio_util` type is needed by hand.
pub use phoenix_lb::remote::CancellationToken;

mod block_on;
pub mod campaign;
pub mod canary_section;
pub mod chaos;
mod compose;
mod embedded;
mod error;
pub mod exit;
pub mod file;
#[cfg(feature = "local")]
pub mod local;
pub mod prices;
mod probe;
mod redact;
pub mod report;
mod restore;
mod stack;
pub mod status;

pub use block_on::block_on_main;
pub use embedded::embedded_balancer;
pub use error::StackError;
pub use probe::ProviderProbe;
pub use restore::restore;
pub use stack::{Stack, StackFileError, StackSelect};

/// The workspace README's examples, run as doc tests (`cargo test`).
#[cfg(all(doctest, feature = "local"))]
#[doc = include_str!("../../README.md")]
struct RootReadme;

/// Opens the local stack builder-style: local processes from baked
/// images, the embedded balancer, SQLite under `.phoenix` (see
/// [`local::LocalBuilder`] for every setting).
#[cfg(feature = "local")]
pub fn local() -> local::LocalBuilder {
    local::LocalBuilder::new()
}
