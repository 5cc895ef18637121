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
}

impl Deployment {
    /// A deployment with no roles yet.
    pub fn new(id: DeploymentId, environment: Environment) -> Self {
        Self {
            id,
            environment,
            roles: BTreeMap::new(),
        }
    }

    /// Adds or replaces a role.
    pub fn with_role(mut self, role: Role) -> Self {
        self.roles.insert(role.name.clone(), role);
        self
    }
}
