use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::{DeploymentId, EnvironmentName, RoleName};

/// An environment such as production or a CI environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// Its name.
    pub name: EnvironmentName,
    /// Production environments only launch certified images.
    pub production: bool,
    /// Its configuration is built like production's (the same base and
    /// role layers, production-sized roles): releases that served here
    /// may be promoted to production ([`super::PromotionRule`]).
    #[serde(default)]
    pub production_like: bool,
}

impl Environment {
    /// An environment; production or not, not marked production-like.
    pub fn new(name: EnvironmentName, production: bool) -> Self {
        Self {
            name,
            production,
            production_like: false,
        }
    }

    /// Marks it production-like.
    pub fn production_like(mut self) -> Self {
        self.production_like = true;
        self
    }
}

/// One role of a deployment: what its servers look like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Its name.
    pub name: RoleName,
    /// Desired number of serving servers.
    pub desired: usize,
    /// The provider's size for its servers (flavor, instance type).
    pub flavor: Option<String>,
    /// The port its service listens on, where the provider does not decide.
    pub port: u16,
}

impl Role {
    /// A role of `desired` servers listening on port 8080, with the
    /// provider's default size.
    pub fn new(name: RoleName, desired: usize) -> Self {
        Self {
            name,
            desired,
            flavor: None,
            port: 8080,
        }
    }

    /// The port its service listens on.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The provider's size for its servers (flavor, instance type).
    pub fn with_flavor(mut self, flavor: impl Into<String>) -> Self {
        self.flavor = Some(flavor.into());
        self
    }
}

/// A named service in an environment, with roles. It owns its pools and
/// their history (kept in the state store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// Its id.
    pub id: DeploymentId,
    /// Its environment.
    pub environment: Environment,
    /// Its roles by name.
    pub roles: BTreeMap<RoleName, Role>,
    /// Where its releases must have served first, if anywhere.
    #[serde(default)]
    pub promotion: Option<super::PromotionRule>,
}

impl Deployment {
    /// A deployment with no roles yet.
    pub fn new(id: DeploymentId, environment: Environment) -> Self {
        Self {
            id,
            environment,
            roles: BTreeMap::new(),
            promotion: None,
        }
    }

    /// Releases go live here only after their images served in `from`
    /// (a production-like staging deployment) for `soak`.
    pub fn promoted_from(mut self, from: DeploymentId, soak: std::time::Duration) -> Self {
        self.promotion = Some(super::PromotionRule { from, soak });
        self
    }

    /// Adds or replaces a role.
    pub fn with_role(mut self, role: Role) -> Self {
        self.roles.insert(role.name.clone(), role);
        self
    }
}
