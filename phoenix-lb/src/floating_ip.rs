//! [`FloatingIpBalancer`]: a Neutron floating IP as the balancer of a
//! single-server role (feature `floating-ip`): the discovery mechanism many
//! teams prefer for one server, whose clients know one public address.
//!
//! The floating IP points at one server at a time, so attaching another
//! server moves the address to it in one call
//! (`PUT /v2.0/floatingips/{id}` with the new port): the native atomic
//! swap. Detaching the server it points at disassociates it. There is no
//! draining (connections through the old association end with it) and no
//! health check: the member is healthy once Neutron reports the floating
//! IP `ACTIVE` (Phoenix has already health- and smoke-tested the server
//! before it attaches it).
//!
//! The member is the port's device (the server Neutron says holds the
//! address now) at the associated fixed address and the service port.
//! A target is attached only at exactly that endpoint: one whose address
//! is on none of the server's ports, or whose port is not the service
//! port, is refused (`Invalid`) rather than associated with some other
//! address and reported at an endpoint it was not attached with.
//!
//! ```no_run
//! use phoenix_lb::floating_ip::FloatingIpBalancer;
//! use phoenix_providers::openstack::{CloudConfig, Neutron, Session};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let neutron = Neutron::new(Session::new(CloudConfig::from_env()?)?);
//! let lb = FloatingIpBalancer::new(neutron, "2f245a7b-796b-4f26-9cf9-9e82d248fda7", 443);
//! # let _ = lb;
//! # Ok(())
//! # }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::id::ServerId;
use phoenix_core::ports::{
    ErrorKind, LbCapabilities, LoadBalancer, Member, MemberHealth, MemberState, PortError, Target,
};
use phoenix_providers::openstack::Neutron;

/// The `LoadBalancer` port on one floating IP.
#[derive(Debug, Clone)]
pub struct FloatingIpBalancer {
    neutron: Neutron,
    floating_ip: String,
    port: u16,
}

impl FloatingIpBalancer {
    /// The floating IP with this id; its member's service listens on
    /// `port`.
    pub fn new(neutron: Neutron, floating_ip_id: impl Into<String>, port: u16) -> Self {
        Self {
            neutron,
            floating_ip: floating_ip_id.into(),
            port,
        }
    }

    /// The floating IP's id.
    pub fn floating_ip_id(&self) -> &str {
        &self.floating_ip
    }

    fn operation(&self, what: &str) -> String {
        format!("floating IP {}: {what}", self.floating_ip)
    }
}

#[async_trait]
impl LoadBalancer for FloatingIpBalancer {
    fn capabilities(&self) -> LbCapabilities {
        LbCapabilities {
            atomic_swap: true,
            drain: false,
            reports_connections: false,
            max_batch: 1,
            reactivates_draining: true,
            stages: false,
            keeps_standby: false,
            check_interval: None,
        }
    }

    async fn members(&self) -> Result<Vec<Member>, PortError> {
        let fip = self.neutron.floating_ip(&self.floating_ip).await?;
        let Some(port_id) = fip.port_id.as_deref() else {
            return Ok(Vec::new());
        };
        let port = self.neutron.port(port_id).await?;
        let bad = |m: String| PortError::new(self.operation("reading"), ErrorKind::BadResponse(m));
        let server = ServerId::new(port.device_id.clone())
            .map_err(|e| bad(format!("port {port_id} names no usable server: {e}")))?;
        let fixed = fip
            .fixed_ip_address
            .clone()
            .or_else(|| port.fixed_ips.first().map(|f| f.ip_address.clone()))
            .ok_or_else(|| bad("the association has no fixed address".into()))?;
        let ip: IpAddr = fixed
            .parse()
            .map_err(|_| bad(format!("fixed address {fixed:?} is not an IP address")))?;
        Ok(vec![Member {
            server,
            endpoint: SocketAddr::new(ip, self.port),
            health: match fip.status.as_str() {
                "ACTIVE" => MemberHealth::Healthy,
                "ERROR" => MemberHealth::Unhealthy,
                _ => MemberHealth::Unknown,
            },
            state: MemberState::Active,
            connections: None,
            checked_ago: None,
        }])
    }

    async fn attach(&self, targets: &[Target]) -> Result<(), PortError> {
        let target = match targets {
            [] => return Ok(()),
            [one] => one,
            _ => {
                return Err(PortError::new(
                    self.operation("attaching"),
                    ErrorKind::Invalid(format!(
                        "a floating IP serves one server, not {}",
                        targets.len()
                    )),
                ))
            }
        };
        // The member is reported at the fixed address and the service
        // port, so any other target would be reported at an endpoint it
        // was not attached with, and the guards, which match members by
        // id and endpoint, would not recognise it.
        if target.endpoint.port() != self.port {
            return Err(PortError::new(
                self.operation("attaching"),
                ErrorKind::Invalid(format!(
                    "{} is on port {}; this floating IP's service is on {}",
                    target.server,
                    target.endpoint.port(),
                    self.port
                )),
            ));
        }
        let fip = self.neutron.floating_ip(&self.floating_ip).await?;
        let ports = self.neutron.ports_of(target.server.as_str()).await?;
        if ports.is_empty() {
            return Err(PortError::not_found(
                self.operation("attaching"),
                format!("server {} has no port", target.server),
            ));
        }
        let wanted_ip = target.endpoint.ip().to_string();
        let (port, fixed) = ports
            .iter()
            .find_map(|p| {
                let f = p.fixed_ips.iter().find(|f| f.ip_address == wanted_ip)?;
                Some((p, f.ip_address.as_str()))
            })
            .ok_or_else(|| {
                PortError::new(
                    self.operation("attaching"),
                    ErrorKind::Invalid(format!(
                        "server {} has no port with address {wanted_ip}",
                        target.server
                    )),
                )
            })?;
        if fip.port_id.as_deref() == Some(port.id.as_str())
            && fip.fixed_ip_address.as_deref() == Some(fixed)
        {
            return Ok(());
        }
        // One update moves the address from the old server to the new.
        self.neutron
            .associate(&self.floating_ip, Some((port.id.as_str(), Some(fixed))))
            .await
            .map(|_| ())
    }

    async fn detach(&self, servers: &[ServerId], _drain: Duration) -> Result<(), PortError> {
        let current = self.members().await?;
        if current.iter().any(|m| servers.contains(&m.server)) {
            self.neutron.associate(&self.floating_ip, None).await?;
        }
        Ok(())
    }

    async fn swap(
        &self,
        attach: &[Target],
        detach: &[ServerId],
        drain: Duration,
    ) -> Result<(), PortError> {
        if attach.is_empty() {
            return self.detach(detach, drain).await;
        }
        // Attaching moves the address away from whatever held it.
        self.attach(attach).await
    }
}
