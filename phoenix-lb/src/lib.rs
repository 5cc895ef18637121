//! # phoenix-lb
//!
//! Load-balancer adapters for [`phoenix_core`]'s
//! [`LoadBalancer`](phoenix_core::ports::LoadBalancer) port, and an HTTP
//! [`Probe`](phoenix_core::ports::Probe). Each piece sits behind a cargo
//! feature:
//!
//! - `embedded` (default): [`embedded::EmbeddedBalancer`], a tokio TCP proxy
//!   on a loopback address whose member set is swapped atomically, with
//!   active health checks (HTTP `GET` or TCP connect; interval, rise, fall),
//!   connection retry on another member when a connect fails, redispatch of
//!   a safe first request a dying member dropped unanswered, connection
//!   draining and per-member counters;
//! - `probe` (default): [`probe::HttpProbe`], health and smoke checks over
//!   HTTP/1.1 that also verify the release a server announces in its
//!   [`RELEASE_HEADER`];
//! - `loadgen`: [`loadgen::LoadGen`], a rate-bounded HTTP/1.1 load generator
//!   that counts failures, latencies and the releases that answered, used by
//!   the tests, the examples and the benchmarks.
//! - `haproxy`: [`haproxy::HaproxyBalancer`], HAProxy through its runtime
//!   API (dynamic servers, drain, typed errors carrying HAProxy's message),
//!   and [`haproxy::LocalHaproxy`], which runs a haproxy of its own for
//!   tests, benchmarks and examples.
//! - `rackspace`, `octavia`, `floating-ip`: Rackspace Cloud Load Balancers
//!   (`rackspace_clb::RackspaceClb`), OpenStack Octavia pools with the batch
//!   member update as the atomic swap (`octavia::OctaviaBalancer`), and a
//!   Neutron floating IP for single-server roles
//!   (`floating_ip::FloatingIpBalancer`), sharing phoenix-providers'
//!   authenticated OpenStack session.
//! - `elbv2`, `elastic-ip`: AWS ELBv2 (`elbv2::Elbv2TargetGroup`, one
//!   target group; `elbv2::Elbv2BlueGreen`, a listener switching two target
//!   groups by weight in one call) and an Elastic IP for single-server
//!   roles (`elastic_ip::ElasticIpBalancer`), over phoenix-providers' AWS
//!   client.
//! - `remote` (default): `remote::serve` puts any balancer on a Unix
//!   socket and `remote::RemoteBalancer` drives it from another process,
//!   so that the balancer outlives the orchestrator (`phoenix lb serve`).
//!
//! ## Example
//!
//! Start the balancer on a loopback port, attach a backend and read the
//! members:
//!
//! ```
//! # #[cfg(feature = "embedded")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! use phoenix_core::ports::{LoadBalancer, MemberState, Target};
//! use phoenix_lb::embedded::{EmbeddedBalancer, HealthCheck};
//!
//! // A backend: anything that accepts TCP connections on loopback.
//! let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!
//! let lb = EmbeddedBalancer::builder()
//!     .listen("127.0.0.1:0".parse()?)
//!     .health_check(HealthCheck::TcpConnect)
//!     .check_interval(Duration::from_millis(50))
//!     .start()
//!     .await?;
//! lb.attach(&[Target {
//!     server: "web-1".parse()?,
//!     endpoint: backend.local_addr()?,
//! }])
//! .await?;
//!
//! let members = lb.members().await?;
//! assert_eq!(members.len(), 1);
//! assert_eq!(members[0].state, MemberState::Active);
//! println!("clients connect to {}; member {}", lb.local_addr(), members[0]);
//!
//! lb.shutdown().await;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "embedded"))]
//! # fn main() {}
//! ```

// A kit shared by the features below: each uses part of it.
#[cfg(feature = "http")]
#[cfg_attr(
    not(all(feature = "embedded", feature = "probe", feature = "loadgen")),
    allow(dead_code)
)]
mod http;

#[cfg(feature = "embedded")]
pub mod embedded;

#[cfg(feature = "probe")]
pub mod probe;

#[cfg(feature = "haproxy")]
pub mod haproxy;
#[cfg(feature = "loadgen")]
pub mod loadgen;
#[cfg(feature = "remote")]
pub mod remote;

#[cfg(feature = "elastic-ip")]
pub mod elastic_ip;
#[cfg(feature = "elbv2")]
pub mod elbv2;
#[cfg(feature = "floating-ip")]
pub mod floating_ip;
#[cfg(feature = "octavia")]
pub mod octavia;
#[cfg(feature = "rackspace")]
pub mod rackspace_clb;

/// The response header in which a server announces the release it runs
/// (compared case-insensitively, as HTTP header names are).
pub const RELEASE_HEADER: &str = "x-phoenix-release";

#[cfg(feature = "embedded")]
pub use embedded::{EmbeddedBalancer, EmbeddedBalancerBuilder, HealthCheck};
#[cfg(feature = "loadgen")]
pub use loadgen::{LoadGen, LoadGenConfig, LoadReport};
#[cfg(feature = "probe")]
pub use probe::HttpProbe;
