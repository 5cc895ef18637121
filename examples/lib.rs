//! Runnable Phoenix programs, and the local stack they share.
//!
//! - `cargo run --release --example local_cycle`: the whole Phoenix cycle
//!   on this machine, under live traffic (the main job);
//! - `cargo run --release --example sim_cycle`: 1,000 servers on the
//!   simulated cloud;
//! - `cargo run --example config_matrix`: configuration for every
//!   environment × role;
//! - the `phoenix-local` command: one operation at a time on the local
//!   stack (used by the fault tests).
//!
//! ```no_run
//! # async fn demo() -> Result<(), examples::local::StackError> {
//! use examples::local::{run_cycle, CycleOptions, LocalStack, StackOptions};
//! let stack = LocalStack::open(examples::local::options()?).await?;
//! let report = run_cycle(&stack, CycleOptions::default()).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

pub mod local;
