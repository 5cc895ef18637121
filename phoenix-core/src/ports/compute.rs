use std::time::Duration;

use async_trait::async_trait;

use super::{BootFormat, BootPayload, PortError};
use crate::id::{IdempotencyToken, ImageId, ServerId};
use crate::labels::{LabelSelector, Labels};
use crate::model::Server;

/// What a compute back end can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeCapabilities {
    /// Most launch requests accepted in one call (1: no batching).
    pub max_launch_batch: usize,
    /// Most ids one describe call accepts.
    pub max_describe_batch: usize,
    /// Most servers one [`Compute::terminate_many`] call removes (1: the
    /// executor terminates one server per call).
    pub max_terminate_batch: usize,
    /// Whether servers can be stopped and started (cold standby).
    pub stop_start: bool,
    /// Whether the provider itself deduplicates launches by token (EC2's
    /// `ClientToken`). Without it, Phoenix finds earlier launches by the
    /// token label before launching again.
    pub idempotent_launch: bool,
    /// How long a freshly launched server may be missing from describe and
    /// list answers (eventual consistency).
    pub consistency_window: Duration,
    /// The boot configuration format this back end delivers.
    pub boot_format: BootFormat,
}

/// One server to launch.
#[derive(Debug)]
pub struct LaunchRequest {
    /// Server name.
    pub name: String,
    /// Image to boot.
    pub image: ImageId,
    /// Provider size (flavor, instance type), if the role sets one.
    pub flavor: Option<String>,
    /// What the server receives at boot. Holds secrets: never log it.
    pub boot: BootPayload,
    /// Labels to carry on the provider.
    pub labels: Labels,
    /// Idempotency token (also present in `labels`).
    pub token: IdempotencyToken,
}

/// Launches, describes and removes servers.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Compute: Send + Sync {
    /// What this back end can do.
    fn capabilities(&self) -> ComputeCapabilities;

    /// Launches up to `max_launch_batch` servers. Returns one result per
    /// request, in order. Launching a token that was already launched must
    /// not create a second server where `idempotent_launch` is declared.
    async fn launch(&self, requests: &[LaunchRequest]) -> Vec<Result<Server, PortError>>;

    /// Describes many servers in one call. Servers that do not exist (or are
    /// not visible yet) are absent from the answer.
    async fn describe(&self, ids: &[ServerId]) -> Result<Vec<Server>, PortError>;

    /// Every server whose labels match.
    async fn list(&self, selector: &LabelSelector) -> Result<Vec<Server>, PortError>;

    /// Stops a server (where `stop_start` is declared).
    async fn stop(&self, id: &ServerId) -> Result<(), PortError>;

    /// Starts a stopped server (where `stop_start` is declared).
    async fn start(&self, id: &ServerId) -> Result<(), PortError>;

    /// Terminates a server. Terminating one that is already gone succeeds.
    async fn terminate(&self, id: &ServerId) -> Result<(), PortError>;

    /// Terminates up to `max_terminate_batch` servers, in as few calls as
    /// the provider allows. Returns one result per id, in order, with the
    /// same meaning as [`Self::terminate`]'s: one id the provider does not
    /// know must not fail the others. The default terminates them one by
    /// one.
    async fn terminate_many(&self, ids: &[ServerId]) -> Vec<Result<(), PortError>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.terminate(id).await);
        }
        out
    }
}
