//! The local stack: the whole Phoenix pattern on one machine, nothing
//! installed (feature `local`, on by default).
//!
//! Servers are processes started by the local provider from baked,
//! content-addressed images; the embedded balancer proxies to them (or a
//! balancer in another process, reached through its admin socket, so that
//! it outlives the orchestrator: `phoenix lb serve`); state lives in SQLite
//! under a working directory, or in the store a URL names (a PostgreSQL
//! shared by orchestrators on several hosts); configuration comes from a
//! phoenix-config directory, or none.
//!
//! [`crate::local()`] opens it builder-style; [`LocalStack`] then offers
//! every operation in one call ([`LocalStack::release`] bakes, certifies
//! and records a release; [`LocalStack::deploy`], [`LocalStack::rollback`],
//! …), [`LocalStack::restore`] picks up after a restart (resume, reconcile,
//! heal), and [`LocalStack::teardown`] removes everything.
//!
//! The image a demo or a test bakes is *this program*: an image's
//! entrypoint starts it with [`DEMO_APP_ARG`], and the program's `main`
//! begins with [`serve_demo_app_if_asked`], which serves a small HTTP app
//! (health, smoke, drain and sitemap endpoints) instead.

mod bake;
mod builder;
mod demo;
mod ops;
mod stack;
mod timing;

pub use builder::LocalBuilder;
pub use demo::{serve_demo_app_if_asked, DEMO_APP_ARG};
pub use stack::{
    BalancerChoice, HooksChoice, LocalOptions, LocalStack, StoreLayer, DEPLOYMENT, ENVIRONMENT,
    ROLE,
};
pub use timing::{BalancerCall, TimedBalancer};

// What every stack shares, where the local stack's users look for it.
pub use crate::{block_on_main, embedded_balancer, restore, StackError};
