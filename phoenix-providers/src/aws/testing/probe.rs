//! [`RunningProbe`]: health and smoke checks for a peer whose instances
//! run nothing (moto): an instance passes when EC2 says it is running.

use std::sync::Arc;

use async_trait::async_trait;
use phoenix_core::model::ServerStatus;
use phoenix_core::ports::{Check, Compute, PortError, Probe, ProbeOutcome, ProbeTarget};

use crate::aws::Ec2Compute;

/// Passes an instance EC2 reports running.
#[derive(Debug, Clone)]
pub struct RunningProbe(pub Arc<Ec2Compute>);

#[async_trait]
impl Probe for RunningProbe {
    async fn check(&self, target: &ProbeTarget, _check: Check) -> Result<ProbeOutcome, PortError> {
        let found = self
            .0
            .describe(std::slice::from_ref(&target.server))
            .await?;
        let status = found.first().map(|s| s.status.clone());
        Ok(ProbeOutcome {
            passed: status == Some(ServerStatus::Active),
            detail: format!("EC2 reports {status:?}"),
        })
    }
}
