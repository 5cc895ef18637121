//! A balancer served to other processes, so that it outlives the
//! orchestrator: [`serve`] exposes any [`LoadBalancer`](phoenix_core::ports::LoadBalancer) on a Unix socket,
//! and [`RemoteBalancer`] implements the port against that socket.
//!
//! An orchestrator killed in the middle of a switch must not take the
//! traffic down with it; run the balancer in its own process (or in the
//! process of whatever outlives the orchestrator) and point the
//! orchestrator at its socket.
//!
//! The protocol is one JSON request and one JSON answer per connection,
//! each a single line, on a socket created with mode 0600.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use phoenix_core::ports::LoadBalancer;
//! use phoenix_lb::embedded::EmbeddedBalancer;
//! use phoenix_lb::remote::{serve, CancellationToken, RemoteBalancer};
//!
//! let lb = Arc::new(EmbeddedBalancer::builder().start().await?);
//! let admin = serve(lb, "/run/phoenix/lb.sock", CancellationToken::new())?;
//! // … in the orchestrator process:
//! let remote = RemoteBalancer::connect("/run/phoenix/lb.sock").await?;
//! let members = remote.members().await?;
//! # drop((admin, members)); Ok(()) }
//! ```

mod client;
mod server;
mod wire;

pub use client::RemoteBalancer;
pub use server::{serve, AdminServer, ServeError};
/// What stops a [`serve`]d socket, re-exported so that callers need no
/// `tokio-util` of their own.
pub use tokio_util::sync::CancellationToken;
