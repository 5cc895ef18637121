//! Where failures are injected: [`ChaosTarget`].

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::Server;
use crate::ports::{Compute, ErrorKind, PortError};

use super::spec::{FailureKind, UNLABELLED_DOMAIN};

/// Something that can make a live server fail on purpose, and tell which
/// failure domain a server is in.
#[async_trait]
pub trait ChaosTarget: Send + Sync {
    /// What it is, for reports (`local processes`, `compute`, `simulation`).
    fn name(&self) -> &str;

    /// Makes `server` fail as `kind` says, now.
    async fn inject(&self, server: &Server, kind: FailureKind) -> Result<(), PortError>;

    /// The failure domain of `server`: by default the value of its label
    /// `key`, or [`UNLABELLED_DOMAIN`].
    fn domain(&self, server: &Server, key: &str) -> String {
        server
            .labels
            .get(key)
            .unwrap_or(UNLABELLED_DOMAIN)
            .to_owned()
    }
}

/// Fails servers through the compute port: a kill terminates the server,
/// a stop stops it (where the back end can). This is the drill against a
/// real cloud; it bypasses the executor's guards on purpose, which is why
/// the drill checks the capacity floor itself before each failure.
#[derive(Clone)]
pub struct ComputeTarget {
    compute: Arc<dyn Compute>,
}

impl std::fmt::Debug for ComputeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputeTarget").finish_non_exhaustive()
    }
}

impl ComputeTarget {
    /// Over a compute back end.
    pub fn new(compute: Arc<dyn Compute>) -> Self {
        Self { compute }
    }
}

#[async_trait]
impl ChaosTarget for ComputeTarget {
    fn name(&self) -> &str {
        "compute"
    }

    async fn inject(&self, server: &Server, kind: FailureKind) -> Result<(), PortError> {
        match kind {
            FailureKind::Kill => self.compute.terminate(&server.id).await,
            FailureKind::Stop if self.compute.capabilities().stop_start => {
                self.compute.stop(&server.id).await
            }
            FailureKind::Stop => Err(PortError::new(
                "chaos: stop server",
                ErrorKind::Unsupported("this compute back end cannot stop servers".into()),
            )),
        }
    }
}

/// The simulated cloud fails servers behind Phoenix's back, as the world
/// would: a kill crashes the application (the cloud still says ACTIVE,
/// only the balancer's checks notice), a stop fails its host (the cloud
/// reports ERROR).
#[cfg(feature = "sim")]
#[async_trait]
impl ChaosTarget for crate::sim::SimCloud {
    fn name(&self) -> &str {
        "simulation"
    }

    async fn inject(&self, server: &Server, kind: FailureKind) -> Result<(), PortError> {
        match kind {
            FailureKind::Kill => self.kill(&server.id),
            FailureKind::Stop => self.fail_host(&server.id),
        }
        Ok(())
    }
}
