//! The local Phoenix stack: everything on one machine, nothing installed.
//!
//! Servers are processes started by the local provider from baked,
//! content-addressed images; the embedded balancer proxies to them; state
//! lives in SQLite under a working directory (or in the store a URL names,
//! such as a shared PostgreSQL); the demo app's drain and warm-up hooks run
//! as servers leave and join; configuration comes from
//! `examples/local/config` through phoenix-config. The same stack backs the
//! `local_cycle` example, the `phoenix-local` command, the fault tests and
//! the benchmarks.

mod bake;
mod crash;
mod cycle;
mod demo;
mod error;
mod stack;
mod timing;

pub use crash::{KillSwitch, KillSwitchStore};
pub use cycle::{run_cycle, CycleOptions, CycleReport, Phase};
pub use demo::block_on_main;
pub use demo::{serve_demo_app_if_asked, DEMO_APP_ARG};
pub use error::StackError;
pub use stack::{
    default_config_dir, BalancerChoice, HooksChoice, LocalStack, StackOptions, DEPLOYMENT,
    ENVIRONMENT, ROLE,
};
pub use timing::{BalancerCall, TimedBalancer};
