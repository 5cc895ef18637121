//! The local Phoenix stack of the examples: [`phoenix::local()`] with the
//! example configuration (`examples/local/config`) and the demo app's
//! hooks, plus what only the examples and their tests need — the demo
//! cycle under live traffic ([`run_cycle`]) and the kill switch the fault
//! tests arm ([`KillSwitch`]). The same stack backs the `local_cycle`
//! example, the `phoenix-local` command, the fault tests and the
//! benchmarks.

mod crash;
mod cycle;

use std::path::{Path, PathBuf};

pub use crash::{KillSwitch, KillSwitchStore};
pub use cycle::{run_cycle, CycleOptions, CycleReport, Phase};
pub use phoenix::local::{
    block_on_main, serve_demo_app_if_asked, BalancerCall, BalancerChoice, HooksChoice,
    LocalOptions as StackOptions, LocalStack, StackError, TimedBalancer, DEMO_APP_ARG, DEPLOYMENT,
    ENVIRONMENT, ROLE,
};

/// The example configuration shipped with this package.
pub fn default_config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("local")
        .join("config")
}

/// The examples' defaults: [`StackOptions::here`] with the example
/// configuration and the demo app's drain and warm-up hooks.
pub fn options() -> Result<StackOptions, StackError> {
    let mut o = StackOptions::here()?;
    o.config = Some(default_config_dir());
    o.hooks = HooksChoice::Demo;
    o.holder = format!("local-cycle@{}", std::process::id());
    Ok(o)
}
