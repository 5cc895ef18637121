//! The set of ports one Phoenix instance drives.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::id::RoleName;
use crate::ports::{BootConfig, Compute, Images, LoadBalancer, Probe, ServerHooks, StateStore};

/// Balancers by role, with an optional default for roles not named, and
/// the other balancers the deployment's servers may serve behind.
///
/// "Serving" means serving behind any balancer Phoenix knows: the guards
/// that stop or terminate a server read every one of them, so a server
/// still behind a balancer its role moved away from, or behind a floating
/// IP next to the balancer, is never terminated.
#[derive(Clone, Default)]
pub struct Balancers {
    by_role: BTreeMap<RoleName, Arc<dyn LoadBalancer>>,
    default: Option<Arc<dyn LoadBalancer>>,
    watched: Vec<Arc<dyn LoadBalancer>>,
}

impl fmt::Debug for Balancers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancers")
            .field("roles", &self.by_role.keys().collect::<Vec<_>>())
            .field("default", &self.default.is_some())
            .field("watched", &self.watched.len())
            .finish()
    }
}

impl Balancers {
    /// One balancer for every role.
    pub fn single(lb: Arc<dyn LoadBalancer>) -> Self {
        Self {
            by_role: BTreeMap::new(),
            default: Some(lb),
            watched: Vec::new(),
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

    /// Adds a balancer that Phoenix never changes but whose members may
    /// serve the deployment's servers (a floating IP, a second listener,
    /// the balancer a role moved away from): guards read it too.
    pub fn with_watched(mut self, lb: Arc<dyn LoadBalancer>) -> Self {
        self.watched.push(lb);
        self
    }

    /// The balancer of a role.
    pub fn for_role(&self, role: &RoleName) -> Option<&Arc<dyn LoadBalancer>> {
        self.by_role.get(role).or(self.default.as_ref())
    }

    /// Every balancer Phoenix knows, each once.
    pub fn all(&self) -> Vec<Arc<dyn LoadBalancer>> {
        let mut out: Vec<Arc<dyn LoadBalancer>> = Vec::new();
        let candidates = self
            .default
            .iter()
            .chain(self.by_role.values())
            .chain(self.watched.iter());
        for lb in candidates {
            if !out.iter().any(|o| Arc::ptr_eq(o, lb)) {
                out.push(lb.clone());
            }
        }
        out
    }

    /// Every balancer Phoenix knows other than `lb`.
    pub fn others(&self, lb: &Arc<dyn LoadBalancer>) -> Vec<Arc<dyn LoadBalancer>> {
        self.all()
            .into_iter()
            .filter(|o| !Arc::ptr_eq(o, lb))
            .collect()
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
    /// The user's canary check, if any (run by the canary gate).
    pub canary_check: Option<Arc<dyn crate::canary::CanaryCheck>>,
}

impl fmt::Debug for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ports")
            .field("compute", &self.compute.capabilities())
            .field("balancers", &self.balancers)
            .finish_non_exhaustive()
    }
}
