//! [`ProviderProbe`]: checks that trust the provider's word that a server
//! runs, for `check = "provider"` in a `phoenix.toml`.

use std::sync::Arc;

use async_trait::async_trait;
use phoenix_core::model::ServerStatus;
use phoenix_core::ports::{Check, Compute, PortError, Probe, ProbeOutcome, ProbeTarget};

/// Passes a server the provider reports active, for both the health check
/// and the smoke test.
///
/// It proves nothing about the service on the server: use it only where
/// the balancer gates traffic on its own health checks (ELBv2 target
/// health, Octavia and Rackspace CLB monitors), or against an emulator
/// whose servers run nothing (moto, Mimic, vcsim).
#[derive(Clone)]
pub struct ProviderProbe {
    compute: Arc<dyn Compute>,
}

impl ProviderProbe {
    /// Asks `compute`.
    pub fn new(compute: Arc<dyn Compute>) -> Self {
        Self { compute }
    }
}

impl std::fmt::Debug for ProviderProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderProbe").finish_non_exhaustive()
    }
}

#[async_trait]
impl Probe for ProviderProbe {
    async fn check(&self, target: &ProbeTarget, _check: Check) -> Result<ProbeOutcome, PortError> {
        let found = self
            .compute
            .describe(std::slice::from_ref(&target.server))
            .await?;
        let status = found
            .iter()
            .find(|s| s.id == target.server)
            .map(|s| s.status.clone());
        Ok(ProbeOutcome {
            passed: status == Some(ServerStatus::Active),
            detail: match status {
                Some(s) => format!("the provider reports {s:?}"),
                None => "the provider does not know the server".into(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_core::id::ServerId;
    use phoenix_core::model::Server;
    use phoenix_core::ports::MockCompute;

    fn target() -> ProbeTarget {
        ProbeTarget {
            server: ServerId::new("s-1").unwrap(),
            endpoint: "127.0.0.1:1".parse().unwrap(),
            release: "r1".parse().unwrap(),
            role: "web".parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn passes_only_what_the_provider_reports_active() {
        for (status, passed) in [
            (Some(ServerStatus::Active), true),
            (Some(ServerStatus::Building), false),
            (None, false),
        ] {
            let mut compute = MockCompute::new();
            let described = status.clone();
            compute.expect_describe().returning(move |ids| {
                Ok(described
                    .clone()
                    .map(|status| {
                        vec![Server {
                            id: ids[0].clone(),
                            name: "web-1".into(),
                            addresses: vec![],
                            service_port: None,
                            status,
                            launched_at: None,
                            image: None,
                            labels: Default::default(),
                        }]
                    })
                    .unwrap_or_default())
            });
            let probe = ProviderProbe::new(Arc::new(compute));
            let out = probe.check(&target(), Check::Health).await.unwrap();
            assert_eq!(out.passed, passed, "{status:?}: {}", out.detail);
        }
    }
}
