use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::{DeploymentId, ImageId, ReleaseLabel, RoleName};
use crate::time::Timestamp;

/// An immutable label that fixes the image of every role and the
/// fingerprint of the rendered configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The label, such as a pipeline label.
    pub label: ReleaseLabel,
    /// The deployment it belongs to.
    pub deployment: DeploymentId,
    /// The image of each role.
    pub images: BTreeMap<RoleName, ImageId>,
    /// Fingerprint of the rendered, non-secret configuration plus secret
    /// identities and versions (never values).
    pub config_fingerprint: String,
    /// When it was recorded.
    pub created_at: Timestamp,
}

impl Release {
    /// True when two records describe the same release content; the
    /// creation time does not matter.
    pub fn same_content(&self, other: &Release) -> bool {
        self.label == other.label
            && self.deployment == other.deployment
            && self.images == other.images
            && self.config_fingerprint == other.config_fingerprint
    }

    /// The image of a role.
    pub fn image_for(&self, role: &RoleName) -> Option<&ImageId> {
        self.images.get(role)
    }
}
