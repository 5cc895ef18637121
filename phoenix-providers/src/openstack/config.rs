//! Which cloud to talk to and as whom: from `clouds.yaml` (with
//! `secure.yaml`), from the `OS_*` environment variables, or built in code.
//!
//! ```
//! use phoenix_providers::openstack::{CloudConfig, Credentials, Interface};
//!
//! // Rackspace: username and API key against identity v2.0.
//! let rackspace = CloudConfig::builder()
//!     .auth_url("https://identity.api.rackspacecloud.com/v2.0")
//!     .credentials(Credentials::rackspace_api_key("alice", "an-api-key"))
//!     .region("ORD")
//!     .build()?;
//! assert!(!format!("{rackspace:?}").contains("an-api-key"));
//!
//! // OpenStack: Keystone v3 password, scoped to a project.
//! let openstack = CloudConfig::builder()
//!     .auth_url("https://keystone.example.com:5000/v3")
//!     .credentials(Credentials::password_v3("alice", "Default", "secret", "web", "Default"))
//!     .region("RegionOne")
//!     .interface(Interface::Internal)
//!     .build()?;
//! # let _ = openstack;
//! # Ok::<(), phoenix_providers::openstack::ConfigError>(())
//! ```
//!
//! `clouds.yaml` is searched where the OpenStack SDK searches it:
//! `OS_CLIENT_CONFIG_FILE`, then `./clouds.yaml`,
//! `$XDG_CONFIG_HOME/openstack/clouds.yaml` (`~/.config/openstack`), and
//! `/etc/openstack/clouds.yaml`; `secure.yaml` likewise
//! (`OS_CLIENT_SECURE_FILE`), its settings merged over the cloud's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

pub use super::credentials::{
    ApplicationCredentialRef, Credentials, DomainRef, Interface, ProjectRef, Scope, TenantRef,
    UserRef,
};
use super::error::ConfigError;

/// A cloud: where identity is, who we are, and which endpoints to use.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    name: Option<String>,
    auth_url: String,
    credentials: Credentials,
    region: Option<String>,
    interface: Interface,
    service_names: BTreeMap<String, String>,
    endpoint_overrides: BTreeMap<String, String>,
}

impl CloudConfig {
    /// Starts building a configuration in code.
    pub fn builder() -> CloudConfigBuilder {
        CloudConfigBuilder::default()
    }

    /// The cloud's name in `clouds.yaml`, if it came from there.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The identity endpoint as configured.
    pub fn auth_url(&self) -> &str {
        &self.auth_url
    }

    /// The credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The region, if one is set.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The endpoint interface.
    pub fn interface(&self) -> Interface {
        self.interface
    }

    /// The catalog service name to use for a service type, if one is set
    /// (`compute_service_name` in `clouds.yaml`).
    pub fn service_name(&self, service_type: &str) -> Option<&str> {
        self.service_names.get(service_type).map(String::as_str)
    }

    /// The endpoint to use for a service type instead of the catalog's
    /// (`compute_endpoint_override`).
    pub fn endpoint_override(&self, service_type: &str) -> Option<&str> {
        self.endpoint_overrides
            .get(service_type)
            .map(String::as_str)
    }

    /// Identity v2.0's token URL: `<auth_url>/tokens`, adding `/v2.0` to
    /// an unversioned URL.
    pub fn v2_tokens_url(&self) -> String {
        let base = self.auth_url.trim_end_matches('/');
        if base.ends_with("/v2.0") {
            format!("{base}/tokens")
        } else {
            format!("{base}/v2.0/tokens")
        }
    }

    /// Keystone v3's token URL: `<auth_url>/auth/tokens`, adding `/v3` to
    /// an unversioned URL.
    pub fn v3_tokens_url(&self) -> String {
        let base = self.auth_url.trim_end_matches('/');
        if base.ends_with("/v3") {
            format!("{base}/auth/tokens")
        } else {
            format!("{base}/v3/auth/tokens")
        }
    }

    /// From the environment: the `clouds.yaml` cloud named by `OS_CLOUD`
    /// when it is set, otherwise the `OS_*` variables (`OS_AUTH_URL`,
    /// `OS_USERNAME`, `OS_PASSWORD` or `OS_API_KEY`, `OS_PROJECT_NAME`, …).
    pub fn from_env() -> Result<Self, ConfigError> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match get("OS_CLOUD") {
            Some(cloud) => Self::from_clouds_yaml(Some(&cloud)),
            None => Self::from_env_vars(get),
        }
    }

    /// From `OS_*` variables read through `get` (for tests and for
    /// callers with their own environment).
    pub fn from_env_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let first = |keys: &[&str]| keys.iter().find_map(|k| get(k).filter(|v| !v.is_empty()));
        let secret = |keys: &[&str]| first(keys).map(SecretString::from);
        let raw = RawCloud {
            auth: RawAuth {
                auth_url: first(&["OS_AUTH_URL"]),
                username: first(&["OS_USERNAME"]),
                user_id: first(&["OS_USER_ID"]),
                password: secret(&["OS_PASSWORD"]),
                api_key: secret(&["OS_API_KEY", "OS_RAX_API_KEY"]),
                project_name: first(&["OS_PROJECT_NAME", "OS_TENANT_NAME"]),
                project_id: first(&["OS_PROJECT_ID", "OS_TENANT_ID"]),
                user_domain_name: first(&["OS_USER_DOMAIN_NAME"]),
                user_domain_id: first(&["OS_USER_DOMAIN_ID"]),
                project_domain_name: first(&["OS_PROJECT_DOMAIN_NAME"]),
                project_domain_id: first(&["OS_PROJECT_DOMAIN_ID"]),
                domain_name: first(&["OS_DOMAIN_NAME"]),
                domain_id: first(&["OS_DOMAIN_ID"]),
                default_domain: first(&["OS_DEFAULT_DOMAIN"]),
                application_credential_id: first(&["OS_APPLICATION_CREDENTIAL_ID"]),
                application_credential_name: first(&["OS_APPLICATION_CREDENTIAL_NAME"]),
                application_credential_secret: secret(&["OS_APPLICATION_CREDENTIAL_SECRET"]),
            },
            auth_type: first(&["OS_AUTH_TYPE"]),
            region_name: first(&["OS_REGION_NAME"]),
            interface: first(&["OS_INTERFACE", "OS_ENDPOINT_TYPE"]),
            identity_api_version: first(&["OS_IDENTITY_API_VERSION"])
                .map(serde_norway::Value::String),
            extra: BTreeMap::new(),
        };
        raw.into_config(None, Source::Env)
    }

    /// From the `clouds.yaml` and `secure.yaml` on the standard search
    /// path; `cloud` names the cloud (default: `OS_CLOUD`, or the only one
    /// defined).
    pub fn from_clouds_yaml(cloud: Option<&str>) -> Result<Self, ConfigError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let clouds = search_path("clouds.yaml", env("OS_CLIENT_CONFIG_FILE"), &env);
        let secure = search_path("secure.yaml", env("OS_CLIENT_SECURE_FILE"), &env);
        let Some(clouds_file) = clouds.iter().find(|p| p.is_file()) else {
            return Err(ConfigError::NoCloudsFile {
                searched: clouds
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let secure_file = secure.iter().find(|p| p.is_file());
        let named = cloud.map(str::to_owned).or_else(|| env("OS_CLOUD"));
        Self::from_files(
            clouds_file,
            secure_file.map(PathBuf::as_path),
            named.as_deref(),
        )
    }

    /// From explicit `clouds.yaml` and `secure.yaml` files.
    pub fn from_files(
        clouds: &Path,
        secure: Option<&Path>,
        cloud: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let mut doc = read_yaml(clouds)?;
        let defined = cloud_names(&doc);
        let name = match cloud {
            Some(n) => n.to_owned(),
            None if defined.len() == 1 => defined[0].clone(),
            None => {
                return Err(ConfigError::NoCloudNamed {
                    path: clouds.to_owned(),
                    defined: defined.join(", "),
                })
            }
        };
        if let Some(secure) = secure {
            let overlay = read_yaml(secure)?;
            merge(&mut doc, overlay);
        }
        let entry = doc
            .get("clouds")
            .and_then(|c| c.get(name.as_str()))
            .cloned()
            .ok_or_else(|| ConfigError::UnknownCloud {
                name: name.clone(),
                path: clouds.to_owned(),
                defined: defined.join(", "),
            })?;
        let raw: RawCloud = serde_norway::from_value(entry).map_err(|e| ConfigError::Invalid {
            setting: format!("clouds.{name}"),
            reason: scrub_quoted(&e.to_string()),
        })?;
        raw.into_config(Some(name), Source::Yaml)
    }
}

/// Builds a [`CloudConfig`] in code.
#[derive(Debug, Default)]
pub struct CloudConfigBuilder {
    auth_url: Option<String>,
    credentials: Option<Credentials>,
    region: Option<String>,
    interface: Interface,
    service_names: BTreeMap<String, String>,
    endpoint_overrides: BTreeMap<String, String>,
}

impl CloudConfigBuilder {
    /// The identity endpoint (`…/v2.0` for Rackspace, `…/v3` for Keystone;
    /// an unversioned URL gets the version the credentials need).
    pub fn auth_url(mut self, url: impl Into<String>) -> Self {
        self.auth_url = Some(url.into());
        self
    }

    /// How to authenticate.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The region whose endpoints to use.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The endpoint interface (default public).
    pub fn interface(mut self, interface: Interface) -> Self {
        self.interface = interface;
        self
    }

    /// Picks the catalog service of a type by name, where several share
    /// the type (Mimic lists two `compute` services).
    pub fn service_name(
        mut self,
        service_type: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        self.service_names.insert(service_type.into(), name.into());
        self
    }

    /// Uses this endpoint for a service type instead of the catalog's.
    pub fn endpoint_override(
        mut self,
        service_type: impl Into<String>,
        url: impl Into<String>,
    ) -> Self {
        self.endpoint_overrides
            .insert(service_type.into(), url.into());
        self
    }

    /// Checks and builds.
    pub fn build(self) -> Result<CloudConfig, ConfigError> {
        let auth_url = self.auth_url.ok_or(ConfigError::Missing {
            setting: "auth_url".into(),
            hint: "CloudConfig::builder().auth_url(…)",
        })?;
        check_url("auth_url", &auth_url)?;
        for (service, url) in &self.endpoint_overrides {
            check_url(&format!("{service} endpoint override"), url)?;
        }
        let credentials = self.credentials.ok_or(ConfigError::Missing {
            setting: "credentials".into(),
            hint: "CloudConfig::builder().credentials(…)",
        })?;
        Ok(CloudConfig {
            name: None,
            auth_url,
            credentials,
            region: self.region,
            interface: self.interface,
            service_names: self.service_names,
            endpoint_overrides: self.endpoint_overrides,
        })
    }
}

fn check_url(setting: &str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        Ok(u) => Err(ConfigError::Invalid {
            setting: setting.into(),
            reason: format!("scheme {:?} is not http or https", u.scheme()),
        }),
        Err(e) => Err(ConfigError::Invalid {
            setting: setting.into(),
            reason: format!("not a URL: {e}"),
        }),
    }
}

/// The candidate paths for `file`, in the OpenStack SDK's order.
fn search_path(
    file: &str,
    explicit: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(PathBuf::from(p));
    }
    out.push(PathBuf::from(file));
    let config_home = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")));
    if let Some(home) = config_home {
        out.push(home.join("openstack").join(file));
    }
    out.push(Path::new("/etc/openstack").join(file));
    out
}

fn read_yaml(path: &Path) -> Result<serde_norway::Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_norway::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

fn cloud_names(doc: &serde_norway::Value) -> Vec<String> {
    doc.get("clouds")
        .and_then(serde_norway::Value::as_mapping)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Merges `overlay` into `base`, maps key by key, anything else replaced.
fn merge(base: &mut serde_norway::Value, overlay: serde_norway::Value) {
    match (base, overlay) {
        (serde_norway::Value::Mapping(b), serde_norway::Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Replaces text between backticks, where serde quotes offending values
/// (which may be secrets).
fn scrub_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        if c == '`' {
            if inside {
                out.push_str("…`");
            } else {
                out.push('`');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Source {
    Yaml,
    Env,
}

impl Source {
    fn key(self, yaml: &str) -> String {
        match self {
            Self::Yaml => format!("auth.{yaml}"),
            Self::Env => format!("OS_{}", yaml.to_ascii_uppercase()),
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Self::Yaml => "set it in clouds.yaml or secure.yaml",
            Self::Env => "set the environment variable",
        }
    }
}

#[derive(Default, Deserialize)]
struct RawAuth {
    auth_url: Option<String>,
    username: Option<String>,
    user_id: Option<String>,
    password: Option<SecretString>,
    api_key: Option<SecretString>,
    #[serde(alias = "tenant_name")]
    project_name: Option<String>,
    #[serde(alias = "tenant_id")]
    project_id: Option<String>,
    user_domain_name: Option<String>,
    user_domain_id: Option<String>,
    project_domain_name: Option<String>,
    project_domain_id: Option<String>,
    domain_name: Option<String>,
    domain_id: Option<String>,
    default_domain: Option<String>,
    application_credential_id: Option<String>,
    application_credential_name: Option<String>,
    application_credential_secret: Option<SecretString>,
}

#[derive(Default, Deserialize)]
struct RawCloud {
    #[serde(default)]
    auth: RawAuth,
    auth_type: Option<String>,
    region_name: Option<String>,
    #[serde(alias = "endpoint_type")]
    interface: Option<String>,
    identity_api_version: Option<serde_norway::Value>,
    #[serde(flatten)]
    extra: BTreeMap<String, serde_norway::Value>,
}

impl RawCloud {
    fn into_config(self, name: Option<String>, source: Source) -> Result<CloudConfig, ConfigError> {
        let a = self.auth;
        let auth_url = a.auth_url.clone().ok_or_else(|| ConfigError::Missing {
            setting: source.key("auth_url"),
            hint: source.hint(),
        })?;
        let version = self
            .identity_api_version
            .as_ref()
            .map(|v| match v {
                serde_norway::Value::String(s) => s.clone(),
                serde_norway::Value::Number(n) => n.to_string(),
                _ => String::new(),
            })
            .unwrap_or_default();
        let auth_type = self
            .auth_type
            .as_deref()
            .map(|t| t.to_ascii_lowercase().replace('-', "_"));
        let trimmed = auth_url.trim_end_matches('/');
        let v2_url = trimmed.ends_with("/v2.0");
        let kind = match auth_type.as_deref() {
            Some("rackspace_apikey" | "rax_apikey" | "rackspace") => Kind::RackspaceApiKey,
            Some("v2password") => Kind::V2Password,
            Some("v3password") => Kind::V3Password,
            Some(
                "v3applicationcredential" | "applicationcredential" | "application_credential",
            ) => Kind::AppCredential,
            Some("password") | None => {
                if a.api_key.is_some() {
                    Kind::RackspaceApiKey
                } else if a.application_credential_secret.is_some() && auth_type.is_none() {
                    Kind::AppCredential
                } else if version.starts_with('2') || (v2_url && !version.starts_with('3')) {
                    Kind::V2Password
                } else {
                    Kind::V3Password
                }
            }
            Some(other) => {
                return Err(ConfigError::Invalid {
                    setting: "auth_type".into(),
                    reason: format!(
                        "{other:?} is not supported (password, v2password, v3password, \
                         v3applicationcredential, rackspace_apikey)"
                    ),
                })
            }
        };
        let missing = |k: &str| ConfigError::Missing {
            setting: source.key(k),
            hint: source.hint(),
        };
        let default_domain = a.default_domain.clone();
        let user_domain = a
            .user_domain_id
            .clone()
            .map(DomainRef::Id)
            .or_else(|| a.user_domain_name.clone().map(DomainRef::Name))
            .or_else(|| default_domain.clone().map(DomainRef::Id))
            .unwrap_or_else(|| DomainRef::Id("default".into()));
        let project_domain = a
            .project_domain_id
            .clone()
            .map(DomainRef::Id)
            .or_else(|| a.project_domain_name.clone().map(DomainRef::Name))
            .or_else(|| default_domain.clone().map(DomainRef::Id))
            .unwrap_or_else(|| DomainRef::Id("default".into()));
        let user = || -> Result<UserRef, ConfigError> {
            match (&a.user_id, &a.username) {
                (Some(id), _) => Ok(UserRef::Id(id.clone())),
                (None, Some(name)) => Ok(UserRef::Name {
                    name: name.clone(),
                    domain: user_domain.clone(),
                }),
                (None, None) => Err(missing("username")),
            }
        };
        let tenant = a
            .project_id
            .clone()
            .map(TenantRef::Id)
            .or_else(|| a.project_name.clone().map(TenantRef::Name));
        let credentials = match kind {
            Kind::RackspaceApiKey => Credentials::RackspaceApiKey {
                username: a.username.clone().ok_or_else(|| missing("username"))?,
                api_key: a.api_key.clone().ok_or_else(|| missing("api_key"))?,
                tenant,
            },
            Kind::V2Password => Credentials::V2Password {
                username: a.username.clone().ok_or_else(|| missing("username"))?,
                password: a.password.clone().ok_or_else(|| missing("password"))?,
                tenant,
            },
            Kind::V3Password => {
                let scope = if let Some(id) = &a.project_id {
                    Scope::Project(ProjectRef::Id(id.clone()))
                } else if let Some(name) = &a.project_name {
                    Scope::Project(ProjectRef::Name {
                        name: name.clone(),
                        domain: project_domain,
                    })
                } else if let Some(id) = &a.domain_id {
                    Scope::Domain(DomainRef::Id(id.clone()))
                } else if let Some(name) = &a.domain_name {
                    Scope::Domain(DomainRef::Name(name.clone()))
                } else {
                    Scope::Unscoped
                };
                Credentials::V3Password {
                    user: user()?,
                    password: a.password.clone().ok_or_else(|| missing("password"))?,
                    scope,
                }
            }
            Kind::AppCredential => {
                let credential =
                    match (&a.application_credential_id, &a.application_credential_name) {
                        (Some(id), _) => ApplicationCredentialRef::Id(id.clone()),
                        (None, Some(name)) => ApplicationCredentialRef::Name {
                            name: name.clone(),
                            user: user()?,
                        },
                        (None, None) => return Err(missing("application_credential_id")),
                    };
                Credentials::V3ApplicationCredential {
                    credential,
                    secret: a
                        .application_credential_secret
                        .clone()
                        .ok_or_else(|| missing("application_credential_secret"))?,
                }
            }
        };
        let mut builder = CloudConfig::builder()
            .auth_url(auth_url)
            .credentials(credentials);
        if let Some(region) = self.region_name.filter(|r| !r.is_empty()) {
            builder = builder.region(region);
        }
        if let Some(interface) = &self.interface {
            builder = builder.interface(Interface::parse(interface)?);
        }
        for (key, value) in &self.extra {
            let Some(text) = value.as_str() else {
                continue;
            };
            if let Some(service) = key.strip_suffix("_service_name") {
                builder = builder.service_name(service.replace('_', "-"), text);
            } else if let Some(service) = key.strip_suffix("_endpoint_override") {
                builder = builder.endpoint_override(service.replace('_', "-"), text);
            }
        }
        let mut config = builder.build()?;
        config.name = name;
        Ok(config)
    }
}

enum Kind {
    RackspaceApiKey,
    V2Password,
    V3Password,
    AppCredential,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_urls_add_the_version_only_when_missing() {
        let c = |url: &str| {
            CloudConfig::builder()
                .auth_url(url)
                .credentials(Credentials::rackspace_api_key("u", "k"))
                .build()
                .unwrap()
        };
        assert_eq!(c("http://h/v2.0/").v2_tokens_url(), "http://h/v2.0/tokens");
        assert_eq!(c("http://h").v2_tokens_url(), "http://h/v2.0/tokens");
        assert_eq!(c("http://h/v3").v3_tokens_url(), "http://h/v3/auth/tokens");
        assert_eq!(
            c("http://h:5000/").v3_tokens_url(),
            "http://h:5000/v3/auth/tokens"
        );
    }

    #[test]
    fn quoted_values_are_scrubbed() {
        assert_eq!(
            scrub_quoted("invalid type: integer `12345`, expected a string"),
            "invalid type: integer `…`, expected a string"
        );
    }
}
