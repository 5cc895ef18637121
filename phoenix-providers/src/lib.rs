//! # phoenix-providers
//!
//! Compute and image adapters for [`phoenix_core`]'s `Compute` and `Images`
//! ports. It will hold, each behind its own cargo feature so that a user
//! compiles only what it uses:
//!
//! - `local` (default): an image is an immutable, content-addressed artifact
//!   directory; a server is a child process on its own loopback port;
//! - `openstack`: Nova and Glance, with Rackspace identity v2.0 and Keystone v3;
//! - `aws`: EC2 instances, AMIs and tags over the Query API;
//! - `vmware`: vSphere through the vim25 SOAP API.
//!
//! Until those land, [`phoenix_core::sim`] (feature `sim` of `phoenix-core`)
//! provides a simulated compute and image back end.
//!
//! ```
//! // The ports these adapters implement:
//! use phoenix_core::ports::{Compute, Images};
//! fn takes_ports(_c: &dyn Compute, _i: &dyn Images) {}
//! ```
