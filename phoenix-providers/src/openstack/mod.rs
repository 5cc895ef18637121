//! The `openstack` provider: OpenStack and Rackspace, the pattern's home
//! cloud, over a thin reqwest + serde client (no crate speaks both
//! Keystone v3 and Rackspace's v2 API-key identity).
//!
//! - [`CloudConfig`] says which cloud and as whom: `clouds.yaml` with
//!   `secure.yaml`, the `OS_*` variables, or a builder.
//! - [`Session`] authenticates (Rackspace identity v2.0 with an API key or
//!   password; Keystone v3 with a password or an application credential,
//!   scoped to a project or domain), caches the token and renews it before
//!   it expires or once on a 401, picks endpoints from the service catalog
//!   by type, name, region and interface, retries with the shared
//!   [`RetryPolicy`](phoenix_core::retry::RetryPolicy), classifies errors,
//!   and counts the API calls made per path template.
//! - [`NovaCompute`] implements `Compute`, [`OpenStackImages`] implements
//!   `Images` (Glance v2 or the Nova images API), [`Neutron`] moves
//!   floating IPs. Cloud Load Balancers, Octavia and floating-IP balancers
//!   live in `phoenix-lb` and share the session.
//!
//! Credentials and tokens are [`secrecy`] values: `Debug` shows
//! `[REDACTED]`, error messages are scrubbed of them, logs never carry
//! bodies or headers.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use phoenix_core::ports::Compute;
//! use phoenix_providers::openstack::{CloudConfig, NovaCompute, OpenStackImages, Session};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // OS_CLOUD=rackspace, or OS_AUTH_URL / OS_USERNAME / OS_API_KEY / OS_REGION_NAME.
//! let session = Session::new(CloudConfig::from_env()?)?;
//! let compute = Arc::new(NovaCompute::builder(session.clone()).flavor("general1-2").build());
//! let images = Arc::new(OpenStackImages::builder(session.clone()).build());
//! println!("{:?}", compute.capabilities());
//! # let _ = images;
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod busy;
pub mod catalog;
mod classify;
pub mod config;
pub mod credentials;
pub mod error;
pub mod glance;
pub mod http;
pub mod neutron;
pub mod nova;
pub mod pagination;
#[cfg(feature = "openstack-testing")]
pub mod testing;

pub use crate::api_stats::DescribeStats;
pub use config::{
    ApplicationCredentialRef, CloudConfig, CloudConfigBuilder, Credentials, DomainRef, Interface,
    ProjectRef, Scope, TenantRef, UserRef,
};
pub use error::{CatalogError, ConfigError};
pub use glance::{ImageApi, OpenStackImages, OpenStackImagesBuilder};
pub use http::{ApiRequest, ApiResponse, ApiStats, Retry, Session, SessionBuilder};
pub use neutron::{FloatingIp, Neutron, Port};
pub use nova::{NovaCompute, NovaComputeBuilder};
