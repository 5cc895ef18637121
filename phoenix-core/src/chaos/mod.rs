//! Planned failures: a chaos drill that fails live servers on purpose,
//! within a budget and the capacity floor, and checks that heal restores
//! the pool, measuring time to detect and time to restore.
//!
//! A [`ChaosDrill`] says what to do (seed, number of failures, kill or
//! stop, pauses, deadlines, the failure-domain label, the floor); a
//! [`ChaosTarget`] injects the failures (the local stack kills processes,
//! [`ComputeTarget`] terminates or stops through the compute port, the
//! simulated cloud crashes applications or hosts);
//! [`Phoenix::chaos_drill`](crate::Phoenix::chaos_drill) runs it and
//! returns a [`DrillReport`].
//!
//! Guarantees of a drill:
//!
//! - **Floor**: before each failure a fresh balancer read must show at
//!   least `floor + victims` healthy serving members of the live pool;
//!   otherwise it halts with [`ChaosError::FloorWouldBreak`] and injects
//!   nothing.
//! - **One domain at a time**: the victims of one failure share a failure
//!   domain, and the next failure starts only once the previous one is
//!   restored.
//! - **Bounded**: detection and restoration each have a deadline; a
//!   missed one halts the drill ([`DrillHalted`] carries what was done).
//!
//! ```
//! # #[cfg(feature = "sim")]
//! # {
//! use phoenix_core::chaos::ChaosDrill;
//! use phoenix_core::policy::Capacity;
//! use phoenix_core::sim::{SimCloud, SimConfig};
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
//! let cloud = SimCloud::new(SimConfig::default());
//! let phoenix = cloud.phoenix().build().unwrap();
//! let (shop, web) = cloud.demo_deployment(&phoenix, 3).await.unwrap();
//! let plan = phoenix.plan_deploy(&shop, &web, &"v1".parse().unwrap()).await.unwrap();
//! phoenix.apply(plan).await.unwrap();
//!
//! let drill = ChaosDrill::kills(7, 2).min_healthy(Capacity::Absolute(2));
//! let report = phoenix.chaos_drill(&shop, &web, &drill, &cloud).await.unwrap();
//! assert_eq!(report.failures.len(), 2);
//! println!("{report}");
//! # });
//! # }
//! ```

mod drill;
mod error;
mod report;
mod spec;
mod target;

pub use error::{ChaosError, DrillHalted};
pub use report::{DrillReport, FailureRecord};
pub use spec::{ChaosDrill, FailureKind, DEFAULT_DOMAIN_KEY, UNLABELLED_DOMAIN};
pub use target::{ChaosTarget, ComputeTarget};
