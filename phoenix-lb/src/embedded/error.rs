//! Why the embedded balancer could not start.

use std::net::SocketAddr;

/// Why [`super::EmbeddedBalancerBuilder::start`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// A setting is out of range.
    #[error("embedded balancer setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The builder method that set it.
        setting: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// The health-check path is not an origin-form request target.
    #[error("embedded balancer health-check path {path:?} is invalid")]
    InvalidCheckPath {
        /// The refused path.
        path: String,
        /// What is wrong with it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The listen address is not a loopback address and non-loopback
    /// addresses were not allowed.
    #[error(
        "embedded balancer refuses to listen on {addr}: not a loopback address \
         (call `allow_non_loopback(true)` to expose it)"
    )]
    NotLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// Binding the listen address failed.
    #[error("embedded balancer cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bound listener has no local address.
    #[error("embedded balancer: reading the address bound for {addr}")]
    LocalAddr {
        /// The requested address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
