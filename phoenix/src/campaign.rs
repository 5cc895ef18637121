//! Fleet campaigns from a campaign file: one release rolled out across the
//! deployments of a `phoenix.toml` in waves (see [`phoenix_core::campaign`]),
//! each (deployment, role) operated through its own composed [`Stack`].
//!
//! ```toml
//! name = "base-image-2026-12"     # the key of its progress in the state store
//! release = "v2"                  # every role's target, unless a deployment says otherwise
//! environments = ["staging", "prod"]   # rollout order: staging first
//! deadline = "2026-12-31T00:00:00Z"    # RFC 3339
//! max_age = "14days"
//! capacity_floor = 100            # percent of the fleet that must serve healthy
//! wave_bake = "5m"                # default 5m
//! wave_estimate = "30m"           # projection before any wave ran (default 30m)
//! method = "blue-green"           # or "rolling"
//!
//! [budget]
//! max_in_flight = 4               # servers replaced by one wave
//! per_window = 20                 # servers replaced per window
//! window = "1h"
//!
//! [deployments.shop]
//! domain = "az-a"                 # failure domain: waves never mix two
//! roles = ["web"]                 # default: every role phoenix.toml declares
//! release = "v3"                  # default: the campaign's
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use phoenix_core::campaign::{CampaignSpec, FleetBudget, Method, Operators};
use phoenix_core::id::{DeploymentId, EnvironmentName, ReleaseLabel, RoleName};
use phoenix_core::Phoenix;
use serde::Deserialize;

use crate::file::{HumanDuration, Name, StackFile};
use crate::{Stack, StackFileError, StackSelect};

/// A campaign file, parsed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CampaignFile {
    /// Its name.
    pub name: String,
    /// The target release of every role, unless a deployment names one.
    #[serde(default)]
    pub release: Option<Name<ReleaseLabel>>,
    /// Environments in rollout order.
    pub environments: Vec<Name<EnvironmentName>>,
    /// The deadline (RFC 3339).
    pub deadline: chrono::DateTime<chrono::Utc>,
    /// Servers older than this are reported.
    pub max_age: HumanDuration,
    /// Percent of the fleet that must serve healthy (default 100).
    #[serde(default = "hundred")]
    pub capacity_floor: u8,
    /// How long a wave must stay healthy (default 5m).
    #[serde(default)]
    pub wave_bake: Option<HumanDuration>,
    /// A wave's projected duration before any ran (default 30m).
    #[serde(default)]
    pub wave_estimate: Option<HumanDuration>,
    /// `blue-green` (default) or `rolling`.
    #[serde(default)]
    pub method: MethodName,
    /// The replacement budget.
    #[serde(default)]
    pub budget: BudgetSection,
    /// The deployments it spans, by name.
    pub deployments: BTreeMap<Name<DeploymentId>, TargetSection>,
}

fn hundred() -> u8 {
    100
}

/// How units move.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum MethodName {
    /// Blue-green deploys.
    #[default]
    BlueGreen,
    /// Rolling replacements.
    Rolling,
}

/// `[budget]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BudgetSection {
    /// Servers per wave (default 20).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Servers per window (default 100).
    #[serde(default)]
    pub per_window: Option<usize>,
    /// The window (default 1h).
    #[serde(default)]
    pub window: Option<HumanDuration>,
}

/// `[deployments.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TargetSection {
    /// Its failure domain.
    pub domain: String,
    /// Its roles in the campaign (default: all).
    #[serde(default)]
    pub roles: Option<Vec<Name<RoleName>>>,
    /// Its target release (default: the campaign's).
    #[serde(default)]
    pub release: Option<Name<ReleaseLabel>>,
}

/// Why a campaign file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CampaignFileError {
    /// It could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// It is not a valid campaign file.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (TOML's message names line and key).
        message: String,
    },
}

impl CampaignFile {
    /// Reads and parses a campaign file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CampaignFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| CampaignFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| CampaignFileError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The spec, against the deployments `stack` declares (`path` names the
    /// campaign file in errors).
    pub fn spec(&self, path: &Path, stack: &StackFile) -> Result<CampaignSpec, CampaignFileError> {
        let invalid = |message: String| CampaignFileError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut spec = CampaignSpec::new(
            self.name.clone(),
            self.environments.iter().map(|e| e.0.clone()).collect(),
            self.deadline,
            self.max_age.0,
        );
        spec.capacity_floor_percent = self.capacity_floor;
        if let Some(d) = self.wave_bake {
            spec.wave_bake = d.0;
        }
        if let Some(d) = self.wave_estimate {
            spec.wave_estimate = d.0;
        }
        spec.method = match self.method {
            MethodName::BlueGreen => Method::BlueGreen,
            MethodName::Rolling => Method::Rolling,
        };
        let default = FleetBudget::default();
        spec.budget = FleetBudget {
            max_in_flight: self.budget.max_in_flight.unwrap_or(default.max_in_flight),
            per_window: self.budget.per_window.unwrap_or(default.per_window),
            window: self.budget.window.map_or(default.window, |w| w.0),
        };
        for (name, t) in &self.deployments {
            let declared = stack.deployments.get(name).ok_or_else(|| {
                invalid(format!(
                    "deployments.{}: not declared in the phoenix.toml",
                    name.0
                ))
            })?;
            let release = t
                .release
                .as_ref()
                .or(self.release.as_ref())
                .ok_or_else(|| {
                    invalid(format!(
                        "deployments.{}: no release (set `release` for the campaign or the deployment)",
                        name.0
                    ))
                })?;
            let roles: Vec<RoleName> = match &t.roles {
                Some(roles) => roles.iter().map(|r| r.0.clone()).collect(),
                None => declared.roles.keys().map(|r| r.0.clone()).collect(),
            };
            for r in &roles {
                if !declared.roles.contains_key(&Name(r.clone())) {
                    return Err(invalid(format!(
                        "deployments.{}.roles: {r} is not a role of the deployment",
                        name.0
                    )));
                }
            }
            spec = spec.target(name.0.clone(), t.domain.clone(), roles, &release.0);
        }
        spec.validate().map_err(|e| invalid(e.to_string()))?;
        Ok(spec)
    }
}

/// A stack per (deployment, role) of a campaign: each unit is operated
/// through its own provider and balancer, all sharing the file's state
/// store.
#[derive(Debug)]
pub struct FleetStacks {
    stacks: Vec<((DeploymentId, RoleName), Stack)>,
}

impl FleetStacks {
    /// Composes every unit of `spec` from the `phoenix.toml` at `path`
    /// (`base` gives the holder, the lease wait and read-only; its
    /// deployment and role are ignored).
    pub async fn open(
        path: &Path,
        spec: &CampaignSpec,
        base: &StackSelect,
    ) -> Result<Self, StackFileError> {
        let mut stacks = Vec::new();
        for t in &spec.targets {
            for role in t.releases.keys() {
                let mut select = base.clone();
                select.deployment = Some(t.deployment.to_string());
                select.role = Some(role.to_string());
                let stack = Stack::open(path, select).await?;
                stacks.push(((t.deployment.clone(), role.clone()), stack));
            }
        }
        Ok(Self { stacks })
    }

    /// Every stack, with its unit.
    pub fn stacks(&self) -> impl Iterator<Item = (&(DeploymentId, RoleName), &Stack)> {
        self.stacks.iter().map(|(k, s)| (k, s))
    }

    /// The Phoenix the campaign's own records go through (the first
    /// unit's), if there is a unit.
    pub fn home(&self) -> Option<&Phoenix> {
        self.stacks.first().map(|(_, s)| s.phoenix())
    }
}

impl Operators for FleetStacks {
    fn for_unit(&self, deployment: &DeploymentId, role: &RoleName) -> Option<&Phoenix> {
        self.stacks
            .iter()
            .find(|((d, r), _)| d == deployment && r == role)
            .map(|(_, s)| s.phoenix())
    }
}
