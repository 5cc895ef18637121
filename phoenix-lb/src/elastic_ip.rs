//! [`ElasticIpBalancer`]: an EC2 Elastic IP as the balancer of a
//! single-server role (feature `elastic-ip`), the AWS form of a floating
//! IP: clients know one public address, and attaching another server
//! moves it there in one `AssociateAddress` call (with
//! `AllowReassociation`), the native atomic swap. There is no draining and
//! no health check: Phoenix has health- and smoke-tested the server before
//! it attaches it.
//!
//! The member is the instance EC2 says holds the address now, at the
//! private address the association names and the service port. A target
//! is attached only at exactly that endpoint: one whose address is not a
//! private address of the instance, or whose port is not the service port,
//! is refused (`Invalid`).
//!
//! ```no_run
//! use phoenix_lb::elastic_ip::ElasticIpBalancer;
//! use phoenix_providers::aws::{AwsClient, AwsConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = AwsClient::new(AwsConfig::from_env().await?)?;
//! let lb = ElasticIpBalancer::new(client, "eipalloc-64d5890a", 443);
//! # let _ = lb;
//! # Ok(())
//! # }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::id::ServerId;
use phoenix_core::ports::{
    Compute, ErrorKind, LbCapabilities, LoadBalancer, Member, MemberHealth, MemberState, PortError,
    Target,
};
use phoenix_providers::aws::xml::Items;
use phoenix_providers::aws::{AwsClient, Ec2Compute, QueryRequest, Service};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Address {
    #[serde(default)]
    association_id: Option<String>,
    #[serde(default)]
    instance_id: Option<String>,
    #[serde(default)]
    private_ip_address: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeAddresses {
    #[serde(default)]
    addresses_set: Items<Address>,
}

/// The `LoadBalancer` port on one Elastic IP.
#[derive(Debug, Clone)]
pub struct ElasticIpBalancer {
    client: AwsClient,
    ec2: Ec2Compute,
    allocation: String,
    port: u16,
}

impl ElasticIpBalancer {
    /// The Elastic IP with this allocation id; its member's service
    /// listens on `port`.
    pub fn new(client: AwsClient, allocation_id: impl Into<String>, port: u16) -> Self {
        Self {
            ec2: Ec2Compute::builder(client.clone()).build(),
            client,
            allocation: allocation_id.into(),
            port,
        }
    }

    fn op(&self, what: &str) -> String {
        format!("elastic IP {} {what}", self.allocation)
    }

    async fn address(&self) -> Result<Address, PortError> {
        let q = QueryRequest::new(Service::Ec2, "DescribeAddresses")
            .param("AllocationId.1", &self.allocation);
        let d: DescribeAddresses = self.client.call_xml(&q).await?;
        d.addresses_set
            .items
            .into_iter()
            .next()
            .ok_or_else(|| PortError::not_found(self.op("reading"), self.allocation.clone()))
    }
}

#[async_trait]
impl LoadBalancer for ElasticIpBalancer {
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
        let a = self.address().await?;
        let Some(instance) = a.instance_id.filter(|i| !i.is_empty()) else {
            return Ok(Vec::new());
        };
        let bad = |m: String| PortError::new(self.op("reading"), ErrorKind::BadResponse(m));
        let server = ServerId::new(instance.clone())
            .map_err(|e| bad(format!("instance id {instance:?} is unusable: {e}")))?;
        let fixed = a
            .private_ip_address
            .ok_or_else(|| bad("the association names no private address".into()))?;
        let ip: IpAddr = fixed
            .parse()
            .map_err(|_| bad(format!("private address {fixed:?} is not an IP address")))?;
        Ok(vec![Member {
            server,
            endpoint: SocketAddr::new(ip, self.port),
            health: MemberHealth::Healthy,
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
                    self.op("attaching"),
                    ErrorKind::Invalid(format!(
                        "an Elastic IP serves one server, not {}",
                        targets.len()
                    )),
                ))
            }
        };
        if target.endpoint.port() != self.port {
            return Err(PortError::new(
                self.op("attaching"),
                ErrorKind::Invalid(format!(
                    "{} listens on {}, the address serves port {}",
                    target.server,
                    target.endpoint.port(),
                    self.port
                )),
            ));
        }
        let known = self
            .ec2
            .describe(std::slice::from_ref(&target.server))
            .await?;
        if !known
            .iter()
            .any(|s| s.addresses.contains(&target.endpoint.ip()))
        {
            return Err(PortError::new(
                self.op("attaching"),
                ErrorKind::Invalid(format!(
                    "{} has no address {}",
                    target.server,
                    target.endpoint.ip()
                )),
            ));
        }
        let q = QueryRequest::new(Service::Ec2, "AssociateAddress")
            .param("AllocationId", &self.allocation)
            .param("InstanceId", target.server.as_str())
            .param("PrivateIpAddress", target.endpoint.ip().to_string())
            .param("AllowReassociation", "true");
        self.client.call(&q).await.map(drop)
    }

    async fn detach(&self, servers: &[ServerId], _drain: Duration) -> Result<(), PortError> {
        let a = self.address().await?;
        let holds = a
            .instance_id
            .as_deref()
            .is_some_and(|i| servers.iter().any(|s| s.as_str() == i));
        match a.association_id {
            Some(association) if holds => {
                let q = QueryRequest::new(Service::Ec2, "DisassociateAddress")
                    .param("AssociationId", association);
                match self.client.call(&q).await {
                    Err(e) if e.is_not_found() => Ok(()),
                    other => other.map(drop),
                }
            }
            _ => Ok(()),
        }
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
        // Reassociation moves the address in one call: the old holder is
        // detached by it.
        self.attach(attach).await
    }
}
