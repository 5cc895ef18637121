//! Promotion across environments: a release goes live in a deployment
//! with a [`PromotionRule`] only after the same image served, live and
//! healthy, in the named staging deployment for the rule's soak time.
//! `ops::promotion::prove` finds that proof in the staging deployment's
//! records; plans carry it ([`PromotionProof`]) and the executor proves it
//! again at apply time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{DeploymentId, ImageId, PoolId, ReleaseLabel, RoleName};
use crate::time::{human, Timestamp};

/// Where a deployment's releases must have proven themselves first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionRule {
    /// The staging deployment (its environment is not production and is
    /// marked production-like).
    pub from: DeploymentId,
    /// How long the image must have been live and healthy there.
    pub soak: Duration,
}

/// The proof that an image served in staging long enough: recorded in the
/// plan, shown by the dry run, checked again when the plan is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionProof {
    /// The staging deployment.
    pub from: DeploymentId,
    /// The role.
    pub role: RoleName,
    /// The image that served there (the same as the one to go live).
    pub image: ImageId,
    /// The staging release that carried it.
    pub release: ReleaseLabel,
    /// The staging pool that served it.
    pub pool: PoolId,
    /// When that pool went live.
    pub live_since: Timestamp,
    /// How long it was live (until now, or until it left traffic in good
    /// order).
    pub live_for: Duration,
    /// The soak the rule requires.
    pub required: Duration,
    /// The staging release's configuration fingerprint.
    pub config_fingerprint: String,
}

impl std::fmt::Display for PromotionProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "image {} was live and healthy in {} (release {}, pool {}) for {} since {} (the rule requires {}; staging configuration {})",
            self.image,
            self.from,
            self.release,
            self.pool,
            human(self.live_for),
            self.live_since.format("%Y-%m-%d %H:%M:%S UTC"),
            human(self.required),
            self.config_fingerprint.get(..12).unwrap_or(&self.config_fingerprint),
        )
    }
}
