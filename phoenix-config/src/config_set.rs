//! The loaded configuration set and the `BootConfig` port.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use phoenix_core::id::{EnvironmentName, ReleaseLabel, RoleName};
use phoenix_core::ports::{BootConfig, BootContext, BootFormat, BootPayload, PortError};
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use crate::error::ConfigError;
use crate::fingerprint::{
    flatten, secret_placeholder, Preview, PreviewCommand, PreviewFile, PreviewUser,
};
use crate::load::{parse_layer, read_dir};
use crate::merge::{apply, Layer};
use crate::model::{resolve, Resolved, Scene};
use crate::render::{
    self, aws, cloud_init, local, openstack, vsphere, Rendered, RenderedCommand, Vars,
};
use crate::secret::{SecretCache, SecretRef};
use crate::spec::alternatives;
use crate::tree::Node;

type Key = (EnvironmentName, RoleName, Option<ReleaseLabel>);

/// A loaded, checked configuration: every environment × role × release
/// override merged and validated up front, so that rendering can only fail
/// on what depends on the moment (secrets, sizes).
///
/// It implements [`BootConfig`]. Resolved secret values are cached by
/// identity and version for the life of the set (see
/// [`crate::DEFAULT_VERSION`]).
pub struct ConfigSet {
    root: PathBuf,
    environments: BTreeSet<EnvironmentName>,
    roles: BTreeSet<RoleName>,
    releases: BTreeSet<ReleaseLabel>,
    resolved: BTreeMap<Key, Arc<Resolved>>,
    cache: SecretCache,
}

impl fmt::Debug for ConfigSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSet")
            .field("root", &self.root)
            .field("environments", &self.environments)
            .field("roles", &self.roles)
            .field("releases", &self.releases)
            .finish_non_exhaustive()
    }
}

fn layout(path: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Layout {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn name<T>(
    path: &str,
    stem: &str,
    parse: fn(&str) -> Result<T, phoenix_core::id::InvalidId>,
) -> Result<T, ConfigError> {
    parse(stem).map_err(|e| layout(path, e.to_string()))
}

impl ConfigSet {
    /// Loads a configuration directory (see [the layout](crate#layout)).
    /// Either everything loads and checks, or nothing is returned: the
    /// error names the file, line and key of the first problem, in file
    /// order.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let dir = dir.as_ref();
        Self::from_files(dir, read_dir(dir)?)
    }

    /// Builds a set from file texts keyed by their path relative to
    /// `root` (`base.toml`, `env/prod.toml`, …). `root` is where relative
    /// secret file paths point.
    pub fn from_files<I, P, T>(root: impl AsRef<Path>, files: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (P, T)>,
        P: Into<String>,
        T: Into<String>,
    {
        let root = root.as_ref().to_path_buf();
        let mut files: Vec<(String, String)> = files
            .into_iter()
            .map(|(p, t)| (p.into(), t.into()))
            .collect();
        files.sort();

        let mut base = None;
        let mut envs = BTreeMap::new();
        let mut roles = BTreeMap::new();
        let mut env_roles = BTreeMap::new();
        let mut releases = BTreeMap::new();
        for (path, text) in &files {
            let parts: Vec<&str> = path.split('/').collect();
            let stem = |file: &str| file.strip_suffix(".toml").map(str::to_owned);
            match parts.as_slice() {
                ["base.toml"] => base = Some(parse_layer(path, text)?),
                ["env", file] => {
                    let s = stem(file).ok_or_else(|| layout(path, "not a .toml file"))?;
                    let env = name(path, &s, |s| EnvironmentName::new(s))?;
                    envs.insert(env, parse_layer(path, text)?);
                }
                ["role", file] => {
                    let s = stem(file).ok_or_else(|| layout(path, "not a .toml file"))?;
                    let role = name(path, &s, |s| RoleName::new(s))?;
                    roles.insert(role, parse_layer(path, text)?);
                }
                ["env", env, file] => {
                    let s = stem(file).ok_or_else(|| layout(path, "not a .toml file"))?;
                    let env = name(path, env, |s| EnvironmentName::new(s))?;
                    let role = name(path, &s, |s| RoleName::new(s))?;
                    env_roles.insert((env, role), (path.clone(), parse_layer(path, text)?));
                }
                ["release", file] => {
                    let s = stem(file).ok_or_else(|| layout(path, "not a .toml file"))?;
                    let release = name(path, &s, |s| ReleaseLabel::new(s))?;
                    releases.insert(release, parse_layer(path, text)?);
                }
                _ => {
                    return Err(layout(
                        path,
                        "not part of the layout: base.toml, env/<env>.toml, role/<role>.toml, \
                         env/<env>/<role>.toml, release/<release>.toml",
                    ))
                }
            }
        }
        let base =
            base.ok_or_else(|| layout("base.toml", "missing: every configuration has one"))?;
        if envs.is_empty() {
            return Err(layout(
                "env/",
                "no environment is declared (env/<name>.toml)",
            ));
        }
        if roles.is_empty() {
            return Err(layout("role/", "no role is declared (role/<name>.toml)"));
        }
        for ((env, role), (path, _)) in &env_roles {
            if !envs.contains_key(env) {
                return Err(layout(
                    path,
                    format!("environment {env} has no env/{env}.toml"),
                ));
            }
            if !roles.contains_key(role) {
                return Err(layout(path, format!("role {role} has no role/{role}.toml")));
            }
        }

        let environments: BTreeSet<EnvironmentName> = envs.keys().cloned().collect();
        let mut resolved = BTreeMap::new();
        let no_release = Layer::default();
        for (env, env_layer) in &envs {
            for (role, role_layer) in &roles {
                let pair = env_roles
                    .get(&(env.clone(), role.clone()))
                    .map(|(_, l)| l)
                    .unwrap_or(&no_release);
                let mut merged = Node::empty();
                for layer in [&base, env_layer, role_layer, pair] {
                    apply(&mut merged, layer, alternatives);
                }
                let scene = Scene {
                    root: &root,
                    environment: env,
                    role,
                    environments: &environments,
                };
                let release_layers = std::iter::once((None, &no_release))
                    .chain(releases.iter().map(|(r, l)| (Some(r.clone()), l)));
                for (release, layer) in release_layers {
                    let mut with_release = merged.clone();
                    apply(&mut with_release, layer, alternatives);
                    let model = resolve(&with_release, &scene)?;
                    resolved.insert((env.clone(), role.clone(), release), Arc::new(model));
                }
            }
        }
        Ok(Self {
            root,
            environments,
            roles: roles.into_keys().collect(),
            releases: releases.into_keys().collect(),
            resolved,
            cache: SecretCache::default(),
        })
    }

    /// The declared environments.
    pub fn environments(&self) -> &BTreeSet<EnvironmentName> {
        &self.environments
    }

    /// The declared roles.
    pub fn roles(&self) -> &BTreeSet<RoleName> {
        &self.roles
    }

    /// The releases that have an override file.
    pub fn release_overrides(&self) -> &BTreeSet<ReleaseLabel> {
        &self.releases
    }

    fn resolved(
        &self,
        environment: &EnvironmentName,
        role: &RoleName,
        release: &ReleaseLabel,
    ) -> Result<&Resolved, ConfigError> {
        if !self.environments.contains(environment) {
            return Err(ConfigError::UnknownEnvironment(environment.to_string()));
        }
        if !self.roles.contains(role) {
            return Err(ConfigError::UnknownRole(role.to_string()));
        }
        let release = self.releases.contains(release).then(|| release.clone());
        self.resolved
            .get(&(environment.clone(), role.clone(), release))
            .map(Arc::as_ref)
            .ok_or_else(|| ConfigError::UnknownRole(role.to_string()))
    }

    /// The secrets a configuration uses, each checked to be in scope for
    /// `environment`, before any of them is read.
    fn used_secrets<'a>(
        resolved: &'a Resolved,
        environment: &EnvironmentName,
    ) -> Result<Vec<&'a SecretRef>, ConfigError> {
        let mut out = Vec::new();
        for name in &resolved.used_secrets {
            if let Some(secret) = resolved.secrets.get(name) {
                secret.check_scope(environment)?;
                out.push(secret);
            }
        }
        Ok(out)
    }

    /// The non-secret rendering of (environment, role, release); see
    /// [`Preview`]. Fails, like rendering, when a secret it uses is out
    /// of scope for the environment.
    pub fn preview(
        &self,
        environment: &EnvironmentName,
        role: &RoleName,
        release: &ReleaseLabel,
    ) -> Result<Preview, ConfigError> {
        let resolved = self.resolved(environment, role, release)?;
        let used = Self::used_secrets(resolved, environment)?;
        let placeholders: BTreeMap<String, SecretString> = used
            .iter()
            .map(|s| {
                (
                    s.name().to_owned(),
                    SecretString::from(secret_placeholder(s.name(), s.version())),
                )
            })
            .collect();
        let placeholder = |k: &str| {
            crate::fingerprint::PREVIEW_PLACEHOLDERS
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
                .unwrap_or_default()
        };
        let vars = Vars {
            deployment: placeholder("deployment"),
            environment: environment.to_string(),
            role: role.to_string(),
            release: release.to_string(),
            image: placeholder("image"),
            pool: placeholder("pool"),
            server_name: placeholder("server_name"),
            index: 0,
        };
        let rendered = render::render(resolved, &vars, &placeholders)?;
        let mut values = BTreeMap::new();
        flatten(&resolved.values, "", &mut values);
        Ok(preview_of(
            &rendered,
            values,
            used.iter()
                .map(|s| (s.name().to_owned(), s.identity()))
                .collect(),
            (environment, role, release),
        ))
    }

    /// The fingerprint of (environment, role, release): see
    /// [`Preview::fingerprint`].
    pub fn fingerprint(
        &self,
        environment: &EnvironmentName,
        role: &RoleName,
        release: &ReleaseLabel,
    ) -> Result<String, ConfigError> {
        Ok(self.preview(environment, role, release)?.fingerprint())
    }

    /// Renders what one server receives, in one format. Secrets are
    /// checked against the environment before any is resolved.
    pub async fn render(
        &self,
        context: &BootContext,
        format: BootFormat,
    ) -> Result<BootPayload, ConfigError> {
        let resolved = self.resolved(&context.environment, &context.role, &context.release)?;
        let used = Self::used_secrets(resolved, &context.environment)?;
        let mut secrets = BTreeMap::new();
        for secret in &used {
            secrets.insert(secret.name().to_owned(), self.cache.get(secret).await?);
        }
        let vars = Vars {
            deployment: context.deployment.to_string(),
            environment: context.environment.to_string(),
            role: context.role.to_string(),
            release: context.release.to_string(),
            image: context.image.to_string(),
            pool: context.pool.to_string(),
            server_name: context.server_name.clone(),
            index: context.index,
        };
        let rendered = render::render(resolved, &vars, &secrets)?;
        let payload = match format {
            BootFormat::Local => local::payload(&rendered),
            BootFormat::CloudInit => BootPayload::CloudInit {
                user_data: SecretSlice::from(cloud_init::user_data(&rendered)?),
            },
            BootFormat::AwsUserData => BootPayload::AwsUserData {
                base64: SecretString::from(aws::encode(&cloud_init::user_data(&rendered)?)?),
            },
            BootFormat::OpenStack => {
                openstack::payload(&rendered, cloud_init::user_data(&rendered)?)?
            }
            BootFormat::VsphereGuestinfo => BootPayload::Guestinfo {
                properties: vsphere::properties(&rendered, &cloud_init::user_data(&rendered)?)?,
            },
        };
        tracing::debug!(
            server = %context.server_name,
            environment = %context.environment,
            role = %context.role,
            release = %context.release,
            ?format,
            secrets = ?used.iter().map(|s| s.identity()).collect::<Vec<_>>(),
            "rendered boot configuration"
        );
        Ok(payload)
    }
}

fn preview_of(
    r: &Rendered,
    values: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
    (environment, role, release): (&EnvironmentName, &RoleName, &ReleaseLabel),
) -> Preview {
    // Only ever called with placeholder secrets: exposing is safe here.
    let command = |c: &RenderedCommand| match c {
        RenderedCommand::Argv(a) => {
            PreviewCommand::Argv(a.iter().map(|s| s.expose_secret().to_owned()).collect())
        }
        RenderedCommand::Shell(s) => PreviewCommand::Shell(s.expose_secret().to_owned()),
    };
    Preview {
        environment: environment.to_string(),
        role: role.to_string(),
        release: release.to_string(),
        values,
        env: r
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.expose_secret().to_owned()))
            .collect(),
        labels: r.labels.clone(),
        files: r
            .files
            .iter()
            .map(|f| {
                (
                    f.path.clone(),
                    PreviewFile {
                        mode: format!("{:04o}", f.mode),
                        owner: f.owner.clone(),
                        content: f.content.expose_secret().to_owned(),
                    },
                )
            })
            .collect(),
        boot_commands: r.boot.iter().map(command).collect(),
        run_commands: r.run.iter().map(command).collect(),
        scripts: r
            .scripts
            .iter()
            .map(|s| (s.file_name.clone(), s.content.expose_secret().to_owned()))
            .collect(),
        users: r
            .users
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    PreviewUser {
                        system: u.system,
                        groups: u.groups.clone(),
                        shell: u.shell.clone(),
                        home: u.home.clone(),
                    },
                )
            })
            .collect(),
        secrets,
        config_drive: r.config_drive,
        env_file: r.env_file.clone(),
    }
}

#[async_trait]
impl BootConfig for ConfigSet {
    async fn render(
        &self,
        context: &BootContext,
        format: BootFormat,
    ) -> Result<BootPayload, PortError> {
        ConfigSet::render(self, context, format).await.map_err(|e| {
            e.into_port_error(format!(
                "phoenix-config: rendering boot configuration for {}",
                context.server_name
            ))
        })
    }

    async fn fingerprint(
        &self,
        environment: &EnvironmentName,
        role: &RoleName,
        release: &ReleaseLabel,
    ) -> Result<String, PortError> {
        ConfigSet::fingerprint(self, environment, role, release).map_err(|e| {
            e.into_port_error(format!(
                "phoenix-config: fingerprint of {environment}/{role}/{release}"
            ))
        })
    }
}
