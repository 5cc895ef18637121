//! # phoenix-config
//!
//! Layered environment and role configuration for [`phoenix_core`]'s
//! `BootConfig` port: base → environment → role → environment × role →
//! release overrides, secrets scoped to the environments allowed to receive
//! them, and renderers for every boot mechanism (cloud-init, AWS user data,
//! OpenStack user data and metadata, vSphere guestinfo, local files and
//! environment), plus a stable configuration fingerprint.
//!
//! ```
//! use phoenix_core::ports::BootConfig;
//! fn takes_port(_b: &dyn BootConfig) {}
//! ```
