//! [`Elbv2TargetGroup`]: one ELBv2 target group as the balancer.

use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::id::ServerId;
use phoenix_core::ports::{LbCapabilities, LoadBalancer, Member, PortError, Target};
use phoenix_providers::aws::AwsClient;

use super::groups::{registered_ports, Groups};

/// Most targets one register or deregister call carries.
pub const MAX_BATCH: usize = 200;

/// The `LoadBalancer` port on one target group of instance targets.
///
/// Attach registers the targets (checking that each endpoint is its
/// instance's primary private address); detach sets the group's
/// deregistration delay to the drain asked for and deregisters them
/// (they report `Draining` until ELBv2 lets them go). A target that is
/// still draining cannot be made active again until its deregistration
/// ends: attach then fails with a temporary error, and the retry
/// registers it afresh.
#[derive(Debug, Clone)]
pub struct Elbv2TargetGroup {
    groups: Groups,
    arn: String,
}

impl Elbv2TargetGroup {
    /// The target group with this ARN, over a shared AWS client.
    pub fn new(client: AwsClient, target_group_arn: impl Into<String>) -> Self {
        Self {
            groups: Groups::new(client),
            arn: target_group_arn.into(),
        }
    }

    /// The target group's ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }
}

#[async_trait]
impl LoadBalancer for Elbv2TargetGroup {
    fn capabilities(&self) -> LbCapabilities {
        LbCapabilities {
            atomic_swap: false,
            drain: true,
            reports_connections: false,
            max_batch: MAX_BATCH,
            reactivates_draining: false,
            stages: false,
            keeps_standby: false,
            check_interval: None,
        }
    }

    async fn members(&self) -> Result<Vec<Member>, PortError> {
        let read = self.groups.read(&[&self.arn]).await?;
        read.get(&self.arn)
            .into_iter()
            .flatten()
            .map(|r| r.member("elbv2 reading members"))
            .collect()
    }

    async fn attach(&self, targets: &[Target]) -> Result<(), PortError> {
        if targets.is_empty() {
            return Ok(());
        }
        self.groups.check_endpoints(targets).await?;
        self.groups.register_active(&self.arn, targets).await
    }

    async fn detach(&self, servers: &[ServerId], drain: Duration) -> Result<(), PortError> {
        if servers.is_empty() {
            return Ok(());
        }
        let read = self.groups.read(&[&self.arn]).await?;
        let present = registered_ports(
            read.get(&self.arn).map(Vec::as_slice).unwrap_or_default(),
            servers,
        );
        if present.is_empty() {
            return Ok(());
        }
        self.groups.set_drain(&self.arn, drain).await?;
        self.groups.deregister(&self.arn, &present).await
    }
}
