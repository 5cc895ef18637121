use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::id::{ImageId, ServerId};
use crate::labels::Labels;
use crate::time::Timestamp;

/// A server's status as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ServerStatus {
    /// Booting (`BUILD`, `pending`).
    Building,
    /// Running.
    Active,
    /// Stopped (`SHUTOFF`, `stopped`, powered off).
    Stopped,
    /// Failed, with the provider's fault message.
    Error {
        /// The provider's explanation.
        message: String,
    },
    /// Being deleted or gone.
    Deleted,
}

impl ServerStatus {
    /// True for a running server.
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Active)
    }
}

impl fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Building => f.write_str("building"),
            Self::Active => f.write_str("active"),
            Self::Stopped => f.write_str("stopped"),
            Self::Error { message } => write!(f, "error ({message})"),
            Self::Deleted => f.write_str("deleted"),
        }
    }
}

/// A server as the provider describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    /// The provider's id.
    pub id: ServerId,
    /// Its name.
    pub name: String,
    /// Its addresses, private first.
    pub addresses: Vec<IpAddr>,
    /// The port its service listens on, when the provider decides it (the
    /// local provider does); otherwise the role's port applies.
    pub service_port: Option<u16>,
    /// Provider status.
    pub status: ServerStatus,
    /// When it was launched, for max-age.
    pub launched_at: Option<Timestamp>,
    /// The image it runs.
    pub image: Option<ImageId>,
    /// Labels carried on the provider.
    pub labels: Labels,
}

impl Server {
    /// The address a balancer sends traffic to: the first address and the
    /// server's own port or else `default_port`.
    pub fn endpoint(&self, default_port: u16) -> Option<SocketAddr> {
        let ip = *self.addresses.first()?;
        Some(SocketAddr::new(
            ip,
            self.service_port.unwrap_or(default_port),
        ))
    }
}
