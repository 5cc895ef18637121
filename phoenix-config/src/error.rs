//! The crate's errors. None of them ever holds a secret value: secrets
//! are named by their identity, rendered text never enters an error, and
//! template error messages are scrubbed of every resolved secret before
//! they are kept.

use std::fmt;
use std::path::PathBuf;

use phoenix_core::ports::{ErrorKind, PortError};

/// Where in the configuration something was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file, relative to the configuration directory
    /// (e.g. `env/prod.toml`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, where known.
    pub column: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(c) => write!(f, "{}:{}:{}", self.file, self.line, c),
            None => write!(f, "{}:{}", self.file, self.line),
        }
    }
}

/// Why a configuration could not be loaded, previewed or rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file or directory could not be read.
    #[error("cannot read {path}")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The directory does not follow the documented layout.
    #[error("configuration layout: {path}: {reason}")]
    Layout {
        /// The offending path, relative to the configuration directory.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A file is not valid TOML.
    #[error("{location}: TOML syntax error: {message}")]
    Syntax {
        /// Where.
        location: Location,
        /// The parser's message.
        message: String,
    },
    /// A key is unknown, has the wrong type, or an invalid value.
    #[error("{location}: key `{key}`: {message}")]
    InvalidKey {
        /// Where.
        location: Location,
        /// The dotted key path.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A required key is missing once the layers are merged.
    #[error("{location}: key `{key}` is required (for environment {environment}, role {role})")]
    MissingKey {
        /// Where the entry that lacks it was last set.
        location: Location,
        /// The dotted key path that is missing.
        key: String,
        /// The environment being merged.
        environment: String,
        /// The role being merged.
        role: String,
    },
    /// A template does not compile.
    #[error("{location}: template `{key}` does not compile: {message}")]
    TemplateSyntax {
        /// Where the template was written.
        location: Location,
        /// The dotted key path of the template.
        key: String,
        /// The template engine's message.
        message: String,
    },
    /// A template refers to a variable that does not exist.
    #[error("{location}: template `{key}` refers to undefined variable `{variable}`{hint}")]
    UndefinedVariable {
        /// Where the template was written.
        location: Location,
        /// The dotted key path of the template.
        key: String,
        /// The variable, dotted (`values.db.host`).
        variable: String,
        /// Extra guidance, possibly empty.
        hint: String,
    },
    /// A template failed while rendering.
    #[error("{location}: template `{key}` failed to render: {message}")]
    TemplateRender {
        /// Where the template was written.
        location: Location,
        /// The dotted key path of the template.
        key: String,
        /// The engine's message, scrubbed of every secret value.
        message: String,
    },
    /// The environment has no `env/<name>.toml`.
    #[error("unknown environment {0}: no env/{0}.toml in the configuration")]
    UnknownEnvironment(String),
    /// The role has no `role/<name>.toml`.
    #[error("unknown role {0}: no role/{0}.toml in the configuration")]
    UnknownRole(String),
    /// A secret was requested for an environment outside its scope.
    #[error("secret `{secret}` may not be rendered for environment {environment} (its scope is {scope})")]
    SecretOutOfScope {
        /// The secret's name.
        secret: String,
        /// The environment that asked for it.
        environment: String,
        /// The environments it is scoped to.
        scope: String,
    },
    /// A secret could not be resolved from its source.
    #[error("secret `{secret}` is unavailable from {source_description}: {reason}")]
    SecretUnavailable {
        /// The secret's name.
        secret: String,
        /// Where it was looked for (an environment variable's name, a
        /// path, a command's program), never its value.
        source_description: String,
        /// Why.
        reason: String,
        /// Whether trying again may succeed (a command that timed out).
        transient: bool,
    },
    /// Compressing a payload failed.
    #[error("cannot compress the payload")]
    Compression(#[source] std::io::Error),
    /// A rendered value breaks a rule of the boot mechanism.
    #[error("{mechanism}: {reason}")]
    Limit {
        /// The mechanism (`EC2 user data`, `Nova metadata`, …).
        mechanism: &'static str,
        /// What does not fit.
        reason: String,
    },
}

impl ConfigError {
    /// The port error for this error, for [`phoenix_core::ports::BootConfig`]
    /// callers. The message is this error's text, which never holds a
    /// secret value.
    pub fn into_port_error(self, operation: impl Into<String>) -> PortError {
        let message = self.to_string();
        let kind = match &self {
            Self::Io { .. } => ErrorKind::Permanent(message),
            Self::UnknownEnvironment(_) | Self::UnknownRole(_) => ErrorKind::NotFound(message),
            Self::SecretUnavailable {
                transient: true, ..
            } => ErrorKind::Temporary(message),
            Self::SecretUnavailable { .. } => ErrorKind::Permanent(message),
            _ => ErrorKind::Invalid(message),
        };
        let error = PortError::new(operation, kind);
        match self {
            // The io error is the only source with more to say than our text.
            Self::Io { source, .. } => error.with_source(source),
            _ => error,
        }
    }
}
