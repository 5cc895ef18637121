//! The set of ports one Phoenix instance drives.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::id::RoleName;
use crate::ports::{BootConfig, Compute, Images, LoadBalancer, Probe, ServerHooks, StateStore};

/// Balancers by role, with an optional default for roles not named.
#[derive(Clone, Default)]
pub struct Balancers {
    by_role: BTreeMap<RoleName, Arc<dyn LoadBalancer>>,
    default: Option<Arc<dyn LoadBalancer>>,
}

impl fmt::Debug for Balancers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancers")
            .field("roles", &self.by_role.keys().collect::<Vec<_>>())
            .field("default", &self.default.is_some())
            .finish()
    }
}

impl Balancers {
    /// One balancer for every role.
    pub fn single(lb: Arc<dyn LoadBalancer>) -> Self {
        Self {
            by_role: BTreeMap::new(),
            default: Some(lb),
        }
    }

    /// Sets the balancer of a role.
    pub fn with_role(mut self, role: RoleName, lb: Arc<dyn LoadBalancer>) -> Self {
        self.by_role.insert(role, lb);
        self
    }

    /// Sets the balancer for roles not named.
    pub fn with_default(mut self, lb: Arc<dyn LoadBalancer>) -> Self {
        self.default = Some(lb);
        self
    }

    /// The balancer of a role.
    pub fn for_role(&self, role: &RoleName) -> Option<&Arc<dyn LoadBalancer>> {
        self.by_role.get(role).or(self.default.as_ref())
    }
}

/// Every port an orchestrator drives.
#[derive(Clone)]
pub struct Ports {
    /// Servers.
    pub compute: Arc<dyn Compute>,
    /// Images.
    pub images: Arc<dyn Images>,
    /// Balancers by role.
    pub balancers: Balancers,
    /// Boot configuration.
    pub boot: Arc<dyn BootConfig>,
    /// Health and smoke checks.
    pub probe: Arc<dyn Probe>,
    /// State.
    pub store: Arc<dyn StateStore>,
    /// Drain and warm-up hooks, if any.
    pub hooks: Option<Arc<dyn ServerHooks>>,
}

impl fmt::Debug for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ports")
            .field("compute", &self.compute.capabilities())
            .field("balancers", &self.balancers)
            .finish_non_exhaustive()
    }
}
