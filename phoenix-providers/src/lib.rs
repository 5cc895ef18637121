//! # phoenix-providers
//!
//! Compute and image adapters for [`phoenix_core`]'s
//! [`Compute`](phoenix_core::ports::Compute) and
//! [`Images`](phoenix_core::ports::Images) ports, each behind its own cargo
//! feature so that a user compiles only what it uses:
//!
//! - `local` (default): an image is an immutable, content-addressed
//!   artifact directory; a server is a process on its own loopback port
//!   (see [`local`]);
//! - `openstack`: OpenStack and Rackspace (the `openstack` module): a
//!   session with Rackspace identity v2.0 or Keystone v3, a token cache and
//!   the service catalog; Nova servers (`NovaCompute`), Glance v2 or Nova
//!   images (`OpenStackImages`), Neutron floating IPs; `openstack-testing`
//!   adds a scripted API server and Mimic's controls for tests;
//! - `aws`: EC2 instances, Auto Scaling groups and AMIs over the Query
//!   APIs (the `aws` module);
//! - `vsphere`: VMware vSphere (the `vsphere` module): VMs cloned from
//!   templates over a thin vim25 SOAP client, guestinfo boot
//!   configuration, custom attributes, power off and on for cold standby;
//! - `packer`: bakes images with `packer build -machine-readable` and
//!   registers the artifact, with its provenance, through another images
//!   port (the `packer` module).
//!
//! `phoenix_core::sim` (feature `sim` of `phoenix-core`) provides a
//! simulated cloud for tests.
//!
//! Bake a local image from a script and run a server from it:
//!
//! ```
//! # #[cfg(feature = "local")]
//! # {
//! use std::collections::BTreeMap;
//! use std::os::unix::fs::PermissionsExt;
//!
//! use phoenix_core::id::{IdempotencyToken, OperationId, PoolId};
//! use phoenix_core::labels::{LabelSelector, Labels};
//! use phoenix_core::ports::{BakeRequest, BakeSource, BootPayload, Compute, Images, LaunchRequest};
//! use phoenix_providers::local::{LocalCompute, LocalImages};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let root = tempfile::tempdir().unwrap();
//! let script = root.path().join("app.sh");
//! std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
//! std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
//!
//! // Bake: copied, made read-only, content-addressed.
//! let images = LocalImages::builder().root(root.path()).build().unwrap();
//! let image = images
//!     .bake(&BakeRequest {
//!         source: BakeSource::Artifact(script.display().to_string()),
//!         name: "app".into(),
//!         version: "1".into(),
//!         base: None,
//!         properties: BTreeMap::new(),
//!     })
//!     .await
//!     .unwrap();
//! assert!(image.digest.unwrap().starts_with("sha256:"));
//!
//! // Launch: a process on its own loopback port, with its boot config.
//! let compute = LocalCompute::builder().root(root.path()).build().unwrap();
//! let token = IdempotencyToken::derive(&"op-1".parse().unwrap(), &"pool-1".parse().unwrap(), 0, 0);
//! let mut labels = Labels::new();
//! labels.insert("phoenix-pool", "pool-1");
//! let request = LaunchRequest {
//!     name: "app-0".into(),
//!     image: image.id.clone(),
//!     flavor: None,
//!     boot: BootPayload::Local { files: vec![], env: BTreeMap::new() },
//!     labels,
//!     token,
//! };
//! let server = compute.launch(std::slice::from_ref(&request)).await.remove(0).unwrap();
//! assert!(server.service_port.is_some());
//! let listed = compute.list(&LabelSelector::new().with("phoenix-pool", "pool-1")).await.unwrap();
//! assert_eq!(listed.len(), 1);
//!
//! // Servers are replaced, never repaired: terminate ends its process group.
//! compute.terminate(&server.id).await.unwrap();
//! assert!(compute.describe(&[server.id]).await.unwrap().is_empty());
//! # });
//! # }
//! ```

#[cfg(feature = "local")]
pub mod local;

#[cfg(any(feature = "openstack", feature = "aws", feature = "vsphere"))]
pub mod api_stats;
#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "openstack")]
pub mod openstack;
#[cfg(feature = "packer")]
pub mod packer;
#[cfg(any(feature = "openstack", feature = "aws", feature = "vsphere"))]
pub(crate) mod redact;
#[cfg(any(feature = "openstack", feature = "aws"))]
pub(crate) mod retry_after;
#[cfg(feature = "vsphere")]
pub mod vsphere;
