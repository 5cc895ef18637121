//! Waves: environment order first (staging before production), then one
//! failure domain at a time, each wave within the fleet budget.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::{DeploymentId, EnvironmentName, ReleaseLabel, RoleName};
use crate::model::Deployment;

use super::{CampaignError, CampaignSpec};

/// One (deployment, role) moving to its release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// The deployment.
    pub deployment: DeploymentId,
    /// The role.
    pub role: RoleName,
    /// The target release.
    pub release: ReleaseLabel,
    /// Servers it replaces (the role's desired size).
    pub servers: usize,
}

/// Units that run together: one environment, one failure domain, at most
/// the budget's servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    /// Position (0-based).
    pub index: usize,
    /// Environment.
    pub environment: EnvironmentName,
    /// Failure domain.
    pub failure_domain: String,
    /// Its units, in order.
    pub units: Vec<Unit>,
}

impl Wave {
    /// Servers it replaces.
    pub fn servers(&self) -> usize {
        self.units.iter().map(|u| u.servers).sum()
    }

    /// The deployments it touches, in order, once each.
    pub fn deployments(&self) -> Vec<&DeploymentId> {
        let mut out: Vec<&DeploymentId> = Vec::new();
        for u in &self.units {
            if !out.contains(&&u.deployment) {
                out.push(&u.deployment);
            }
        }
        out
    }
}

/// The ordered waves of a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignPlan {
    /// The campaign.
    pub name: String,
    /// The spec's fingerprint.
    pub fingerprint: String,
    /// Waves in order.
    pub waves: Vec<Wave>,
    /// Desired servers of every role of every deployment spanned (the
    /// base of the capacity floor).
    pub fleet_servers: usize,
}

impl CampaignPlan {
    /// Servers the whole campaign replaces.
    pub fn servers(&self) -> usize {
        self.waves.iter().map(Wave::servers).sum()
    }
}

impl fmt::Display for CampaignPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "campaign {}: {} wave(s), {} server(s) of a fleet of {}",
            self.name,
            self.waves.len(),
            self.servers(),
            self.fleet_servers
        )?;
        for w in &self.waves {
            let units: Vec<String> = w
                .units
                .iter()
                .map(|u| format!("{}/{}→{}", u.deployment, u.role, u.release))
                .collect();
            writeln!(
                f,
                "  wave {:>2}  {:<10} {:<10} {:>4} server(s)  {}",
                w.index,
                w.environment.as_str(),
                w.failure_domain,
                w.servers(),
                units.join(" ")
            )?;
        }
        Ok(())
    }
}

/// Plans the waves of `spec` over the definitions of its deployments
/// (as registered). Pure: nothing is read or changed.
///
/// Order: environments as `spec.environment_order` lists them; within an
/// environment, failure domains in the order the targets first name them;
/// within a domain, targets in order and roles by name. A wave never mixes
/// environments or failure domains and never exceeds
/// `min(max_in_flight, per_window)` servers; a unit larger than that is
/// refused (it could never run within the budget).
pub fn plan_waves(
    spec: &CampaignSpec,
    deployments: &[Deployment],
) -> Result<CampaignPlan, CampaignError> {
    spec.validate()?;
    let cap = spec.budget.max_in_flight.min(spec.budget.per_window);
    // (environment rank, domain rank, units)
    let mut groups: Vec<(usize, usize, EnvironmentName, String, Vec<Unit>)> = Vec::new();
    let mut domains: Vec<&str> = Vec::new();
    let mut fleet_servers = 0;
    for t in &spec.targets {
        let d = deployments
            .iter()
            .find(|d| d.id == t.deployment)
            .ok_or_else(|| CampaignError::UnknownDeployment(t.deployment.clone()))?;
        fleet_servers += d.roles.values().map(|r| r.desired).sum::<usize>();
        let env = &d.environment.name;
        let env_rank = spec
            .environment_order
            .iter()
            .position(|e| e == env)
            .ok_or_else(|| CampaignError::UnorderedEnvironment {
                deployment: d.id.clone(),
                environment: env.clone(),
            })?;
        let dom_rank = match domains.iter().position(|x| *x == t.failure_domain) {
            Some(i) => i,
            None => {
                domains.push(&t.failure_domain);
                domains.len() - 1
            }
        };
        let mut units = Vec::new();
        for (role, release) in &t.releases {
            let r = d
                .roles
                .get(role)
                .ok_or_else(|| CampaignError::UnknownRole {
                    deployment: d.id.clone(),
                    role: role.clone(),
                })?;
            if r.desired > cap {
                return Err(CampaignError::UnitTooLarge {
                    deployment: d.id.clone(),
                    role: role.clone(),
                    servers: r.desired,
                    budget: cap,
                });
            }
            units.push(Unit {
                deployment: d.id.clone(),
                role: role.clone(),
                release: release.clone(),
                servers: r.desired,
            });
        }
        match groups
            .iter_mut()
            .find(|g| g.0 == env_rank && g.1 == dom_rank)
        {
            Some(g) => g.4.extend(units),
            None => groups.push((
                env_rank,
                dom_rank,
                env.clone(),
                t.failure_domain.clone(),
                units,
            )),
        }
    }
    groups.sort_by_key(|g| (g.0, g.1));
    let mut waves: Vec<Wave> = Vec::new();
    for (_, _, env, domain, units) in groups {
        let mut current: Vec<Unit> = Vec::new();
        let mut size = 0;
        for u in units {
            if size + u.servers > cap && !current.is_empty() {
                waves.push(Wave {
                    index: waves.len(),
                    environment: env.clone(),
                    failure_domain: domain.clone(),
                    units: std::mem::take(&mut current),
                });
                size = 0;
            }
            size += u.servers;
            current.push(u);
        }
        if !current.is_empty() {
            waves.push(Wave {
                index: waves.len(),
                environment: env.clone(),
                failure_domain: domain.clone(),
                units: current,
            });
        }
    }
    Ok(CampaignPlan {
        name: spec.name.clone(),
        fingerprint: spec.fingerprint(),
        waves,
        fleet_servers,
    })
}
