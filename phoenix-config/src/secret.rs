//! Secret references: where a secret comes from, which environments may
//! receive it, and its operator-declared version. Values are resolved only
//! when a boot payload is rendered, only for secrets that are in scope,
//! and live in [`secrecy`] wrappers from then on.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use phoenix_core::id::EnvironmentName;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use crate::error::ConfigError;

/// The version a secret has when its reference declares none. Bump the
/// version when the value rotates: it is part of the fingerprint, so a
/// rotation yields a new release fingerprint, and resolved values are
/// cached by version.
pub const DEFAULT_VERSION: &str = "0";

/// How long a secret command may run when its reference declares no
/// `timeout_secs`.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretSource {
    /// An environment variable of the rendering process.
    Env(String),
    /// A file, as written in the configuration and as resolved against
    /// the configuration directory.
    File {
        /// As written.
        written: String,
        /// Resolved.
        path: PathBuf,
    },
    /// A command (no shell) whose standard output, less one trailing
    /// newline, is the value. It runs in the configuration directory.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Where it runs.
        dir: PathBuf,
    },
}

impl SecretSource {
    /// A description for errors: the variable, path or program, never the
    /// value.
    pub fn description(&self) -> String {
        match self {
            Self::Env(name) => format!("environment variable {name}"),
            Self::File { written, .. } => format!("file {written}"),
            Self::Command { argv, .. } => format!(
                "command `{}`",
                argv.first().map(String::as_str).unwrap_or_default()
            ),
        }
    }

    /// The identity of the source as written in the configuration (stable
    /// across machines: relative paths stay relative).
    pub fn identity(&self) -> String {
        match self {
            Self::Env(name) => format!("env:{name}"),
            Self::File { written, .. } => format!("file:{written}"),
            Self::Command { argv, .. } => format!("command:{}", argv.join(" ")),
        }
    }
}

/// The environments a secret may be rendered for: names, or prefixes
/// written with a trailing `*` (`ci-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(Vec<String>);

impl Scope {
    pub(crate) fn new(entries: Vec<String>) -> Self {
        Self(entries)
    }

    /// Whether `environment` may receive the secret.
    pub fn allows(&self, environment: &EnvironmentName) -> bool {
        let env = environment.as_str();
        self.0.iter().any(|entry| match entry.strip_suffix('*') {
            Some(prefix) => env.starts_with(prefix),
            None => env == entry,
        })
    }

    /// The entries as written.
    pub fn entries(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.0.join(", "))
    }
}

/// A reference to a secret: identity, source, scope and version. It holds
/// no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub(crate) name: String,
    pub(crate) source: SecretSource,
    pub(crate) scope: Scope,
    pub(crate) version: String,
    pub(crate) timeout: Duration,
}

impl SecretRef {
    /// The name templates use (`secrets.<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Where the value comes from.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }
    /// Who may receive it.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }
    /// The operator-declared version ([`DEFAULT_VERSION`] when absent).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `name@version` from `source`: what the fingerprint records.
    pub fn identity(&self) -> String {
        format!(
            "{}@{} from {}",
            self.name,
            self.version,
            self.source.identity()
        )
    }

    /// Fails unless `environment` is in scope. The error names the secret
    /// and the environment; it never needs the value.
    pub fn check_scope(&self, environment: &EnvironmentName) -> Result<(), ConfigError> {
        if self.scope.allows(environment) {
            Ok(())
        } else {
            Err(ConfigError::SecretOutOfScope {
                secret: self.name.clone(),
                environment: environment.to_string(),
                scope: self.scope.to_string(),
            })
        }
    }

    fn unavailable(&self, reason: impl Into<String>, transient: bool) -> ConfigError {
        ConfigError::SecretUnavailable {
            secret: self.name.clone(),
            source_description: self.source.description(),
            reason: reason.into(),
            transient,
        }
    }

    /// Reads the value from its source.
    async fn resolve(&self) -> Result<SecretString, ConfigError> {
        match &self.source {
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) => Ok(SecretString::from(v)),
                Err(std::env::VarError::NotPresent) => Err(self.unavailable("not set", false)),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(self.unavailable("not valid UTF-8", false))
                }
            },
            SecretSource::File { path, .. } => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| self.unavailable(format!("cannot read it: {e}"), false))?;
                String::from_utf8(bytes)
                    .map(SecretString::from)
                    .map_err(|_| self.unavailable("not valid UTF-8", false))
            }
            SecretSource::Command { argv, dir } => self.run(argv, dir).await,
        }
    }

    async fn run(&self, argv: &[String], dir: &Path) -> Result<SecretString, ConfigError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(self.unavailable("the command is empty", false));
        };
        let child = tokio::process::Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A timed-out command is dropped with its future: kill it too.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.unavailable(format!("cannot start it: {e}"), false))?;
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                self.unavailable(
                    format!("it did not finish within {}s", self.timeout.as_secs_f64()),
                    true,
                )
            })?
            .map_err(|e| self.unavailable(format!("waiting for it failed: {e}"), true))?;
        if !output.status.success() {
            // Standard error may echo what the command was handed or
            // found: report its size, never its text.
            return Err(self.unavailable(
                format!(
                    "it exited with {} ({} bytes on standard error, not shown)",
                    output.status,
                    output.stderr.len()
                ),
                false,
            ));
        }
        let mut text = String::from_utf8(output.stdout)
            .map_err(|_| self.unavailable("not valid UTF-8", false))?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        Ok(SecretString::from(text))
    }
}

/// Resolved values by secret identity and version, so that a thousand
/// servers do not run a secret command a thousand times. A rotation is a
/// version bump, which misses the cache.
#[derive(Default)]
pub(crate) struct SecretCache {
    values: Mutex<HashMap<String, SecretString>>,
}

impl fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretCache { .. }")
    }
}

impl SecretCache {
    /// The value of an in-scope secret: from the cache, or resolved now.
    pub(crate) async fn get(&self, secret: &SecretRef) -> Result<SecretString, ConfigError> {
        let key = secret.identity();
        // Held across resolution: concurrent renders wait for one command
        // instead of each running it.
        let mut values = self.values.lock().await;
        if let Some(v) = values.get(&key) {
            return Ok(v.clone());
        }
        let value = secret.resolve().await?;
        values.insert(key, value.clone());
        Ok(value)
    }
}

/// Replaces every occurrence of a secret value in `message`.
pub(crate) fn scrub(message: &str, secrets: &[SecretString]) -> String {
    let mut out = message.to_owned();
    for s in secrets {
        let value = s.expose_secret();
        if !value.is_empty() {
            out = out.replace(value, "[REDACTED]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn secret(source: SecretSource, scope: &[&str]) -> SecretRef {
        SecretRef {
            name: "db".into(),
            source,
            scope: Scope::new(scope.iter().map(|s| s.to_string()).collect()),
            version: DEFAULT_VERSION.into(),
            timeout: Duration::from_secs(5),
        }
    }

    fn env(name: &str) -> EnvironmentName {
        EnvironmentName::new(name).unwrap()
    }

    #[test]
    fn scopes_match_names_and_prefixes() {
        let s = Scope::new(vec!["prod".into(), "ci-*".into()]);
        assert!(s.allows(&env("prod")));
        assert!(s.allows(&env("ci-7")));
        assert!(!s.allows(&env("production")));
        assert!(!s.allows(&env("staging")));
        assert_eq!(s.to_string(), "[prod, ci-*]");
    }

    #[test]
    fn out_of_scope_names_secret_and_environment() {
        let s = secret(SecretSource::Env("X".into()), &["prod"]);
        let e = s.check_scope(&env("staging")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("`db`") && text.contains("staging"), "{text}");
    }

    #[tokio::test]
    async fn commands_resolve_and_strip_one_newline() {
        let s = secret(
            SecretSource::Command {
                argv: vec!["printf".into(), "s3cr3t\n\n".into()],
                dir: ".".into(),
            },
            &["prod"],
        );
        let v = s.resolve().await.unwrap();
        assert_eq!(v.expose_secret(), "s3cr3t\n");
    }

    #[tokio::test]
    async fn failing_commands_do_not_show_their_output() {
        let s = secret(
            SecretSource::Command {
                argv: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo leaked-value >&2; echo leaked-value; exit 3".into(),
                ],
                dir: ".".into(),
            },
            &["prod"],
        );
        let e = s.resolve().await.unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(!text.contains("leaked-value"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_commands_time_out_and_are_transient() {
        let mut s = secret(
            SecretSource::Command {
                argv: vec!["sleep".into(), "30".into()],
                dir: ".".into(),
            },
            &["prod"],
        );
        s.timeout = Duration::from_millis(200);
        let e = s.resolve().await.unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::SecretUnavailable {
                    transient: true,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn missing_sources_are_reported_by_name() {
        let s = secret(
            SecretSource::Env("PHOENIX_CONFIG_TEST_SURELY_UNSET".into()),
            &["prod"],
        );
        let e = s.resolve().await.unwrap_err().to_string();
        assert!(e.contains("PHOENIX_CONFIG_TEST_SURELY_UNSET") && e.contains("not set"));
        let s = secret(
            SecretSource::File {
                written: "nope.key".into(),
                path: "/nonexistent/nope.key".into(),
            },
            &["prod"],
        );
        let e = s.resolve().await.unwrap_err().to_string();
        assert!(e.contains("file nope.key"), "{e}");
    }

    #[test]
    fn scrub_removes_values() {
        let v = vec![SecretString::from("hunter2")];
        assert_eq!(scrub("bad hunter2 value", &v), "bad [REDACTED] value");
    }
}
