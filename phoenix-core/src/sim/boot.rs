use std::collections::BTreeMap;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use crate::id::{EnvironmentName, ReleaseLabel, RoleName};
use crate::ports::{
    BootConfig, BootContext, BootFile, BootFormat, BootPayload, ErrorKind, PortError,
};

/// A minimal boot configuration for the simulation: environment variables
/// naming the release and role, plus one secret per environment that is
/// only ever rendered for that environment (so tests can plant a canary
/// and look for it everywhere it must not be).
#[derive(Debug, Clone, Default)]
pub struct SimBootConfig {
    secrets: BTreeMap<EnvironmentName, (String, SecretString)>,
    /// Secrets rotate every so often (from this instant): two renders of
    /// the same server's payload then differ.
    rotation: Option<(std::time::Duration, tokio::time::Instant)>,
}

impl SimBootConfig {
    /// Gives `environment` a secret called `name`.
    pub fn with_secret(mut self, environment: EnvironmentName, name: &str, value: &str) -> Self {
        self.secrets
            .insert(environment, (name.to_owned(), SecretString::from(value)));
        self
    }

    /// Rotates every secret every `every` from now (the rendered value
    /// gains a version suffix).
    pub fn rotating(mut self, every: std::time::Duration) -> Self {
        self.rotation = Some((every, tokio::time::Instant::now()));
        self
    }

    fn version(&self) -> u128 {
        match self.rotation {
            Some((every, since)) if !every.is_zero() => {
                tokio::time::Instant::now()
                    .saturating_duration_since(since)
                    .as_millis()
                    / every.as_millis().max(1)
            }
            _ => 0,
        }
    }
}

#[async_trait]
impl BootConfig for SimBootConfig {
    async fn render(
        &self,
        context: &BootContext,
        format: BootFormat,
    ) -> Result<BootPayload, PortError> {
        let mut env = BTreeMap::new();
        env.insert(
            "PHOENIX_RELEASE".to_owned(),
            SecretString::from(context.release.to_string()),
        );
        env.insert(
            "PHOENIX_ROLE".to_owned(),
            SecretString::from(context.role.to_string()),
        );
        env.insert(
            "PHOENIX_ENVIRONMENT".to_owned(),
            SecretString::from(context.environment.to_string()),
        );
        if let Some((name, value)) = self.secrets.get(&context.environment) {
            let value = match self.version() {
                0 => value.clone(),
                v => SecretString::from(format!("{}#{v}", value.expose_secret())),
            };
            env.insert(name.clone(), value);
        }
        let doc: String = env
            .iter()
            .map(|(k, v)| format!("{k}={}\n", v.expose_secret()))
            .collect();
        Ok(match format {
            BootFormat::Local => BootPayload::Local {
                files: vec![BootFile {
                    path: "phoenix.env".into(),
                    mode: 0o600,
                    owner: None,
                    content: SecretSlice::from(doc.into_bytes()),
                }],
                env,
            },
            BootFormat::CloudInit => BootPayload::CloudInit {
                user_data: SecretSlice::from(
                    format!("#cloud-config\n# {}\n", doc.len()).into_bytes(),
                ),
            },
            other => {
                return Err(PortError::new(
                    "sim: render boot configuration",
                    ErrorKind::Unsupported(format!("format {other:?}")),
                ))
            }
        })
    }

    async fn fingerprint(
        &self,
        environment: &EnvironmentName,
        role: &RoleName,
        release: &ReleaseLabel,
    ) -> Result<String, PortError> {
        let secret = self
            .secrets
            .get(environment)
            .map(|(name, _)| format!("{name}@v1"))
            .unwrap_or_default();
        Ok(crate::fingerprint_of(&format!(
            "{environment}\n{role}\n{release}\n{secret}"
        )))
    }
}
