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

use crate::file::{BalancerSection, FileError, ProviderSection, StackFile};
#[cfg(feature = "local")]
use crate::local::{BalancerChoice, LocalOptions, LocalStack, StackError};

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
    #[error("{file}: several {what}s are declared ({declared}); choose one", file = file.display())]
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
    /// The provider and balancer do not go together.
    #[error("{file}: {reason}", file = file.display())]
    Unsupported {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The local stack failed.
    #[cfg(feature = "local")]
    #[error(transparent)]
    Local(#[from] StackError),
}

impl StackFileError {
    /// The operation's error, when an operation failed (for exit statuses).
    pub fn exec(&self) -> Option<&ExecError> {
        match self {
            #[cfg(feature = "local")]
            Self::Local(StackError::Exec(e)) => Some(e),
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
            #[cfg(feature = "local")]
            ProviderSection::Local { app } => {
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
            ProviderSection::Vsphere { .. } => return Err(vsphere(&path, &provider_name)),
            other => {
                return Err(StackFileError::MissingFeature {
                    file: path.clone(),
                    what: "provider",
                    name: provider_name,
                    kind: other.kind(),
                    feature: other.kind(),
                })
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
        }
    }

    /// The state store.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        match &self.backend {
            #[cfg(feature = "local")]
            Backend::Local(s) => &s.store,
        }
    }

    /// The local stack, when the provider is `local`.
    #[cfg(feature = "local")]
    pub fn local(&self) -> Option<&LocalStack> {
        match &self.backend {
            Backend::Local(s) => Some(s),
        }
    }

    /// Bakes an image of version `version` (not certified yet).
    pub async fn bake(&self, version: &str) -> Result<Image, StackFileError> {
        match &self.backend {
            #[cfg(feature = "local")]
            Backend::Local(s) => Ok(s.bake_only(version).await?),
        }
    }

    /// Checks an image, records the evidence and certifies it.
    pub async fn certify(&self, image: &ImageId) -> Result<Image, StackFileError> {
        match &self.backend {
            #[cfg(feature = "local")]
            Backend::Local(s) => Ok(s.certify(image).await?),
        }
    }

    /// Records release `label` with `image` for the role; without an
    /// image, bakes and certifies one first. An existing release of that
    /// label is returned as it is.
    pub async fn release(
        &self,
        label: &str,
        image: Option<&ImageId>,
    ) -> Result<Release, StackFileError> {
        match (&self.backend, image) {
            #[cfg(feature = "local")]
            (Backend::Local(s), None) => Ok(s.release(label).await?),
            #[cfg(feature = "local")]
            (Backend::Local(s), Some(image)) => {
                let label: ReleaseLabel = crate::local::parse_label(label)?;
                let snap = s
                    .phoenix
                    .snapshot(&s.deployment)
                    .await
                    .map_err(StackError::from)?;
                if let Some(r) = snap.releases.get(&label) {
                    return Ok(r.clone());
                }
                let mut images = BTreeMap::new();
                images.insert(self.role.clone(), image.clone());
                Ok(s.phoenix
                    .create_release(&self.deployment, label, images)
                    .await
                    .map_err(StackError::from)?)
            }
        }
    }

    /// Picks up after a restart: resumes an interrupted operation, repairs
    /// drift between the records, the servers and the balancer (with
    /// `remove_orphans`, unrecorded servers carrying the deployment's
    /// labels are terminated), and heals the live pool.
    pub async fn restore(&self, remove_orphans: bool) -> Result<String, StackFileError> {
        match &self.backend {
            #[cfg(feature = "local")]
            Backend::Local(s) => Ok(s
                .restore_with(ReconcileOptions {
                    remove_orphans,
                    record_missing: true,
                    restore_members: true,
                })
                .await?),
        }
    }

    /// Ends every server of the deployment and removes its images and
    /// working directory. Returns how many servers it terminated.
    pub async fn teardown(self) -> Result<usize, StackFileError> {
        match self.backend {
            #[cfg(feature = "local")]
            Backend::Local(s) => Ok(s.teardown().await?),
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
            },
        ));
    };
    let env_name = d.environment.get_ref();
    let production = file
        .environments
        .iter()
        .find(|(k, _)| k.0.as_str() == env_name)
        .is_some_and(|(_, e)| e.production);
    let mut out = Deployment::new(
        deployment.clone(),
        Environment {
            name: env_name.parse().map_err(|e| StackFileError::Unsupported {
                file: PathBuf::new(),
                reason: format!("environment {env_name:?}: {e}"),
            })?,
            production,
        },
    );
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
        #[cfg(not(feature = "haproxy"))]
        BalancerSection::Haproxy { .. } => Err(StackFileError::MissingFeature {
            file: path.to_path_buf(),
            what: "balancer",
            name: name.to_owned(),
            kind: "haproxy",
            feature: "haproxy",
        }),
        other => Err(StackFileError::Unsupported {
            file: path.to_path_buf(),
            reason: format!(
                "balancer {name:?} ({}) cannot front local servers (they listen on loopback): use an embedded balancer, or a haproxy this command starts (kind = \"haproxy\" without socket)",
                other.kind()
            ),
        }),
    }
}

/// The vSphere provider (GOVC_* settings) is wired here, and only here,
/// once `phoenix-providers` has its `vsphere` feature: this function then
/// builds `VsphereConfig::from_env()` and the compute and images ports.
fn vsphere(path: &Path, name: &str) -> StackFileError {
    StackFileError::MissingFeature {
        file: path.to_path_buf(),
        what: "provider",
        name: name.to_owned(),
        kind: "vsphere",
        feature: "vsphere",
    }
}
