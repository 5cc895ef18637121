//! [`Neutron`]: the floating-IP calls of the Networking API v2.0 that a
//! single-server role needs to move its public address to a new server
//! (`phoenix-lb`'s `floating-ip` feature makes a balancer of it).
//!
//! Mimic's Neutron lists networks only, so these calls are tested against
//! the request and response samples of the Networking API reference.
//!
//! ```no_run
//! use phoenix_providers::openstack::{CloudConfig, Neutron, Session};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let neutron = Neutron::new(Session::new(CloudConfig::from_env()?)?);
//! let fip = neutron.floating_ip("2f245a7b-796b-4f26-9cf9-9e82d248fda7").await?;
//! println!("{} → {:?}", fip.floating_ip_address, fip.fixed_ip_address);
//! # Ok(())
//! # }
//! ```

use serde::Deserialize;
use serde_json::{json, Value};

use phoenix_core::ports::{ErrorKind, PortError};

use super::http::{ApiRequest, Session};

const SERVICE: &str = "network";
const VERSION: &str = "v2.0";

/// A floating IP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FloatingIp {
    /// Its id.
    pub id: String,
    /// The public address.
    pub floating_ip_address: String,
    /// The port it points at, if associated.
    #[serde(default)]
    pub port_id: Option<String>,
    /// The fixed address it points at, if associated.
    #[serde(default)]
    pub fixed_ip_address: Option<String>,
    /// `ACTIVE`, `DOWN` or `ERROR`.
    #[serde(default)]
    pub status: String,
}

/// A fixed address of a port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FixedIp {
    /// The subnet.
    #[serde(default)]
    pub subnet_id: String,
    /// The address.
    pub ip_address: String,
}

/// A port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Port {
    /// Its id.
    pub id: String,
    /// The server (or other device) it belongs to.
    #[serde(default)]
    pub device_id: String,
    /// Its fixed addresses.
    #[serde(default)]
    pub fixed_ips: Vec<FixedIp>,
    /// `ACTIVE`, `DOWN`, `BUILD`.
    #[serde(default)]
    pub status: String,
}

/// Neutron floating-IP and port calls over a session.
#[derive(Debug, Clone)]
pub struct Neutron {
    session: Session,
}

impl Neutron {
    /// A client over a session.
    pub fn new(session: Session) -> Self {
        Self { session }
    }

    /// The session it uses.
    pub fn session(&self) -> &Session {
        &self.session
    }

    fn unwrap<T: serde::de::DeserializeOwned>(
        body: Value,
        key: &str,
        op: &str,
    ) -> Result<T, PortError> {
        let inner = body.get(key).cloned().ok_or_else(|| {
            PortError::new(
                op,
                ErrorKind::BadResponse(format!("the answer has no `{key}`")),
            )
        })?;
        serde_json::from_value(inner).map_err(|e| {
            PortError::new(
                op,
                ErrorKind::BadResponse(format!("`{key}` is unusable: {e}")),
            )
        })
    }

    /// One floating IP by id.
    pub async fn floating_ip(&self, id: &str) -> Result<FloatingIp, PortError> {
        let op = format!("neutron: reading floating IP {id}");
        let body: Value = self
            .session
            .send(
                ApiRequest::get(SERVICE, "/floatingips/{id}", format!("/floatingips/{id}"))
                    .version(VERSION)
                    .operation(&op),
            )
            .await?
            .json()?;
        Self::unwrap(body, "floatingip", &op)
    }

    /// The floating IP with this public address.
    pub async fn floating_ip_by_address(&self, address: &str) -> Result<FloatingIp, PortError> {
        let op = format!("neutron: finding floating IP {address}");
        let body: Value = self
            .session
            .send(
                ApiRequest::get(SERVICE, "/floatingips", "/floatingips".into())
                    .version(VERSION)
                    .query("floating_ip_address", address)
                    .operation(&op),
            )
            .await?
            .json()?;
        let mut all: Vec<FloatingIp> = Self::unwrap(body, "floatingips", &op)?;
        match all.len() {
            1 => Ok(all.remove(0)),
            0 => Err(PortError::not_found(
                op,
                format!("no floating IP {address}"),
            )),
            n => Err(PortError::new(
                op,
                ErrorKind::BadResponse(format!("{n} floating IPs have address {address}")),
            )),
        }
    }

    /// One port by id.
    pub async fn port(&self, id: &str) -> Result<Port, PortError> {
        let op = format!("neutron: reading port {id}");
        let body: Value = self
            .session
            .send(
                ApiRequest::get(SERVICE, "/ports/{id}", format!("/ports/{id}"))
                    .version(VERSION)
                    .operation(&op),
            )
            .await?
            .json()?;
        Self::unwrap(body, "port", &op)
    }

    /// The ports of a server.
    pub async fn ports_of(&self, device_id: &str) -> Result<Vec<Port>, PortError> {
        let op = format!("neutron: listing ports of {device_id}");
        let body: Value = self
            .session
            .send(
                ApiRequest::get(SERVICE, "/ports", "/ports".into())
                    .version(VERSION)
                    .query("device_id", device_id)
                    .operation(&op),
            )
            .await?
            .json()?;
        Self::unwrap(body, "ports", &op)
    }

    /// Points the floating IP at a port (and fixed address), or detaches
    /// it with `None`. One call: the address moves atomically.
    pub async fn associate(
        &self,
        floating_ip_id: &str,
        port: Option<(&str, Option<&str>)>,
    ) -> Result<FloatingIp, PortError> {
        let op = format!("neutron: updating floating IP {floating_ip_id}");
        let body = match port {
            Some((port_id, Some(fixed))) => {
                json!({"floatingip": {"port_id": port_id, "fixed_ip_address": fixed}})
            }
            Some((port_id, None)) => json!({"floatingip": {"port_id": port_id}}),
            None => json!({"floatingip": {"port_id": null}}),
        };
        let body: Value = self
            .session
            .send(
                ApiRequest::put(
                    SERVICE,
                    "/floatingips/{id}",
                    format!("/floatingips/{floating_ip_id}"),
                    body,
                )
                .version(VERSION)
                .operation(&op),
            )
            .await?
            .json()?;
        Self::unwrap(body, "floatingip", &op)
    }
}
