use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use phoenix_core::executor::ExecError;
use phoenix_core::id::{DeploymentId, EnvironmentName, ReleaseLabel, RoleName, ServerId};
use phoenix_core::labels::LabelSelector;
use phoenix_core::model::{Deployment, Environment, Release, Role};
use phoenix_core::ops::ReconcileOptions;
use phoenix_core::policy::Policy;
use phoenix_core::ports::{Compute, Images, LoadBalancer, ServerHooks, StateStore};
use phoenix_core::Phoenix;
use phoenix_lb::embedded::EmbeddedBalancer;
#[cfg(feature = "haproxy")]
use phoenix_lb::haproxy::{LocalHaproxy, Mode, ServerCheck};
use phoenix_lb::probe::HttpProbe;
use phoenix_lb::remote::{AdminServer, RemoteBalancer};
use phoenix_providers::local::{LocalCompute, LocalImages};
use phoenix_state::hooks::{Hooks, HttpDrain, WarmUp};

use super::timing::TimedBalancer;
use crate::error::StackError;

/// The deployment the local stack runs unless told otherwise.
pub const DEPLOYMENT: &str = "shop";
/// Its environment unless told otherwise.
pub const ENVIRONMENT: &str = "local";
/// Its role unless told otherwise.
pub const ROLE: &str = "web";

/// Wraps the state store the stack opens (to count commits, inject
/// faults, trace): given the store, returns the one Phoenix uses.
pub type StoreLayer = Arc<dyn Fn(Arc<dyn StateStore>) -> Arc<dyn StateStore> + Send + Sync>;

/// Where the balancer runs.
#[derive(Clone)]
#[non_exhaustive]
pub enum BalancerChoice {
    /// This balancer, built by the caller (a HAProxy on its own stats
    /// socket, …).
    Given(Arc<dyn LoadBalancer>),
    /// In this process, listening on the address (port 0: any free port),
    /// optionally also served on an admin socket.
    Embedded {
        /// Listen address.
        listen: SocketAddr,
        /// Admin socket to serve it on, for other orchestrators.
        admin: Option<PathBuf>,
    },
    /// In another process, reached through its admin socket.
    Remote(PathBuf),
    /// A haproxy of its own (Debian's `haproxy`, or `PHOENIX_HAPROXY`),
    /// driven through its runtime API (feature `haproxy`).
    #[cfg(feature = "haproxy")]
    Haproxy,
}

impl std::fmt::Debug for BalancerChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Given(_) => f.write_str("Given(..)"),
            Self::Embedded { listen, admin } => f
                .debug_struct("Embedded")
                .field("listen", listen)
                .field("admin", admin)
                .finish(),
            Self::Remote(path) => f.debug_tuple("Remote").field(path).finish(),
            #[cfg(feature = "haproxy")]
            Self::Haproxy => f.write_str("Haproxy"),
        }
    }
}

/// Which drain and warm-up hooks the stack's Phoenix runs.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum HooksChoice {
    /// None.
    #[default]
    None,
    /// The demo app's: `POST /drain` before a server leaves, a crawl of
    /// its `/sitemap.xml` before it is attached
    /// ([`LocalStack::demo_hooks`]).
    Demo,
    /// These.
    Custom(Arc<dyn ServerHooks>),
}

impl std::fmt::Debug for HooksChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Demo => "Demo",
            Self::Custom(_) => "Custom(..)",
        })
    }
}

/// How to open the stack: every field has a default
/// ([`LocalOptions::here`]); [`crate::local()`] sets them one by one.
#[derive(Clone)]
#[non_exhaustive]
pub struct LocalOptions {
    /// The working directory (state, images, servers): `.phoenix`.
    pub dir: PathBuf,
    /// The binary baked into images (it serves the demo app when started
    /// with [`DEMO_APP_ARG`](super::DEMO_APP_ARG)): by default this
    /// program, the app-is-this-binary trick of demos and tests.
    pub app: PathBuf,
    /// The balancer.
    pub balancer: BalancerChoice,
    /// Servers per pool (the role's desired count).
    pub servers: usize,
    /// Who this orchestrator is, in leases.
    pub holder: String,
    /// The phoenix-config directory (`base.toml`, `env/`, `role/`, …);
    /// `None`: servers receive only Phoenix's identity variables.
    pub config: Option<PathBuf>,
    /// The policy of plans (default: [`Policy::local`]).
    pub policy: Option<Policy>,
    /// How long the deployment lease lasts unless renewed.
    pub lease_ttl: Duration,
    /// How long an operation waits for another orchestrator's lease (to be
    /// released, or to expire after a crash) before failing with
    /// `ExecError::Busy`.
    pub lease_wait: Duration,
    /// The state store, as a URL (`sqlite://PATH` or `postgres://…`, see
    /// [`phoenix_state::open`]); by default `state.sqlite` in `dir`.
    pub state: Option<String>,
    /// The drain and warm-up hooks.
    pub hooks: HooksChoice,
    /// A layer over the state store (see [`StoreLayer`]).
    pub store_layer: Option<StoreLayer>,
    /// The deployment's name.
    pub deployment: DeploymentId,
    /// Its environment.
    pub environment: EnvironmentName,
    /// Its role.
    pub role: RoleName,
    /// The port the role's service listens on (the local provider gives
    /// every server its own port; this is what the records say).
    pub port: u16,
    /// The deployment's whole definition, when it has more roles than
    /// `role` (by default: one role, `role`, of `servers` servers).
    pub definition: Option<Deployment>,
}

impl std::fmt::Debug for LocalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalOptions")
            .field("dir", &self.dir)
            .field("app", &self.app)
            .field("balancer", &self.balancer)
            .field("servers", &self.servers)
            .field("holder", &self.holder)
            .field("config", &self.config)
            .field(
                "state",
                &self.state.as_deref().map(crate::redact::redact_url),
            )
            .field("hooks", &self.hooks)
            .field("deployment", &self.deployment)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl LocalOptions {
    /// The defaults: `.phoenix` under the current directory, three servers,
    /// an in-process balancer on any free loopback port, this binary as the
    /// app, no configuration directory, no hooks, deployment `shop` in
    /// environment `local` with role `web`, and the state store named by
    /// `PHOENIX_STATE_URL` when it is set (SQLite in `.phoenix` otherwise).
    pub fn here() -> Result<Self, StackError> {
        let cwd = std::env::current_dir().map_err(StackError::io("cannot read", "."))?;
        let app =
            std::env::current_exe().map_err(StackError::io("cannot locate", "this program"))?;
        Ok(Self {
            dir: cwd.join(".phoenix"),
            app,
            balancer: BalancerChoice::Embedded {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                admin: None,
            },
            servers: 3,
            holder: format!("phoenix@{}", std::process::id()),
            config: None,
            policy: None,
            lease_ttl: Duration::from_secs(5),
            lease_wait: Duration::from_secs(20),
            state: std::env::var(phoenix_state::STATE_URL_ENV)
                .ok()
                .filter(|u| !u.is_empty()),
            hooks: HooksChoice::None,
            store_layer: None,
            deployment: id(DEPLOYMENT)?,
            environment: id(ENVIRONMENT)?,
            role: id(ROLE)?,
            port: 8080,
            definition: None,
        })
    }
}

/// The local stack, opened.
pub struct LocalStack {
    /// Working directory.
    pub dir: PathBuf,
    /// Phoenix over the local ports.
    pub phoenix: Phoenix,
    /// Servers.
    pub compute: Arc<LocalCompute>,
    /// Images.
    pub images: Arc<LocalImages>,
    /// The state store (with its layer, when one was given).
    pub store: Arc<dyn StateStore>,
    /// The state store as opened, under any layer.
    pub base_store: Arc<dyn StateStore>,
    /// The balancer, timed.
    pub balancer: TimedBalancer,
    /// The in-process balancer, when it is one.
    pub embedded: Option<Arc<EmbeddedBalancer>>,
    /// The admin socket served, when asked for.
    pub admin: Option<AdminServer>,
    /// The haproxy this stack started, when it uses one.
    #[cfg(feature = "haproxy")]
    pub haproxy: Option<LocalHaproxy>,
    /// The deployment.
    pub deployment: DeploymentId,
    /// The role.
    pub role: RoleName,
    /// The environment.
    pub environment: EnvironmentName,
    /// The port recorded for the role.
    pub port: u16,
    /// The deployment's whole definition, if given.
    definition: Option<Deployment>,
    /// The app binary baked into images.
    pub app: PathBuf,
    /// Servers per pool.
    pub servers: usize,
}

impl std::fmt::Debug for LocalStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStack")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn id<T: std::str::FromStr>(s: &str) -> Result<T, StackError>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e: T::Err| StackError::Unexpected(format!("invalid id {s}: {e}")))
}

impl LocalStack {
    /// The policy for a few local processes ([`Policy::local`]): fast
    /// polls, short bakes and drains, everything else as in production.
    pub fn policy(servers: usize) -> Policy {
        Policy::local(servers)
    }

    /// The demo app's hooks: `POST /drain` (its session count is the
    /// number handed over) before a server leaves, and a crawl of its
    /// `/sitemap.xml` before it takes traffic, each bounded to a couple of
    /// seconds.
    pub fn demo_hooks() -> Hooks {
        Hooks::builder()
            .drain(
                HttpDrain::post("/drain")
                    .timeout(Duration::from_secs(2))
                    .count_field("sessions"),
            )
            .warm_up(
                WarmUp::sitemap("/sitemap.xml")
                    .concurrency(4)
                    .budget(Duration::from_secs(3))
                    .request_timeout(Duration::from_secs(1)),
            )
            .connect_timeout(Duration::from_secs(1))
            .build()
    }

    /// Opens (or creates) the stack in `options.dir`, and registers its
    /// deployment (idempotent). It does not touch servers: call
    /// [`Self::restore`] to pick up where an earlier run left off.
    pub async fn open(options: LocalOptions) -> Result<Self, StackError> {
        let dir = options.dir.clone();
        std::fs::create_dir_all(&dir).map_err(StackError::io("cannot create", &dir))?;
        let base_store: Arc<dyn StateStore> = match &options.state {
            Some(url) => phoenix_state::open(url).await?,
            None => {
                phoenix_state::open(&format!("sqlite://{}", dir.join("state.sqlite").display()))
                    .await?
            }
        };
        let store = match &options.store_layer {
            Some(layer) => layer(base_store.clone()),
            None => base_store.clone(),
        };
        let compute = Arc::new(LocalCompute::builder().root(dir.join("local")).build()?);
        let images = Arc::new(LocalImages::builder().root(dir.join("local")).build()?);
        let config = Arc::new(match &options.config {
            Some(path) => phoenix_config::ConfigSet::load(path)?,
            // No directory: servers receive only Phoenix's own variables.
            None => phoenix_config::ConfigSet::from_files(
                &dir,
                [
                    ("base.toml".to_owned(), String::new()),
                    (format!("env/{}.toml", options.environment), String::new()),
                    (format!("role/{}.toml", options.role), String::new()),
                ],
            )?,
        });
        let probe = Arc::new(
            HttpProbe::builder()
                .health_path("/health")
                .smoke_path("/")
                .timeout(Duration::from_secs(2))
                .build()?,
        );
        #[cfg(feature = "haproxy")]
        let mut haproxy = None;
        let (inner, embedded, admin): (Arc<dyn LoadBalancer>, _, _) = match &options.balancer {
            BalancerChoice::Embedded { listen, admin } => {
                let lb = Arc::new(crate::embedded_balancer(*listen).await?);
                let served = match admin {
                    Some(path) => Some(phoenix_lb::remote::serve(
                        lb.clone(),
                        path,
                        phoenix_lb::remote::CancellationToken::new(),
                    )?),
                    None => None,
                };
                (lb.clone(), Some(lb), served)
            }
            BalancerChoice::Given(lb) => (lb.clone(), None, None),
            BalancerChoice::Remote(path) => {
                let lb = RemoteBalancer::connect(path).await.map_err(|source| {
                    StackError::NoBalancer {
                        socket: path.clone(),
                        source,
                    }
                })?;
                (Arc::new(lb), None, None)
            }
            #[cfg(feature = "haproxy")]
            BalancerChoice::Haproxy => {
                let local = LocalHaproxy::builder()
                    .mode(Mode::Http)
                    .check_path("/health")
                    .start()
                    .await?;
                let lb = local
                    .balancer()
                    .check(Some(ServerCheck::new(Duration::from_millis(100), 2, 2)))
                    .build()?;
                haproxy = Some(local);
                (Arc::new(lb), None, None)
            }
        };
        let balancer = TimedBalancer::new(inner);
        let mut builder = Phoenix::builder();
        match &options.hooks {
            HooksChoice::None => {}
            HooksChoice::Demo => builder = builder.hooks(Arc::new(Self::demo_hooks())),
            HooksChoice::Custom(h) => builder = builder.hooks(h.clone()),
        }
        let phoenix = builder
            .compute(compute.clone())
            .images(images.clone())
            .balancer(Arc::new(balancer.clone()))
            .boot_config(config)
            .probe(probe)
            .store(store.clone())
            .policy(
                options
                    .policy
                    .clone()
                    .unwrap_or_else(|| Self::policy(options.servers)),
            )
            .holder(options.holder.clone())
            .lease_ttl(options.lease_ttl)
            .lease_wait(options.lease_wait)
            .build()?;
        let stack = Self {
            dir,
            phoenix,
            compute,
            images,
            store,
            base_store,
            balancer,
            embedded,
            admin,
            #[cfg(feature = "haproxy")]
            haproxy,
            deployment: options.deployment,
            role: options.role,
            environment: options.environment,
            port: options.port,
            definition: options.definition,
            app: options.app,
            servers: options.servers,
        };
        stack.ensure_deployment().await?;
        Ok(stack)
    }

    /// The deployment's definition.
    pub fn definition(&self) -> Deployment {
        if let Some(d) = &self.definition {
            return d.clone();
        }
        Deployment::new(
            self.deployment.clone(),
            Environment {
                name: self.environment.clone(),
                production: false,
                production_like: false,
            },
        )
        .with_role(Role::new(self.role.clone(), self.servers).with_port(self.port))
    }

    async fn ensure_deployment(&self) -> Result<(), StackError> {
        self.phoenix.register(&self.definition()).await?;
        Ok(())
    }

    /// Where the balancer this stack runs listens (in-process or haproxy).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        let embedded = self.embedded.as_ref().map(|lb| lb.local_addr());
        #[cfg(feature = "haproxy")]
        let embedded = embedded.or_else(|| self.haproxy.as_ref().map(LocalHaproxy::frontend_addr));
        embedded
    }

    /// The next release number: one more than the highest `vN` recorded.
    pub async fn next_release_number(&self) -> Result<u32, StackError> {
        let snap = self.phoenix.snapshot(&self.deployment).await?;
        Ok(snap
            .releases
            .keys()
            .filter_map(|l| l.as_str().strip_prefix('v')?.parse::<u32>().ok())
            .max()
            .unwrap_or(0)
            + 1)
    }

    /// Bakes `label` and records it as a release (or returns the recorded
    /// one).
    pub async fn release(&self, label: &str) -> Result<Release, StackError> {
        let label: ReleaseLabel = id(label)?;
        let snap = self.phoenix.snapshot(&self.deployment).await?;
        if let Some(r) = snap.releases.get(&label) {
            return Ok(r.clone());
        }
        let image = self.bake(label.as_str()).await?;
        let mut images = BTreeMap::new();
        images.insert(self.role.clone(), image.id);
        Ok(self
            .phoenix
            .create_release(&self.deployment, label, images)
            .await?)
    }

    /// Resumes an unfinished operation (waiting up to the stack's lease
    /// wait for another orchestrator's lease, such as a dead one's, to
    /// lapse). An operation that resumes and then fails (rolled back or
    /// halted) is done with: that is not an error here.
    pub async fn resume(&self) -> Result<(), StackError> {
        match self.phoenix.resume(&self.deployment).await {
            Ok(_) | Err(ExecError::Failed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Picks up where an earlier run left off: resumes an interrupted
    /// operation, then repairs drift between the records, the processes
    /// and the balancer (a fresh in-process balancer starts empty: the
    /// live servers are put back; processes that died are recorded and
    /// replaced; orphans are removed). Returns what it found.
    pub async fn restore(&self) -> Result<String, StackError> {
        self.restore_with(ReconcileOptions {
            remove_orphans: true,
            record_missing: true,
            restore_members: true,
        })
        .await
    }

    /// [`Self::restore`] with these reconcile options.
    pub async fn restore_with(&self, options: ReconcileOptions) -> Result<String, StackError> {
        crate::restore(&self.phoenix, &self.deployment, &self.role, options).await
    }

    /// The process id of a local server, from its record.
    pub fn server_pid(&self, server: &ServerId) -> Option<i32> {
        let dir = self.compute.server_directory(server)?;
        let text = std::fs::read_to_string(dir.join("server.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("process")?
            .get("pid")?
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
    }

    /// Ends every server of the deployment, deletes its images and removes
    /// the working directory. Returns how many servers it terminated.
    pub async fn teardown(self) -> Result<usize, StackError> {
        let servers = self
            .compute
            .list(&LabelSelector::deployment(&self.deployment))
            .await?;
        for s in &servers {
            self.compute.terminate(&s.id).await?;
        }
        for image in self.images.list().await? {
            self.images.delete(&image.id).await?;
        }
        if let Some(lb) = &self.embedded {
            lb.shutdown().await;
        }
        let dir = self.dir.clone();
        #[cfg(feature = "haproxy")]
        {
            let mut this = self;
            if let Some(h) = this.haproxy.take() {
                h.stop().await?;
            }
        }
        #[cfg(not(feature = "haproxy"))]
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(StackError::io("cannot remove", &dir))?;
        Ok(servers.len())
    }
}
