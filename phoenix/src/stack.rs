//! [`Stack`]: a deployment and role of a `phoenix.toml`, composed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use phoenix_core::executor::ExecError;
use phoenix_core::id::{DeploymentId, ImageId, ReleaseLabel, RoleName};
use phoenix_core::model::{Deployment, Environment, Image, Release, Role};
use phoenix_core::ops::ReconcileOptions;
use phoenix_core::ports::StateStore;
use phoenix_core::Phoenix;

use phoenix_core::model::{ImageState, TestEvidence};
use phoenix_core::ports::LoadBalancer;
use phoenix_lb::remote::RemoteBalancer;

use crate::compose;
use crate::error::StackError;
use crate::file::{BalancerSection, CheckKind, FileError, StackFile};
#[cfg(feature = "local")]
use crate::local::{BalancerChoice, LocalOptions, LocalStack};

/// Why a stack could not be composed or an operation of it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackFileError {
    /// The file was refused (it names file, line and key).
    #[error(transparent)]
    File(#[from] FileError),
    /// The deployment or role asked for is not in the file.
    #[error("{file}: no {what} {name:?} (declared: {declared})", file = file.display())]
    NotDeclared {
        /// The file.
        file: PathBuf,
        /// `deployment` or `role`.
        what: &'static str,
        /// The name asked for.
        name: String,
        /// What the file declares.
        declared: String,
    },
    /// The file declares several deployments or roles and none was chosen.
    #[error("{file}: several {what}s are declared ({declared}); choose one (phoenix --{what} NAME)", file = file.display())]
    Ambiguous {
        /// The file.
        file: PathBuf,
        /// `deployment` or `role`.
        what: &'static str,
        /// What the file declares.
        declared: String,
    },
    /// This build lacks the cargo feature the file's provider or balancer
    /// needs.
    #[error("{file}: {what} {name:?} is of kind {kind}, and this phoenix was built without feature `{feature}` (cargo install --path phoenix --features {feature})", file = file.display())]
    MissingFeature {
        /// The file.
        file: PathBuf,
        /// `provider` or `balancer`.
        what: &'static str,
        /// Its name in the file.
        name: String,
        /// Its kind.
        kind: &'static str,
        /// The feature.
        feature: &'static str,
    },
    /// A provider or balancer could not be set up from its settings
    /// (`clouds.yaml`, `OS_*`, AWS profiles, a stats socket, …).
    #[error("{file}: cannot set up {what} {name:?}", file = file.display())]
    Setup {
        /// The file.
        file: PathBuf,
        /// `provider` or `balancer`.
        what: &'static str,
        /// Its name in the file.
        name: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The provider and balancer do not go together.
    #[error("{file}: {reason}", file = file.display())]
    Unsupported {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// Opening the stack or an operation failed.
    #[error(transparent)]
    Stack(#[from] StackError),
}

impl StackFileError {
    /// The operation's error, when an operation failed (for exit statuses).
    pub fn exec(&self) -> Option<&ExecError> {
        match self {
            Self::Stack(StackError::Exec(e)) => Some(e),
            _ => None,
        }
    }
}

/// Which deployment and role of the file, and who runs.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StackSelect {
    /// The deployment (needed when the file declares several).
    pub deployment: Option<String>,
    /// The role (needed when the deployment has several).
    pub role: Option<String>,
    /// Who this orchestrator is, in leases.
    pub holder: Option<String>,
    /// How long to wait for another orchestrator's lease.
    pub lease_wait: Option<Duration>,
    /// The program a local provider bakes (default: this program).
    pub app: Option<PathBuf>,
    /// Only the records will be read (status, history, reports): a
    /// balancer served by another process is not needed then, and an
    /// idle in-process one stands in for it.
    pub read_only: bool,
}

/// A deployment and role of a `phoenix.toml`, composed: its provider,
/// balancer, state store, configuration and policy.
#[derive(Debug)]
pub struct Stack {
    file: StackFile,
    path: PathBuf,
    workdir: PathBuf,
    deployment: DeploymentId,
    role: RoleName,
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    #[cfg(feature = "local")]
    Local(Box<LocalStack>),
    Cloud(Box<CloudStack>),
}

/// A cloud provider's stack.
struct CloudStack {
    phoenix: Phoenix,
    store: Arc<dyn StateStore>,
    kind: &'static str,
}

impl std::fmt::Debug for CloudStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudStack")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

fn choose<'a, K: Ord + 'a>(
    path: &Path,
    what: &'static str,
    keys: impl Iterator<Item = (&'a K, String)>,
    wanted: Option<&str>,
) -> Result<&'a K, StackFileError> {
    let keys: Vec<(&K, String)> = keys.collect();
    let declared = keys
        .iter()
        .map(|(_, n)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    match wanted {
        Some(w) => keys
            .iter()
            .find(|(_, n)| n == w)
            .map(|(k, _)| *k)
            .ok_or_else(|| StackFileError::NotDeclared {
                file: path.to_path_buf(),
                what,
                name: w.to_owned(),
                declared,
            }),
        None if keys.len() == 1 => Ok(keys[0].0),
        None => Err(StackFileError::Ambiguous {
            file: path.to_path_buf(),
            what,
            declared,
        }),
    }
}

impl Stack {
    /// Composes the only deployment and role of a `phoenix.toml`.
    pub async fn from_file(path: impl AsRef<Path>) -> Result<Self, StackFileError> {
        Self::open(path, StackSelect::default()).await
    }

    /// Composes the chosen deployment and role of a `phoenix.toml`.
    pub async fn open(path: impl AsRef<Path>, select: StackSelect) -> Result<Self, StackFileError> {
        let path = path.as_ref().to_path_buf();
        let file = StackFile::load(&path)?;
        let dep_key = choose(
            &path,
            "deployment",
            file.deployments.keys().map(|k| (k, k.0.to_string())),
            select.deployment.as_deref(),
        )?
        .clone();
        let d = &file.deployments[&dep_key];
        let role_key = choose(
            &path,
            "role",
            d.roles.keys().map(|k| (k, k.0.to_string())),
            select.role.as_deref(),
        )?
        .clone();
        let r = &d.roles[&role_key];
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let relative = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let workdir = relative(file.workdir.as_deref().unwrap_or(Path::new(".phoenix")));
        let provider_name = d.provider.get_ref().clone();
        let balancer_name = r.balancer.get_ref().clone();
        let provider = &file.providers[&provider_name];
        let balancer = &file.balancers[&balancer_name];
        let policy = file.policy.resolve(r.desired);
        let backend = match provider {
            // Without the feature, the cloud arm refuses the section,
            // naming the feature.
            #[cfg(feature = "local")]
            crate::file::ProviderSection::Local { app } => {
                let mut o = LocalOptions::here()?;
                o.dir = workdir.clone();
                if let Some(app) = select.app.clone().or_else(|| app.as_deref().map(relative)) {
                    o.app = app;
                }
                o.servers = r.desired;
                o.port = r.port;
                o.deployment = dep_key.0.clone();
                o.role = role_key.0.clone();
                o.environment =
                    d.environment
                        .get_ref()
                        .parse()
                        .map_err(|e| StackError::InvalidName {
                            what: "environment",
                            value: d.environment.get_ref().clone(),
                            reason: format!("{e}"),
                        })?;
                o.config = file.config.as_deref().map(relative);
                o.policy = Some(policy);
                if let Some(url) = &file.state {
                    o.state = Some(url.clone());
                }
                if let Some(h) = select.holder.clone() {
                    o.holder = h;
                }
                if let Some(w) = select.lease_wait {
                    o.lease_wait = w;
                }
                o.balancer = local_balancer(&path, &balancer_name, balancer, &relative)?;
                if select.read_only {
                    // Nothing is planned or applied: no balancer is called.
                    o.balancer = BalancerChoice::Embedded {
                        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                        admin: None,
                    };
                }
                o.definition = Some(definition(&file, &dep_key.0)?);
                Backend::Local(Box::new(LocalStack::open(o).await?))
            }
            cloud => {
                let ports = compose::provider(&path, &provider_name, cloud, r).await?;
                let lb: Arc<dyn LoadBalancer> = match balancer {
                    BalancerSection::Embedded {
                        admin_socket: Some(socket),
                        ..
                    } => Arc::new(RemoteBalancer::connect(relative(socket)).await.map_err(
                        |source| StackError::NoBalancer {
                            socket: relative(socket),
                            source,
                        },
                    )?),
                    BalancerSection::Embedded { listen, .. } => {
                        Arc::new(crate::embedded_balancer(*listen).await?)
                    }
                    other => compose::balancer(&path, &balancer_name, other, Some(&ports), r.port)?,
                };
                let store = match &file.state {
                    Some(url) => phoenix_state::open(url).await.map_err(StackError::from)?,
                    None => {
                        std::fs::create_dir_all(&workdir)
                            .map_err(StackError::io("cannot create", &workdir))?;
                        phoenix_state::open(&format!(
                            "sqlite://{}",
                            workdir.join("state.sqlite").display()
                        ))
                        .await
                        .map_err(StackError::from)?
                    }
                };
                let environment = d.environment.get_ref().clone();
                let config = Arc::new(
                    match file.config.as_deref().map(relative) {
                        Some(dir) => phoenix_config::ConfigSet::load(dir),
                        None => phoenix_config::ConfigSet::from_files(
                            &workdir,
                            [
                                ("base.toml".to_owned(), String::new()),
                                (format!("env/{environment}.toml"), String::new()),
                                (format!("role/{}.toml", role_key.0), String::new()),
                            ],
                        ),
                    }
                    .map_err(StackError::from)?,
                );
                let probe: Arc<dyn phoenix_core::ports::Probe> = match r.check {
                    CheckKind::Provider => {
                        Arc::new(crate::probe::ProviderProbe::new(ports.compute.clone()))
                    }
                    _ => Arc::new(
                        phoenix_lb::probe::HttpProbe::builder()
                            .health_path(r.health_path.clone())
                            .smoke_path(r.smoke_path.clone())
                            .build()
                            .map_err(StackError::from)?,
                    ),
                };
                let mut builder = Phoenix::builder()
                    .compute(ports.compute.clone())
                    .images(ports.images.clone())
                    .balancer(lb)
                    .boot_config(config)
                    .probe(probe)
                    .store(store.clone())
                    .policy(policy)
                    .holder(
                        select
                            .holder
                            .clone()
                            .unwrap_or_else(|| format!("phoenix@{}", std::process::id())),
                    );
                if let Some(w) = select.lease_wait {
                    builder = builder.lease_wait(w);
                }
                let phoenix = builder.build().map_err(StackError::from)?;
                phoenix
                    .register(&definition(&file, &dep_key.0)?)
                    .await
                    .map_err(StackError::from)?;
                Backend::Cloud(Box::new(CloudStack {
                    phoenix,
                    store,
                    kind: cloud.kind(),
                }))
            }
        };
        Ok(Self {
            file,
            path,
            workdir,
            deployment: dep_key.0,
            role: role_key.0,
            backend,
        })
    }

    /// The file it was composed from.
    pub fn file(&self) -> &StackFile {
        &self.file
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The working directory (local images and servers, reports).
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The deployment.
    pub fn deployment(&self) -> &DeploymentId {
        &self.deployment
    }

    /// The role.
    pub fn role(&self) -> &RoleName {
        &self.role
    }

    /// Phoenix over the stack's ports.
    pub fn phoenix(&self) -> &Phoenix {
        match &self.backend {
            #[cfg(feature = "local")]
            Backend::Local(s) => &s.phoenix,
            Backend::Cloud(c) => &c.phoenix,
        }
    }

    /// The state store.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        match &self.backend {
            #[cfg(feature = "local")]
            Backend::Local(s) => &s.store,
            Backend::Cloud(c) => &c.store,
        }
    }

    /// Whether this is the local stack with its balancer in this process:
    /// that balancer starts empty, so a [`Self::restore`] must put the
    /// serving pool back behind it before anything is planned.
    pub fn local_balancer_in_process(&self) -> bool {
        match &self.backend {
            #[cfg(feature = "local")]
            Backend::Local(s) => s.embedded.is_some(),
            Backend::Cloud(_) => false,
        }
    }

    /// The local stack, when the provider is `local`.
    #[cfg(feature = "local")]
    pub fn local(&self) -> Option<&LocalStack> {
        match &self.backend {
            Backend::Local(s) => Some(s),
            Backend::Cloud(_) => None,
        }
    }

    /// Bakes an image of version `version` (not certified yet). Only the
    /// local provider bakes; cloud images come from an image pipeline
    /// (Packer, …) and are certified and released by id.
    pub async fn bake(&self, version: &str) -> Result<Image, StackFileError> {
        match &self.backend {
            #[cfg(feature = "local")]
            Backend::Local(s) => Ok(s.bake_only(version).await?),
            Backend::Cloud(c) => Err(StackFileError::Unsupported {
                file: self.path.clone(),
                reason: format!(
                    "cannot bake {version:?}: {} images are baked by an image pipeline (Packer, …): certify one with `phoenix certify IMAGE --suite NAME` and record it with `phoenix release LABEL --image IMAGE`",
                    c.kind
                ),
            }),
        }
    }

    /// Certifies an image. Without `evidence` the local provider checks
    /// the image's integrity itself and records that; with it (what a
    /// test pipeline ran against the image), the evidence is recorded and,
    /// when it passed, the image is promoted to tested and certified. A
    /// failed test is recorded and refused.
    pub async fn certify(
        &self,
        image: &ImageId,
        evidence: Option<TestEvidence>,
    ) -> Result<Image, StackFileError> {
        match (&self.backend, evidence) {
            #[cfg(feature = "local")]
            (Backend::Local(s), None) => Ok(s.certify(image).await?),
            (Backend::Cloud(c), None) => Err(StackFileError::Unsupported {
                file: self.path.clone(),
                reason: format!(
                    "certifying a {} image needs the evidence of the tests it passed (--suite NAME [--details TEXT])",
                    c.kind
                ),
            }),
            (_, Some(evidence)) => {
                let p = self.phoenix();
                let passed = evidence.passed;
                let suite = evidence.suite.clone();
                let recorded = p
                    .record_evidence(image, evidence)
                    .await
                    .map_err(StackError::from)?;
                if !passed {
                    return Err(StackError::Unexpected(format!(
                        "image {image} failed {suite}: recorded, not certified"
                    ))
                    .into());
                }
                if recorded.state == ImageState::Built {
                    p.promote(image, ImageState::Tested)
                        .await
                        .map_err(StackError::from)?;
                }
                Ok(p.promote(image, ImageState::Certified)
                    .await
                    .map_err(StackError::from)?)
            }
        }
    }

    /// Records release `label` with `image` for the role; without an
    /// image (local provider only), bakes and certifies one first. An
    /// existing release of that label is returned as it is.
    pub async fn release(
        &self,
        label: &str,
        image: Option<&ImageId>,
    ) -> Result<Release, StackFileError> {
        let Some(image) = image else {
            return match &self.backend {
                #[cfg(feature = "local")]
                Backend::Local(s) => Ok(s.release(label).await?),
                Backend::Cloud(c) => Err(StackFileError::Unsupported {
                    file: self.path.clone(),
                    reason: format!(
                        "releases on {} name their image (--image IMAGE): only the local provider bakes",
                        c.kind
                    ),
                }),
            };
        };
        let label: ReleaseLabel = crate::error::release_label(label)?;
        let p = self.phoenix();
        let snap = p
            .snapshot(&self.deployment)
            .await
            .map_err(StackError::from)?;
        if let Some(r) = snap.releases.get(&label) {
            return Ok(r.clone());
        }
        let mut images = BTreeMap::new();
        images.insert(self.role.clone(), image.clone());
        Ok(p.create_release(&self.deployment, label, images)
            .await
            .map_err(StackError::from)?)
    }

    /// Picks up after a restart: resumes an interrupted operation, repairs
    /// drift between the records, the servers and the balancer (with
    /// `remove_orphans`, unrecorded servers carrying the deployment's
    /// labels are terminated), and heals the live pool. Returns what the
    /// reconciliation found.
    pub async fn restore(&self, remove_orphans: bool) -> Result<String, StackFileError> {
        Ok(crate::restore(
            self.phoenix(),
            &self.deployment,
            &self.role,
            ReconcileOptions {
                remove_orphans,
                record_missing: true,
                restore_members: true,
            },
        )
        .await?)
    }

    /// Ends every server of the deployment and removes its images and
    /// working directory (the local provider only: on a cloud, `reap`
    /// removes what retention allows, never a serving server). Returns how
    /// many servers it terminated.
    pub async fn teardown(self) -> Result<usize, StackFileError> {
        match self.backend {
            #[cfg(feature = "local")]
            Backend::Local(s) => Ok(s.teardown().await?),
            Backend::Cloud(c) => Err(StackFileError::Unsupported {
                file: self.path,
                reason: format!(
                    "teardown is for the local stack; on {} use `phoenix reap` (it never removes a serving server)",
                    c.kind
                ),
            }),
        }
    }
}

/// The deployment the file declares (every role).
pub(crate) fn definition(
    file: &StackFile,
    deployment: &DeploymentId,
) -> Result<Deployment, StackFileError> {
    let Some((_, d)) = file.deployments.iter().find(|(k, _)| &k.0 == deployment) else {
        return Ok(Deployment::new(
            deployment.clone(),
            Environment {
                name: "local".parse().map_err(|e| StackFileError::Unsupported {
                    file: PathBuf::new(),
                    reason: format!("{e}"),
                })?,
                production: false,
                production_like: false,
            },
        ));
    };
    let env_name = d.environment.get_ref();
    let declared = file
        .environments
        .iter()
        .find(|(k, _)| k.0.as_str() == env_name)
        .map(|(_, e)| e);
    let production = declared.is_some_and(|e| e.production);
    let production_like = declared.is_some_and(|e| e.production_like);
    let mut out = Deployment::new(
        deployment.clone(),
        Environment {
            name: env_name.parse().map_err(|e| StackFileError::Unsupported {
                file: PathBuf::new(),
                reason: format!("environment {env_name:?}: {e}"),
            })?,
            production,
            production_like,
        },
    );
    if let Some(from) = &d.promote_from {
        let from = from
            .get_ref()
            .parse()
            .map_err(|e| StackFileError::Unsupported {
                file: PathBuf::new(),
                reason: format!("promote_from {:?}: {e}", from.get_ref()),
            })?;
        let soak = d.soak.map_or(std::time::Duration::from_secs(3600), |s| s.0);
        out = out.promoted_from(from, soak);
    }
    for (name, r) in &d.roles {
        let mut role = Role::new(name.0.clone(), r.desired).with_port(r.port);
        role.flavor = r.flavor.clone();
        out = out.with_role(role);
    }
    Ok(out)
}
#[cfg(feature = "local")]
fn local_balancer(
    path: &Path,
    name: &str,
    section: &BalancerSection,
    relative: &dyn Fn(&Path) -> PathBuf,
) -> Result<BalancerChoice, StackFileError> {
    match section {
        BalancerSection::Embedded {
            listen,
            admin_socket,
        } => Ok(match admin_socket {
            Some(socket) => BalancerChoice::Remote(relative(socket)),
            None => BalancerChoice::Embedded {
                listen: *listen,
                admin: None,
            },
        }),
        #[cfg(feature = "haproxy")]
        BalancerSection::Haproxy { socket: None, .. } => Ok(BalancerChoice::Haproxy),
        BalancerSection::Haproxy { .. } => Ok(BalancerChoice::Given(compose::balancer(
            path, name, section, None, 0,
        )?)),
        other => Err(StackFileError::Unsupported {
            file: path.to_path_buf(),
            reason: format!(
                "balancer {name:?} ({}) cannot front local servers (they listen on loopback): use an embedded balancer, or a haproxy",
                other.kind()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const LOCAL: &str = r#"
[providers.laptop]
kind = "local"

[balancers.front]
kind = "embedded"

[deployments.shop]
environment = "local"
provider = "laptop"

[deployments.shop.roles.web]
desired = 1
balancer = "front"
"#;

    /// A local provider opens with feature `local`; without it (a build
    /// for a cloud only), the file is refused, naming the feature.
    #[tokio::test]
    async fn a_local_provider_needs_feature_local() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phoenix.toml");
        std::fs::write(&path, LOCAL).unwrap();
        let opened = Stack::from_file(&path).await;
        #[cfg(feature = "local")]
        {
            let stack = opened.expect("the local provider opens");
            assert!(stack.local().is_some());
            assert!(stack.local_balancer_in_process());
            assert_eq!(stack.teardown().await.unwrap(), 0);
        }
        #[cfg(not(feature = "local"))]
        {
            let e = opened.expect_err("no local provider in this build");
            assert!(
                matches!(
                    &e,
                    StackFileError::MissingFeature {
                        feature: "local",
                        kind: "local",
                        ..
                    }
                ),
                "{e:?}"
            );
            let text = e.to_string();
            assert!(
                text.contains("provider \"laptop\"")
                    && text.contains("built without feature `local`"),
                "{text}"
            );
        }
    }
}
