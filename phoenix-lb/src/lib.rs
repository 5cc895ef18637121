//! # phoenix-lb
//!
//! Load-balancer adapters for [`phoenix_core`]'s `LoadBalancer` port, and
//! HTTP health probes. It will hold, each behind a cargo feature:
//!
//! - `embedded` (default): a tokio TCP proxy whose backend set is swapped
//!   atomically, with health checks and connection draining;
//! - `haproxy`: HAProxy's runtime API over its stats socket;
//! - `rackspace`: Rackspace Cloud Load Balancers;
//! - `octavia`: OpenStack Octavia, with the batch member update as a native
//!   atomic swap;
//! - `aws`: ELBv2 target groups, and elastic/floating IP re-association for
//!   single-server roles.
//!
//! ```
//! use phoenix_core::ports::LoadBalancer;
//! fn takes_port(_lb: &dyn LoadBalancer) {}
//! ```
