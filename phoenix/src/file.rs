//! `phoenix.toml`: deployments, environments, roles, providers, balancers,
//! the state store, the configuration directory and the policy, in one
//! file that [`crate::Stack::from_file`] composes.
//!
//! ```toml
//! state = "sqlite://.phoenix/state.sqlite"  # default: sqlite in `workdir`
//! workdir = ".phoenix"                     # default: `.phoenix` beside this file
//! config = "config"                        # a phoenix-config directory (optional)
//!
//! [policy]
//! preset = "local"           # "production" (default) or "local" (Policy::local)
//! bake_time = "2s"           # human durations: "500ms", "2m", "1h 30m"
//! drain = "1s"
//! batch_size = 2
//! min_healthy = "100%"       # or a count: 2
//! keep = 1
//!
//! [environments.dev]
//! production = false
//! production_like = false    # configured like production: a staging to promote from
//!
//! [providers.laptop]
//! kind = "local"             # local | openstack | aws | vsphere
//!
//! [balancers.front]
//! kind = "embedded"          # embedded | haproxy | rackspace | octavia | elbv2 | floating_ip | elastic_ip
//! listen = "127.0.0.1:0"
//!
//! [deployments.shop]
//! environment = "dev"
//! provider = "laptop"
//! # promote_from = "shop-staging"  # releases go live here only after their
//! # soak = "2h"                    # images served there this long (default 1h)
//!
//! [deployments.shop.roles.web]
//! desired = 2
//! port = 8080
//! balancer = "front"
//! check = "http"             # http (health_path, smoke_path) | provider
//! ```
//!
//! Every table refuses keys it does not know; a bad duration, a bad name
//! or a reference to an undeclared environment, provider or balancer is an
//! error that names the file, the line and the key ([`FileError`]).
//!
//! Providers read their ecosystem's own settings: `openstack` a
//! `clouds.yaml` entry (`cloud = "…"`) or the `OS_*` variables; `aws` a
//! profile (`profile`, `region`) through AWS's default credential chain;
//! `vsphere` the `GOVC_*` variables (`folder`, `clone = "linked"` and, for
//! govmomi's simulator only, `simulator = true` refine them).
//!
//! # Policy defaults
//!
//! With `preset = "production"` (the default) every key not given is as
//! in [`Policy::default`]: batches of 1, surge 1, `min_healthy` 100%,
//! `bake_time` 5m, `drain` 5m, `progress_deadline` 30m, `keep` 1, `hot`
//! 1, `max_age` 7 days, auto rollback. `preset = "local"` starts from
//! [`Policy::local`] instead (2 s bakes and drains, whole-pool batches).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use phoenix_core::id::{DeploymentId, EnvironmentName, RoleName};
use phoenix_core::policy::{Capacity, Policy};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

/// A `phoenix.toml`, parsed and checked. Its `Debug` hides any password
/// in the state URL.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StackFile {
    /// The state store's URL (`sqlite://PATH`, `postgres://…`).
    #[serde(default)]
    pub state: Option<String>,
    /// The working directory (local images, servers, default state),
    /// relative to the file's directory.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// The phoenix-config directory, relative to the file's directory.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// The policy of plans.
    #[serde(default)]
    pub policy: PolicySection,
    /// Environments by name.
    #[serde(default)]
    pub environments: BTreeMap<Name<EnvironmentName>, EnvironmentSection>,
    /// Providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSection>,
    /// Balancers by name.
    #[serde(default)]
    pub balancers: BTreeMap<String, BalancerSection>,
    /// Deployments by name.
    pub deployments: BTreeMap<Name<DeploymentId>, DeploymentSection>,
    /// Prices per flavor, for what rollback capacity costs.
    #[serde(default)]
    pub prices: Option<crate::prices::PricesSection>,
}

impl fmt::Debug for StackFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackFile")
            .field(
                "state",
                &self.state.as_deref().map(crate::redact::redact_url),
            )
            .field("workdir", &self.workdir)
            .field("config", &self.config)
            .field("policy", &self.policy)
            .field("environments", &self.environments)
            .field("providers", &self.providers)
            .field("balancers", &self.balancers)
            .field("deployments", &self.deployments)
            .field("prices", &self.prices)
            .finish()
    }
}

/// A name checked as a Phoenix id (`[a-z0-9-]`, …).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Name<T>(pub T);

impl<'de, T> Deserialize<'de> for Name<T>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map(Name)
            .map_err(|e| de::Error::custom(format!("invalid name {s:?}: {e}")))
    }
}

/// An environment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EnvironmentSection {
    /// Production: certified images only, whatever the policy says.
    #[serde(default)]
    pub production: bool,
    /// Configured like production (the same base and role layers,
    /// production-sized roles): releases that served here can be promoted
    /// to a deployment whose `promote_from` names one of its deployments.
    #[serde(default)]
    pub production_like: bool,
}

/// A deployment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DeploymentSection {
    /// Its environment (declared under `[environments]`, or `local`).
    pub environment: Spanned<String>,
    /// The provider its servers run on.
    pub provider: Spanned<String>,
    /// Its roles.
    pub roles: BTreeMap<Name<RoleName>, RoleSection>,
    /// The staging deployment (in a production-like environment) where a
    /// release's images must have served before they go live here.
    #[serde(default)]
    pub promote_from: Option<Spanned<String>>,
    /// How long they must have served there (default 1h).
    #[serde(default)]
    pub soak: Option<HumanDuration>,
}

/// A role of a deployment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RoleSection {
    /// Desired number of serving servers (at least 1).
    #[serde(deserialize_with = "at_least_one")]
    pub desired: usize,
    /// The port its service listens on.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The provider's size (flavor, instance type).
    #[serde(default)]
    pub flavor: Option<String>,
    /// The balancer it serves behind.
    pub balancer: Spanned<String>,
    /// How a cloud provider's new servers are checked before they serve
    /// (default `http`). The local provider checks its own servers.
    #[serde(default)]
    pub check: CheckKind,
    /// The health check's path for `check = "http"` (default `/health`).
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// The smoke test's path for `check = "http"` (default `/`).
    #[serde(default = "default_smoke_path")]
    pub smoke_path: String,
}

/// How new servers are checked before they serve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckKind {
    /// `GET health_path` and `GET smoke_path` on the server, expecting
    /// 2xx.
    #[default]
    Http,
    /// The provider reports the server running. Only where the balancer
    /// gates traffic on its own health checks (ELBv2, Octavia, Rackspace
    /// CLB), or against an emulator whose servers run nothing.
    Provider,
}

fn default_health_path() -> String {
    "/health".into()
}

fn default_smoke_path() -> String {
    "/".into()
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(de::Error::custom("must be at least 1")),
        n => Ok(n),
    }
}

fn default_port() -> u16 {
    8080
}

/// A provider of servers and images, by kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ProviderSection {
    /// Processes on this machine from content-addressed images.
    Local {
        /// The program baked into images (default: the `phoenix` command
        /// itself, which serves the demo app).
        #[serde(default)]
        app: Option<PathBuf>,
    },
    /// OpenStack (Nova, Glance), or Rackspace.
    Openstack {
        /// The `clouds.yaml` entry; without it the `OS_*` variables.
        #[serde(default)]
        cloud: Option<String>,
        /// The network servers join.
        #[serde(default)]
        network: Option<String>,
        /// Where images are read: `glance` (default) or `nova` (the Nova
        /// images API, for clouds without Glance, such as Rackspace).
        #[serde(default)]
        images: ImagesApi,
        /// Write lifecycle properties on images (default true; false where
        /// the account cannot tag them, such as public base images).
        #[serde(default = "yes")]
        tag_images: bool,
    },
    /// AWS EC2 and AMIs.
    Aws {
        /// The profile (`~/.aws/config`); without it `AWS_PROFILE` or
        /// `default`.
        #[serde(default)]
        profile: Option<String>,
        /// The region; without it the profile's or `AWS_REGION`.
        #[serde(default)]
        region: Option<String>,
        /// Subnet of new instances.
        #[serde(default)]
        subnet: Option<String>,
        /// Security groups of new instances.
        #[serde(default)]
        security_groups: Vec<String>,
    },
    /// VMware vSphere, from the `GOVC_*` variables.
    Vsphere {
        /// The VM folder new VMs go to; without it `GOVC_FOLDER`, else
        /// the datacenter's VM folder.
        #[serde(default)]
        folder: Option<String>,
        /// `full` copies (default) or `linked` clones of the template's
        /// current snapshot.
        #[serde(default)]
        clone: CloneKind,
        /// The peer is vcsim (govmomi's simulator), not vCenter: VMs get
        /// stand-in guest addresses and polling reads whole settings.
        /// Never on vCenter.
        #[serde(default)]
        simulator: bool,
    },
}

/// Which OpenStack API images are read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ImagesApi {
    /// Glance v2.
    #[default]
    Glance,
    /// The Nova images API.
    Nova,
}

fn yes() -> bool {
    true
}

/// How vSphere clones a template.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CloneKind {
    /// An independent copy.
    #[default]
    Full,
    /// A child disk of the template's current snapshot.
    Linked,
}

impl ProviderSection {
    /// Its kind, as written.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Local { .. } => "local",
            Self::Openstack { .. } => "openstack",
            Self::Aws { .. } => "aws",
            Self::Vsphere { .. } => "vsphere",
        }
    }
}

/// A load balancer, by kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum BalancerSection {
    /// The embedded proxy: in this process, or in `phoenix lb serve`
    /// (reached through `admin_socket`) so that it outlives the
    /// orchestrator.
    Embedded {
        /// Where it listens (port 0: any free port).
        #[serde(default = "default_listen")]
        listen: SocketAddr,
        /// The admin socket of a balancer `phoenix lb serve` runs: the
        /// command drives that balancer, which outlives it. Without it the
        /// balancer lives in the command's process, only while it runs
        /// (each command first puts the serving pool back behind it).
        #[serde(default)]
        admin_socket: Option<PathBuf>,
    },
    /// HAProxy, through its runtime API: a running one (`socket`, and
    /// `backend`), or, for the local provider, one the stack starts.
    Haproxy {
        /// Its stats socket (`level admin`), a path or `host:port`.
        #[serde(default)]
        socket: Option<String>,
        /// The backend whose servers Phoenix manages (with `socket`).
        #[serde(default)]
        backend: Option<String>,
    },
    /// Rackspace Cloud Load Balancers (the provider must be `openstack`,
    /// on Rackspace's identity).
    Rackspace {
        /// The load balancer's id.
        id: u64,
    },
    /// OpenStack Octavia.
    Octavia {
        /// The pool's id.
        pool: String,
        /// The subnet members are on (default: Octavia's choice).
        #[serde(default)]
        subnet: Option<String>,
    },
    /// AWS ELBv2: a target group, or a listener over two of them.
    Elbv2 {
        /// The target group (or the first of two).
        target_group: String,
        /// The listener switching between two groups.
        #[serde(default)]
        listener: Option<String>,
        /// The second group of a listener.
        #[serde(default)]
        standby_group: Option<String>,
    },
    /// A floating IP (OpenStack) pointed at one server.
    FloatingIp {
        /// The floating IP's id.
        id: String,
    },
    /// An Elastic IP (AWS) pointed at one server.
    ElasticIp {
        /// The allocation id.
        allocation: String,
    },
}

impl BalancerSection {
    /// Its kind, as written.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Embedded { .. } => "embedded",
            Self::Haproxy { .. } => "haproxy",
            Self::Rackspace { .. } => "rackspace",
            Self::Octavia { .. } => "octavia",
            Self::Elbv2 { .. } => "elbv2",
            Self::FloatingIp { .. } => "floating_ip",
            Self::ElasticIp { .. } => "elastic_ip",
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A duration written for people: `"500ms"`, `"2s"`, `"2m"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                de::Error::custom(format!(
                    "invalid duration {s:?}: {e} (write it like \"500ms\", \"2s\", \"2m\" or \"1h 30m\")"
                ))
            })
    }
}

/// A capacity: a count (`2`) or a percentage (`"50%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityValue(pub Capacity);

impl<'de> Deserialize<'de> for CapacityValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(usize),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(Self(Capacity::Absolute(n))),
            Raw::Text(s) => s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<u8>().ok())
                .filter(|p| *p <= 100)
                .map(|p| Self(Capacity::Percent(p)))
                .ok_or_else(|| {
                    de::Error::custom(format!(
                        "invalid capacity {s:?}: a count (2) or a percentage up to 100 (\"50%\")"
                    ))
                }),
        }
    }
}

/// Which policy the keys of `[policy]` start from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Preset {
    /// [`Policy::default`]: what production wants.
    #[default]
    Production,
    /// [`Policy::local`]: a few processes on one machine.
    Local,
}

/// `[policy]`: a preset and the keys that change it, with the names
/// operators know. Durations are human (`"2m"`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[allow(missing_docs)] // each key is the policy field of the same name
pub struct PolicySection {
    /// Which policy the other keys change.
    #[serde(default)]
    pub preset: Preset,
    pub batch_size: Option<usize>,
    pub max_surge: Option<usize>,
    pub min_healthy: Option<CapacityValue>,
    pub bake_time: Option<HumanDuration>,
    pub drain: Option<HumanDuration>,
    pub progress_deadline: Option<HumanDuration>,
    pub auto_rollback: Option<bool>,
    pub keep_failed: Option<bool>,
    pub rollback_bake: Option<HumanDuration>,
    pub concurrency: Option<usize>,
    pub server_deadline: Option<HumanDuration>,
    pub health_timeout: Option<HumanDuration>,
    pub poll_interval: Option<HumanDuration>,
    pub replace_budget: Option<usize>,
    pub require_certified: Option<bool>,
    pub keep: Option<usize>,
    pub hot: Option<usize>,
    pub max_age: Option<HumanDuration>,
    pub max_replacements: Option<usize>,
    pub refresh_window: Option<HumanDuration>,
    pub call_timeout: Option<HumanDuration>,
    /// `[policy.canary]`: the canary stage of deploys and rollouts.
    pub canary: Option<crate::canary_section::CanarySection>,
}

impl PolicySection {
    /// The policy: the preset (for `servers` per pool), then every key
    /// given.
    pub fn resolve(&self, servers: usize) -> Policy {
        let mut p = match self.preset {
            Preset::Production => Policy::default(),
            Preset::Local => Policy::local(servers),
        };
        let d = |v: Option<HumanDuration>, into: &mut Duration| {
            if let Some(HumanDuration(x)) = v {
                *into = x;
            }
        };
        let n = |v: Option<usize>, into: &mut usize| {
            if let Some(x) = v {
                *into = x;
            }
        };
        let b = |v: Option<bool>, into: &mut bool| {
            if let Some(x) = v {
                *into = x;
            }
        };
        n(self.batch_size, &mut p.rollout.batch_size);
        n(self.max_surge, &mut p.rollout.max_surge);
        if let Some(CapacityValue(c)) = self.min_healthy {
            p.rollout.min_healthy = c;
        }
        d(self.bake_time, &mut p.rollout.bake_time);
        d(self.drain, &mut p.rollout.drain);
        d(self.progress_deadline, &mut p.rollout.progress_deadline);
        b(self.auto_rollback, &mut p.rollout.auto_rollback);
        b(self.keep_failed, &mut p.rollout.keep_failed);
        d(self.rollback_bake, &mut p.rollout.rollback_bake);
        n(self.concurrency, &mut p.provision.concurrency);
        d(self.server_deadline, &mut p.provision.server_deadline);
        d(self.health_timeout, &mut p.provision.health_timeout);
        d(self.poll_interval, &mut p.provision.poll_interval);
        n(self.replace_budget, &mut p.provision.replace_budget);
        b(self.require_certified, &mut p.provision.require_certified);
        n(self.keep, &mut p.retention.keep);
        n(self.hot, &mut p.retention.hot);
        d(self.max_age, &mut p.refresh.max_age);
        n(self.max_replacements, &mut p.refresh.max_replacements);
        d(self.refresh_window, &mut p.refresh.window);
        d(self.call_timeout, &mut p.calls.timeout);
        if let Some(canary) = &self.canary {
            p.canary = Some(canary.resolve());
        }
        p
    }
}

/// Why a `phoenix.toml` was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// It could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// It is not valid: bad TOML, an unknown key, a bad value, a missing
    /// key or a reference to something undeclared.
    #[error("{}:{line}:{column}: {key}: {message}", path.display(), key = if key.is_empty() { "(top level)" } else { key })]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// The column (1-based).
        column: usize,
        /// The key, as a dotted path (`deployments.shop.roles.web.desired`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Line and column (1-based) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

impl StackFile {
    /// Reads and checks a `phoenix.toml`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, FileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks the text of a `phoenix.toml` (`path` names it in
    /// errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, FileError> {
        let invalid = |offset: Option<usize>, key: String, message: String| {
            let (line, column) = offset.map_or((1, 1), |o| position(text, o));
            FileError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                key,
                message,
            }
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| invalid(e.span().map(|s| s.start), String::new(), e.message().into()))?;
        let file: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let key = if key == "." { String::new() } else { key };
            invalid(
                inner.span().map(|s| s.start),
                key,
                inner.message().trim().to_owned(),
            )
        })?;
        file.check(&invalid)?;
        Ok(file)
    }

    fn check(
        &self,
        invalid: &dyn Fn(Option<usize>, String, String) -> FileError,
    ) -> Result<(), FileError> {
        if self.deployments.is_empty() {
            return Err(invalid(
                None,
                "deployments".into(),
                "declare at least one deployment".into(),
            ));
        }
        for (name, d) in &self.deployments {
            let at = |key: &str| format!("deployments.{}.{key}", name.0);
            let env = d.environment.get_ref();
            if !self.environments.keys().any(|e| e.0.as_str() == env) && env != "local" {
                return Err(invalid(
                    Some(d.environment.span().start),
                    at("environment"),
                    format!(
                        "no environment {env:?} is declared (add [environments.{env}]); declared: {}",
                        list(self.environments.keys().map(|e| e.0.as_str()))
                    ),
                ));
            }
            let provider = d.provider.get_ref();
            if !self.providers.contains_key(provider) {
                return Err(invalid(
                    Some(d.provider.span().start),
                    at("provider"),
                    format!(
                        "no provider {provider:?} is declared (add [providers.{provider}]); declared: {}",
                        list(self.providers.keys().map(String::as_str))
                    ),
                ));
            }
            if let Some(from) = &d.promote_from {
                let staging = from.get_ref();
                let declared = self
                    .deployments
                    .iter()
                    .find(|(k, _)| k.0.as_str() == staging);
                let reason = match declared {
                    None => Some(format!(
                        "no deployment {staging:?} is declared; declared: {}",
                        list(self.deployments.keys().map(|k| k.0.as_str()))
                    )),
                    Some((k, _)) if k == name => {
                        Some("a deployment cannot be promoted from itself".into())
                    }
                    Some((_, s)) => {
                        let env = s.environment.get_ref();
                        let e = self.environments.iter().find(|(k, _)| k.0.as_str() == env);
                        match e {
                            Some((_, e)) if e.production => {
                                Some(format!("{staging:?} is in production environment {env:?}"))
                            }
                            Some((_, e)) if !e.production_like => Some(format!(
                                "{staging:?} is in environment {env:?}, which is not marked production_like = true"
                            )),
                            Some(_) => None,
                            None => Some(format!("{staging:?} is in no declared environment")),
                        }
                    }
                };
                if let Some(reason) = reason {
                    return Err(invalid(Some(from.span().start), at("promote_from"), reason));
                }
            }
            if d.roles.is_empty() {
                return Err(invalid(
                    Some(d.provider.span().start),
                    at("roles"),
                    "declare at least one role".into(),
                ));
            }
            for (role, r) in &d.roles {
                let lb = r.balancer.get_ref();
                if !self.balancers.contains_key(lb) {
                    return Err(invalid(
                        Some(r.balancer.span().start),
                        at(&format!("roles.{}.balancer", role.0)),
                        format!(
                            "no balancer {lb:?} is declared (add [balancers.{lb}]); declared: {}",
                            list(self.balancers.keys().map(String::as_str))
                        ),
                    ));
                }
            }
        }
        if let Some(prices) = &self.prices {
            prices
                .table()
                .validate()
                .map_err(|e| invalid(None, format!("prices.{}", e.what), e.why))?;
        }
        let policy = self.policy.resolve(1);
        policy
            .validate()
            .map_err(|e| invalid(None, format!("policy.{}", e.field), e.reason))?;
        Ok(())
    }
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = names.collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[policy]
preset = "local"
bake_time = "1s"
min_healthy = "50%"

[providers.laptop]
kind = "local"

[balancers.front]
kind = "embedded"

[environments.dev]

[deployments.shop]
environment = "dev"
provider = "laptop"

[deployments.shop.roles.web]
desired = 2
balancer = "front"
"#;

    fn err(text: &str) -> String {
        match StackFile::parse(Path::new("phoenix.toml"), text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn debug_hides_the_state_password() {
        let text = format!("state = \"postgres://phoenix:hunter2@db/phoenix\"\n{GOOD}");
        let f = StackFile::parse(Path::new("phoenix.toml"), &text).unwrap();
        let shown = format!("{f:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://phoenix:***@db/phoenix"),
            "{shown}"
        );
    }

    #[test]
    fn a_good_file_resolves_its_policy() {
        let f = StackFile::parse(Path::new("phoenix.toml"), GOOD).unwrap();
        let p = f.policy.resolve(2);
        assert_eq!(p.rollout.bake_time, Duration::from_secs(1));
        assert_eq!(p.rollout.min_healthy, Capacity::Percent(50));
        assert_eq!(p.rollout.batch_size, 2, "the local preset batches the pool");
        assert_eq!(p.rollout.drain, Duration::from_secs(2));
        assert!(p.canary.is_none(), "no canary unless asked");
        let text = format!("{GOOD}\n[policy.canary]\nwindow = \"30s\"\nmax_error_rate = \"2%\"\n");
        let f = StackFile::parse(Path::new("phoenix.toml"), &text).unwrap();
        let canary = f.policy.resolve(2).canary.expect("[policy.canary]");
        assert_eq!(canary.window, Duration::from_secs(30));
        assert!((canary.max_error_rate - 0.02).abs() < 1e-9);
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let text = GOOD.replace("desired = 2", "desired = 2\ndesird = 3");
        let e = err(&text);
        assert!(e.starts_with("phoenix.toml:21:"), "{e}");
        assert!(e.contains("deployments.shop.roles.web"), "{e}");
        assert!(e.contains("desird"), "{e}");
    }

    #[test]
    fn a_bad_duration_names_its_line() {
        let e = err(&GOOD.replace("\"1s\"", "\"2 fortnights\""));
        assert!(e.starts_with("phoenix.toml:4:"), "{e}");
        assert!(e.contains("policy.bake_time"), "{e}");
        assert!(e.contains("invalid duration"), "{e}");
    }

    #[test]
    fn a_missing_reference_names_what_is_declared() {
        let e = err(&GOOD.replace("balancer = \"front\"", "balancer = \"back\""));
        assert!(e.starts_with("phoenix.toml:21:"), "{e}");
        assert!(e.contains("deployments.shop.roles.web.balancer"), "{e}");
        assert!(e.contains("declared: front"), "{e}");
        let e = err(&GOOD.replace("provider = \"laptop\"", "provider = \"cloud\""));
        assert!(e.starts_with("phoenix.toml:17:"), "{e}");
    }

    #[test]
    fn promotion_names_a_production_like_staging_deployment() {
        let staged = format!(
            "{GOOD}\n[environments.staging]\nproduction_like = true\n\n[deployments.shop-staging]\nenvironment = \"staging\"\nprovider = \"laptop\"\n\n[deployments.shop-staging.roles.web]\ndesired = 2\nbalancer = \"front\"\n"
        )
        .replace(
            "environment = \"dev\"\nprovider = \"laptop\"\n",
            "environment = \"dev\"\nprovider = \"laptop\"\npromote_from = \"shop-staging\"\nsoak = \"2h\"\n",
        );
        let f = StackFile::parse(Path::new("phoenix.toml"), &staged).unwrap();
        let shop = "shop".parse().unwrap();
        let d = crate::stack::definition(&f, &shop).unwrap();
        let rule = d.promotion.expect("the rule is in the definition");
        assert_eq!(rule.from.as_str(), "shop-staging");
        assert_eq!(rule.soak, Duration::from_secs(7200));
        let staging = crate::stack::definition(&f, &"shop-staging".parse().unwrap()).unwrap();
        assert!(staging.environment.production_like && staging.promotion.is_none());

        let e = err(&staged.replace("production_like = true", "production_like = false"));
        assert!(e.starts_with("phoenix.toml:18:"), "{e}");
        assert!(e.contains("deployments.shop.promote_from"), "{e}");
        assert!(e.contains("not marked production_like"), "{e}");
        let e = err(&staged.replace(
            "promote_from = \"shop-staging\"",
            "promote_from = \"shop-stagin\"",
        ));
        assert!(
            e.contains("no deployment \"shop-stagin\" is declared"),
            "{e}"
        );
        let e = err(&staged.replace("promote_from = \"shop-staging\"", "promote_from = \"shop\""));
        assert!(e.contains("cannot be promoted from itself"), "{e}");
    }

    #[test]
    fn zero_servers_names_the_line() {
        let e = err(&GOOD.replace("desired = 2", "desired = 0"));
        assert!(e.starts_with("phoenix.toml:20:"), "{e}");
        assert!(
            e.contains("deployments.shop.roles.web.desired: must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_kind_is_refused() {
        let e = err(&GOOD.replace("kind = \"local\"", "kind = \"mainframe\""));
        assert!(e.contains("providers.laptop"), "{e}");
        assert!(e.contains("mainframe"), "{e}");
    }

    #[test]
    fn bad_toml_names_its_line() {
        let e = err(&GOOD.replace("[environments.dev]", "[environments.dev"));
        assert!(e.starts_with("phoenix.toml:13:"), "{e}");
    }
}
