use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use secrecy::{SecretSlice, SecretString};
use serde::{Deserialize, Serialize};

use super::PortError;
use crate::id::{DeploymentId, EnvironmentName, ImageId, PoolId, ReleaseLabel, RoleName};

/// How a back end delivers configuration to a booting server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootFormat {
    /// A cloud-init document (`#cloud-config` or multi-part MIME).
    CloudInit,
    /// EC2 user data (cloud-init content, size-limited, maybe gzipped).
    AwsUserData,
    /// Nova user data plus server metadata and the config-drive flag.
    OpenStack,
    /// vSphere `guestinfo.*` properties.
    VsphereGuestinfo,
    /// Files and environment variables for a local process.
    Local,
}

/// Everything that identifies what a server should receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootContext {
    /// Deployment.
    pub deployment: DeploymentId,
    /// Environment: secrets are scoped to it.
    pub environment: EnvironmentName,
    /// Role.
    pub role: RoleName,
    /// Release.
    pub release: ReleaseLabel,
    /// Image.
    pub image: ImageId,
    /// Pool.
    pub pool: PoolId,
    /// Server name.
    pub server_name: String,
    /// Slot index within the pool.
    pub index: u32,
}

/// A file written on the server at boot. The content may hold secrets.
#[derive(Clone)]
pub struct BootFile {
    /// Path (absolute on cloud servers, relative to the runtime directory
    /// for local processes).
    pub path: String,
    /// Unix permissions.
    pub mode: u32,
    /// Owner (`user:group`), where the mechanism supports it.
    pub owner: Option<String>,
    /// Content.
    pub content: SecretSlice<u8>,
}

impl fmt::Debug for BootFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use secrecy::ExposeSecret;
        f.debug_struct("BootFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("owner", &self.owner)
            .field(
                "content",
                &format_args!("[REDACTED {} bytes]", self.content.expose_secret().len()),
            )
            .finish()
    }
}

/// What a server receives at boot, in one back end's format. It holds
/// secrets: its `Debug` shows sizes and names only, and it is never
/// journaled, logged or put in a plan.
pub enum BootPayload {
    /// Cloud-init user data, raw (not base64).
    CloudInit {
        /// The document.
        user_data: SecretSlice<u8>,
    },
    /// EC2 user data, already base64-encoded (and gzipped when needed).
    AwsUserData {
        /// Base64 text within EC2's 16 KiB limit.
        base64: SecretString,
    },
    /// Nova user data, metadata and config drive.
    OpenStack {
        /// Raw user data.
        user_data: SecretSlice<u8>,
        /// Server metadata (non-secret), within Nova's limits.
        metadata: BTreeMap<String, String>,
        /// Whether to attach a config drive.
        config_drive: bool,
    },
    /// vSphere guestinfo properties.
    Guestinfo {
        /// `guestinfo.*` keys and values.
        properties: BTreeMap<String, SecretString>,
    },
    /// Files and environment for a local process.
    Local {
        /// Files to write into the runtime directory.
        files: Vec<BootFile>,
        /// Environment variables.
        env: BTreeMap<String, SecretString>,
    },
}

impl BootPayload {
    /// A SHA-256 over everything the payload holds, secrets included, as
    /// hex. Equal payloads have equal fingerprints, so Phoenix can tell
    /// whether a payload rendered again is the one a launch carried (a
    /// provider that de-duplicates by token refuses a different one);
    /// the digest reveals nothing of the secrets.
    pub fn fingerprint(&self) -> String {
        use secrecy::ExposeSecret;
        use sha2::{Digest, Sha256};
        fn field(h: &mut Sha256, name: &str, value: &[u8]) {
            // Length-prefixed, so that no two payloads hash alike by
            // moving bytes between fields.
            h.update((name.len() as u64).to_be_bytes());
            h.update(name.as_bytes());
            h.update((value.len() as u64).to_be_bytes());
            h.update(value);
        }
        let mut h = Sha256::new();
        match self {
            Self::CloudInit { user_data } => {
                field(&mut h, "cloud-init", user_data.expose_secret());
            }
            Self::AwsUserData { base64 } => {
                field(&mut h, "aws-user-data", base64.expose_secret().as_bytes());
            }
            Self::OpenStack {
                user_data,
                metadata,
                config_drive,
            } => {
                field(&mut h, "openstack", user_data.expose_secret());
                for (k, v) in metadata {
                    field(&mut h, k, v.as_bytes());
                }
                field(&mut h, "config-drive", &[u8::from(*config_drive)]);
            }
            Self::Guestinfo { properties } => {
                field(&mut h, "guestinfo", &[]);
                for (k, v) in properties {
                    field(&mut h, k, v.expose_secret().as_bytes());
                }
            }
            Self::Local { files, env } => {
                field(&mut h, "local", &[]);
                for f in files {
                    field(&mut h, &f.path, f.content.expose_secret());
                    field(&mut h, "mode", &f.mode.to_be_bytes());
                    field(&mut h, "owner", f.owner.as_deref().unwrap_or("").as_bytes());
                }
                for (k, v) in env {
                    field(&mut h, k, v.expose_secret().as_bytes());
                }
            }
        }
        hex::encode(h.finalize())
    }

    /// The format of this payload.
    pub fn format(&self) -> BootFormat {
        match self {
            Self::CloudInit { .. } => BootFormat::CloudInit,
            Self::AwsUserData { .. } => BootFormat::AwsUserData,
            Self::OpenStack { .. } => BootFormat::OpenStack,
            Self::Guestinfo { .. } => BootFormat::VsphereGuestinfo,
            Self::Local { .. } => BootFormat::Local,
        }
    }
}

impl fmt::Debug for BootPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use secrecy::ExposeSecret;
        match self {
            Self::CloudInit { user_data } => f
                .debug_struct("CloudInit")
                .field(
                    "user_data",
                    &format_args!("[REDACTED {} bytes]", user_data.expose_secret().len()),
                )
                .finish(),
            Self::AwsUserData { base64 } => f
                .debug_struct("AwsUserData")
                .field(
                    "base64",
                    &format_args!("[REDACTED {} chars]", base64.expose_secret().len()),
                )
                .finish(),
            Self::OpenStack {
                user_data,
                metadata,
                config_drive,
            } => f
                .debug_struct("OpenStack")
                .field(
                    "user_data",
                    &format_args!("[REDACTED {} bytes]", user_data.expose_secret().len()),
                )
                .field("metadata", metadata)
                .field("config_drive", config_drive)
                .finish(),
            Self::Guestinfo { properties } => f
                .debug_struct("Guestinfo")
                .field("keys", &properties.keys().collect::<Vec<_>>())
                .finish(),
            Self::Local { files, env } => f
                .debug_struct("Local")
                .field("files", files)
                .field("env", &env.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// Renders what a server receives at boot.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait BootConfig: Send + Sync {
    /// Renders the boot payload for one server in the given format.
    /// Rendering a secret for an environment outside its scope fails.
    async fn render(
        &self,
        context: &BootContext,
        format: BootFormat,
    ) -> Result<BootPayload, PortError>;

    /// A stable fingerprint of the configuration of (environment, role,
    /// release): non-secret content plus secret identities and versions,
    /// never secret values.
    async fn fingerprint(
        &self,
        environment: &EnvironmentName,
        role: &RoleName,
        release: &ReleaseLabel,
    ) -> Result<String, PortError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_debug_is_redacted() {
        let canary = "canary-7f1e-secret";
        let mut env = BTreeMap::new();
        env.insert("DB_PASSWORD".to_owned(), SecretString::from(canary));
        let payload = BootPayload::Local {
            files: vec![BootFile {
                path: "tls.key".into(),
                mode: 0o600,
                owner: None,
                content: SecretSlice::from(canary.as_bytes().to_vec()),
            }],
            env,
        };
        let shown = format!("{payload:?}");
        assert!(!shown.contains(canary), "{shown}");
        assert!(shown.contains("DB_PASSWORD") && shown.contains("tls.key"));
        let cloud = BootPayload::CloudInit {
            user_data: SecretSlice::from(canary.as_bytes().to_vec()),
        };
        assert!(!format!("{cloud:?}").contains(canary));
    }
}
