//! What a campaign changes, where, and under which limits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{DeploymentId, EnvironmentName, ReleaseLabel, RoleName};
use crate::time::{duration_ms, Timestamp};

use super::CampaignError;

/// How each (deployment, role) moves to its target release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// A blue-green deploy: a new pool, verified, then switched to.
    #[default]
    BlueGreen,
    /// A rolling replacement of the live pool in batches.
    Rolling,
}

/// The fleet-wide replacement budget: how many servers a campaign
/// replaces at once (one wave) and per window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetBudget {
    /// Most servers replaced by one wave (at once, fleet-wide).
    pub max_in_flight: usize,
    /// Most servers replaced per `window` (waves wait for it).
    pub per_window: usize,
    /// The rate window.
    #[serde(with = "duration_ms")]
    pub window: Duration,
}

impl Default for FleetBudget {
    fn default() -> Self {
        Self {
            max_in_flight: 20,
            per_window: 100,
            window: Duration::from_secs(3600),
        }
    }
}

/// One deployment a campaign spans: its failure domain (an availability
/// zone, region or site: waves never mix two) and the release each of its
/// roles moves to. Roles not named are left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignTarget {
    /// The deployment.
    pub deployment: DeploymentId,
    /// Its failure domain.
    pub failure_domain: String,
    /// Target release per role.
    pub releases: BTreeMap<RoleName, ReleaseLabel>,
}

/// A campaign: one change rolled out across many deployments, in waves.
///
/// A new base image becomes a campaign once each deployment has a release
/// made from it ([`crate::Phoenix::create_release`]); the spec then names
/// that release per role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignSpec {
    /// Its name: the key of its durable progress (`[A-Za-z0-9._-]`).
    pub name: String,
    /// The deployments and roles it spans.
    pub targets: Vec<CampaignTarget>,
    /// Environments in rollout order (staging first). Every target's
    /// environment must be listed.
    pub environment_order: Vec<EnvironmentName>,
    /// How units move to their release.
    #[serde(default)]
    pub method: Method,
    /// The fleet-wide replacement budget.
    pub budget: FleetBudget,
    /// Share (percent) of the fleet's desired servers that must serve
    /// healthy before a wave starts and after it settles.
    pub capacity_floor_percent: u8,
    /// When the campaign must be done.
    pub deadline: Timestamp,
    /// Servers older than this are reported as aged.
    #[serde(with = "duration_ms")]
    pub max_age: Duration,
    /// How long a wave's units must stay healthy before the next wave.
    #[serde(with = "duration_ms")]
    pub wave_bake: Duration,
    /// The duration a wave is projected to take before any was observed.
    #[serde(with = "duration_ms")]
    pub wave_estimate: Duration,
}

impl CampaignSpec {
    /// A spec with the defaults: blue-green, the default budget, a 100 %
    /// floor, a 5-minute wave bake and a 30-minute wave estimate.
    pub fn new(
        name: impl Into<String>,
        environment_order: Vec<EnvironmentName>,
        deadline: Timestamp,
        max_age: Duration,
    ) -> Self {
        Self {
            name: name.into(),
            targets: Vec::new(),
            environment_order,
            method: Method::BlueGreen,
            budget: FleetBudget::default(),
            capacity_floor_percent: 100,
            deadline,
            max_age,
            wave_bake: Duration::from_secs(300),
            wave_estimate: Duration::from_secs(1800),
        }
    }

    /// Adds a deployment moving every listed role to `release`.
    pub fn target(
        mut self,
        deployment: DeploymentId,
        failure_domain: impl Into<String>,
        roles: impl IntoIterator<Item = RoleName>,
        release: &ReleaseLabel,
    ) -> Self {
        self.targets.push(CampaignTarget {
            deployment,
            failure_domain: failure_domain.into(),
            releases: roles.into_iter().map(|r| (r, release.clone())).collect(),
        });
        self
    }

    /// Checks the spec on its own (before reading anything).
    pub fn validate(&self) -> Result<(), CampaignError> {
        let bad = |why: String| Err(CampaignError::InvalidSpec(why));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return bad(format!(
                "campaign name {:?} must be non-empty [A-Za-z0-9._-]",
                self.name
            ));
        }
        if self.targets.is_empty() {
            return bad("the campaign names no deployment".into());
        }
        let mut seen = BTreeSet::new();
        for t in &self.targets {
            if !seen.insert(&t.deployment) {
                return bad(format!("deployment {} is listed twice", t.deployment));
            }
            if t.releases.is_empty() {
                return bad(format!("deployment {} names no role", t.deployment));
            }
            if t.failure_domain.trim().is_empty() {
                return bad(format!("deployment {} has no failure domain", t.deployment));
            }
        }
        if self.environment_order.is_empty() {
            return bad("the environment order is empty".into());
        }
        if self.capacity_floor_percent > 100 {
            return bad(format!(
                "capacity floor {}% is above 100%",
                self.capacity_floor_percent
            ));
        }
        if self.budget.max_in_flight == 0 || self.budget.per_window == 0 {
            return bad("the replacement budget allows no replacement".into());
        }
        if self.budget.window.is_zero() {
            return bad("the replacement budget's window is zero".into());
        }
        if self.max_age.is_zero() {
            return bad("max_age is zero".into());
        }
        Ok(())
    }

    /// A stable fingerprint of the spec: a resumed campaign must run the
    /// spec it started with.
    pub fn fingerprint(&self) -> String {
        crate::fingerprint_of(&serde_json::to_string(self).unwrap_or_default())
    }
}
