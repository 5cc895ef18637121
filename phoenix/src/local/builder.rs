use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use phoenix_core::id::{DeploymentId, EnvironmentName, RoleName};
use phoenix_core::policy::Policy;
use phoenix_core::ports::{ServerHooks, StateStore};

use super::stack::{BalancerChoice, HooksChoice, LocalOptions, LocalStack};
use crate::error::StackError;

/// Opens a [`LocalStack`] step by step; made by [`crate::local()`].
///
/// Every setting has a default ([`LocalOptions::here`]): `.phoenix` in
/// the current directory, three servers, the embedded balancer on a free
/// loopback port, this program as the app, SQLite state, no configuration
/// directory, the [`Policy::local`] preset.
#[derive(Debug)]
#[must_use = "a builder does nothing until `open` is awaited"]
pub struct LocalBuilder {
    options: Result<LocalOptions, StackError>,
}

impl Default for LocalBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalBuilder {
    /// The defaults.
    pub fn new() -> Self {
        Self {
            options: LocalOptions::here(),
        }
    }

    /// Starts from these options.
    pub fn from_options(options: LocalOptions) -> Self {
        Self {
            options: Ok(options),
        }
    }

    fn set(mut self, f: impl FnOnce(&mut LocalOptions)) -> Self {
        if let Ok(o) = &mut self.options {
            f(o);
        }
        self
    }

    fn set_id<T: std::str::FromStr>(
        mut self,
        value: &str,
        f: impl FnOnce(&mut LocalOptions, T),
    ) -> Self
    where
        T::Err: std::fmt::Display,
    {
        match value.parse::<T>() {
            Ok(v) => self.set(|o| f(o, v)),
            Err(e) => {
                self.options = Err(StackError::Unexpected(format!(
                    "invalid name {value:?}: {e}"
                )));
                self
            }
        }
    }

    /// The working directory (state, images, servers).
    pub fn dir(self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        self.set(|o| o.dir = dir)
    }

    /// The binary baked into images (default: this program).
    pub fn app(self, app: impl Into<PathBuf>) -> Self {
        let app = app.into();
        self.set(|o| o.app = app)
    }

    /// Servers per pool.
    pub fn servers(self, n: usize) -> Self {
        self.set(|o| o.servers = n)
    }

    /// The embedded balancer listens here (port 0: any free port).
    pub fn listen(self, addr: SocketAddr) -> Self {
        self.set(|o| {
            let admin = match &o.balancer {
                BalancerChoice::Embedded { admin, .. } => admin.clone(),
                _ => None,
            };
            o.balancer = BalancerChoice::Embedded {
                listen: addr,
                admin,
            }
        })
    }

    /// Where the balancer runs.
    pub fn balancer(self, balancer: BalancerChoice) -> Self {
        self.set(|o| o.balancer = balancer)
    }

    /// Uses the balancer another process serves on this admin socket
    /// (`phoenix lb serve`), so that traffic outlives this orchestrator.
    pub fn remote_balancer(self, socket: impl Into<PathBuf>) -> Self {
        let socket = socket.into();
        self.set(|o| o.balancer = BalancerChoice::Remote(socket))
    }

    /// The phoenix-config directory whose configuration servers receive
    /// at boot.
    pub fn config_dir(self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        self.set(|o| o.config = Some(dir))
    }

    /// The state store's URL (`sqlite://PATH`, `postgres://…`).
    pub fn state_url(self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.set(|o| o.state = Some(url))
    }

    /// The policy of plans (default: [`Policy::local`] for the servers).
    pub fn policy(self, policy: Policy) -> Self {
        self.set(|o| o.policy = Some(policy))
    }

    /// Who this orchestrator is, in leases.
    pub fn holder(self, holder: impl Into<String>) -> Self {
        let holder = holder.into();
        self.set(|o| o.holder = holder)
    }

    /// How long the deployment lease lasts unless renewed.
    pub fn lease_ttl(self, ttl: Duration) -> Self {
        self.set(|o| o.lease_ttl = ttl)
    }

    /// How long to wait for another orchestrator's lease.
    pub fn lease_wait(self, wait: Duration) -> Self {
        self.set(|o| o.lease_wait = wait)
    }

    /// The demo app's drain and warm-up hooks ([`LocalStack::demo_hooks`]).
    pub fn demo_hooks(self) -> Self {
        self.set(|o| o.hooks = HooksChoice::Demo)
    }

    /// These drain and warm-up hooks.
    pub fn hooks(self, hooks: Arc<dyn ServerHooks>) -> Self {
        self.set(|o| o.hooks = HooksChoice::Custom(hooks))
    }

    /// A layer over the state store (to count commits, inject faults).
    pub fn store_layer(
        self,
        layer: impl Fn(Arc<dyn StateStore>) -> Arc<dyn StateStore> + Send + Sync + 'static,
    ) -> Self {
        self.set(|o| o.store_layer = Some(Arc::new(layer)))
    }

    /// The deployment's name (default `shop`).
    pub fn deployment(self, name: &str) -> Self {
        self.set_id(name, |o, v: DeploymentId| o.deployment = v)
    }

    /// The environment's name (default `local`).
    pub fn environment(self, name: &str) -> Self {
        self.set_id(name, |o, v: EnvironmentName| o.environment = v)
    }

    /// The role's name (default `web`).
    pub fn role(self, name: &str) -> Self {
        self.set_id(name, |o, v: RoleName| o.role = v)
    }

    /// The options as set so far.
    pub fn options(&self) -> Result<&LocalOptions, &StackError> {
        self.options.as_ref()
    }

    /// Opens the stack (see [`LocalStack::open`]).
    pub async fn open(self) -> Result<LocalStack, StackError> {
        LocalStack::open(self.options?).await
    }
}
