//! The ports: traits that adapters implement, each with a small required
//! surface, a capabilities description and classified errors.
//!
//! With the `mock` feature every port has a `mockall` mock
//! (`MockCompute`, `MockLoadBalancer`, …) for downstream tests.

mod boot_config;
mod compute;
mod error;
mod hooks;
mod images;
mod load_balancer;
mod probe;
mod state_store;
mod traffic;

pub use boot_config::{BootConfig, BootContext, BootFile, BootFormat, BootPayload};
pub use compute::{Compute, ComputeCapabilities, LaunchRequest};
pub use error::{BoxError, ErrorKind, PortError, RetryClass};
pub use hooks::{HookReport, HookTarget, ServerHooks};
pub use images::{BakeRequest, BakeSource, ImageCapabilities, Images};
pub use load_balancer::{LbCapabilities, LoadBalancer, Member, MemberHealth, MemberState, Target};
pub use probe::{Check, Probe, ProbeOutcome, ProbeTarget};
pub use state_store::{
    Commit, EventAppend, Expect, Fence, Lease, StateStore, StoreError, StoredEvent, Versioned,
    Write,
};
pub use traffic::TrafficStats;

#[cfg(feature = "mock")]
pub use boot_config::MockBootConfig;
#[cfg(feature = "mock")]
pub use compute::MockCompute;
#[cfg(feature = "mock")]
pub use hooks::MockServerHooks;
#[cfg(feature = "mock")]
pub use images::MockImages;
#[cfg(feature = "mock")]
pub use load_balancer::MockLoadBalancer;
#[cfg(feature = "mock")]
pub use probe::MockProbe;
#[cfg(feature = "mock")]
pub use state_store::MockStateStore;
