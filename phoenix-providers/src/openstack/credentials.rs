//! Who authenticates and how ([`Credentials`]: Rackspace API key,
//! identity v2.0 password, Keystone v3 password or application
//! credential, with the scope), and which endpoint interface to use.
//! Secrets are [`SecretString`]s: `Debug` shows `[REDACTED]`.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::error::ConfigError;

/// Which endpoint of a service to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Interface {
    /// The public endpoint (`publicURL`).
    #[default]
    Public,
    /// The internal endpoint (`internalURL`; Rackspace's ServiceNet).
    Internal,
    /// The admin endpoint (`adminURL`).
    Admin,
}

impl Interface {
    /// Parses `public`, `internal`, `admin`, with or without the v2
    /// `URL` suffix.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "public" | "publicurl" => Ok(Self::Public),
            "internal" | "internalurl" => Ok(Self::Internal),
            "admin" | "adminurl" => Ok(Self::Admin),
            other => Err(ConfigError::Invalid {
                setting: "interface".into(),
                reason: format!("{other:?} is not public, internal or admin"),
            }),
        }
    }

    /// The v3 catalog name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Keystone domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRef {
    /// By id.
    Id(String),
    /// By name.
    Name(String),
}

/// A Keystone user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    /// By id (unique across domains).
    Id(String),
    /// By name within a domain.
    Name {
        /// User name.
        name: String,
        /// Its domain.
        domain: DomainRef,
    },
}

/// A Keystone project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectRef {
    /// By id.
    Id(String),
    /// By name within a domain.
    Name {
        /// Project name.
        name: String,
        /// Its domain.
        domain: DomainRef,
    },
}

/// What a Keystone v3 token is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// No scope (a catalog-less token; rarely useful).
    Unscoped,
    /// A project: the usual scope for compute and networking.
    Project(ProjectRef),
    /// A domain.
    Domain(DomainRef),
}

/// A v2.0 tenant (the project of identity v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRef {
    /// By id.
    Id(String),
    /// By name.
    Name(String),
}

/// A Keystone application credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplicationCredentialRef {
    /// By id.
    Id(String),
    /// By name, with its owner.
    Name {
        /// Credential name.
        name: String,
        /// The user that owns it.
        user: UserRef,
    },
}

/// How to authenticate. Secrets stay in [`SecretString`]s and never appear
/// in `Debug` output or errors.
#[derive(Clone)]
pub enum Credentials {
    /// Rackspace identity v2.0 with an API key
    /// (`RAX-KSKEY:apiKeyCredentials`).
    RackspaceApiKey {
        /// User name.
        username: String,
        /// API key.
        api_key: SecretString,
        /// Tenant to scope to, if any.
        tenant: Option<TenantRef>,
    },
    /// Identity v2.0 with a password (`passwordCredentials`), as Rackspace
    /// and old OpenStack clouds take it.
    V2Password {
        /// User name.
        username: String,
        /// Password.
        password: SecretString,
        /// Tenant to scope to, if any.
        tenant: Option<TenantRef>,
    },
    /// Keystone v3 password authentication.
    V3Password {
        /// The user.
        user: UserRef,
        /// Password.
        password: SecretString,
        /// The token's scope.
        scope: Scope,
    },
    /// Keystone v3 application credential (scoped by the credential).
    V3ApplicationCredential {
        /// The credential.
        credential: ApplicationCredentialRef,
        /// Its secret.
        secret: SecretString,
    },
}

impl Credentials {
    /// Rackspace: username and API key.
    pub fn rackspace_api_key(username: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self::RackspaceApiKey {
            username: username.into(),
            api_key: SecretString::from(api_key.into()),
            tenant: None,
        }
    }

    /// Keystone v3: user name in a domain, password, project name in a
    /// domain.
    pub fn password_v3(
        user: impl Into<String>,
        user_domain: impl Into<String>,
        password: impl Into<String>,
        project: impl Into<String>,
        project_domain: impl Into<String>,
    ) -> Self {
        Self::V3Password {
            user: UserRef::Name {
                name: user.into(),
                domain: DomainRef::Name(user_domain.into()),
            },
            password: SecretString::from(password.into()),
            scope: Scope::Project(ProjectRef::Name {
                name: project.into(),
                domain: DomainRef::Name(project_domain.into()),
            }),
        }
    }

    /// Keystone v3: application credential by id.
    pub fn application_credential(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::V3ApplicationCredential {
            credential: ApplicationCredentialRef::Id(id.into()),
            secret: SecretString::from(secret.into()),
        }
    }

    /// Whether these authenticate against identity v2.0.
    pub fn is_v2(&self) -> bool {
        matches!(self, Self::RackspaceApiKey { .. } | Self::V2Password { .. })
    }

    /// The secrets these credentials hold, for redaction.
    pub(crate) fn secrets(&self) -> Vec<String> {
        let s = match self {
            Self::RackspaceApiKey { api_key, .. } => api_key,
            Self::V2Password { password, .. } | Self::V3Password { password, .. } => password,
            Self::V3ApplicationCredential { secret, .. } => secret,
        };
        vec![s.expose_secret().to_owned()]
    }

    /// Who authenticates, for messages.
    pub fn principal(&self) -> String {
        match self {
            Self::RackspaceApiKey { username, .. } | Self::V2Password { username, .. } => {
                username.clone()
            }
            Self::V3Password { user, .. } => match user {
                UserRef::Id(id) => format!("user id {id}"),
                UserRef::Name { name, .. } => name.clone(),
            },
            Self::V3ApplicationCredential { credential, .. } => match credential {
                ApplicationCredentialRef::Id(id) => format!("application credential {id}"),
                ApplicationCredentialRef::Name { name, .. } => {
                    format!("application credential {name}")
                }
            },
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const REDACTED: &str = "[REDACTED]";
        match self {
            Self::RackspaceApiKey {
                username, tenant, ..
            } => f
                .debug_struct("RackspaceApiKey")
                .field("username", username)
                .field("api_key", &REDACTED)
                .field("tenant", tenant)
                .finish(),
            Self::V2Password {
                username, tenant, ..
            } => f
                .debug_struct("V2Password")
                .field("username", username)
                .field("password", &REDACTED)
                .field("tenant", tenant)
                .finish(),
            Self::V3Password { user, scope, .. } => f
                .debug_struct("V3Password")
                .field("user", user)
                .field("password", &REDACTED)
                .field("scope", scope)
                .finish(),
            Self::V3ApplicationCredential { credential, .. } => f
                .debug_struct("V3ApplicationCredential")
                .field("credential", credential)
                .field("secret", &REDACTED)
                .finish(),
        }
    }
}
