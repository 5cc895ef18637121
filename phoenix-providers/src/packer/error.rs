//! Typed errors of a Packer bake, and how they map onto [`PortError`]
//! kinds the executor's retry policy decides on.

use std::path::PathBuf;

use phoenix_core::ports::{ErrorKind, PortError};

/// Why a Packer bake failed. Each variant says what failed and why, and
/// where the build log is when there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackerError {
    /// The packer binary could not be run (not installed, not
    /// executable). Not retried: install packer or set `PHOENIX_PACKER`.
    #[error("packer is not available at {packer}: {source}")]
    Missing {
        /// The binary that was tried.
        packer: PathBuf,
        /// Why it could not run.
        #[source]
        source: std::io::Error,
    },
    /// The template does not parse or does not validate (packer fails
    /// before any build starts). Not retried.
    #[error("template {template} is invalid (packer exit status {status}): {}", errors.join("; "))]
    TemplateInvalid {
        /// The template.
        template: PathBuf,
        /// Packer's exit status, as text (`1`, `signal 9`).
        status: String,
        /// Packer's last error lines.
        errors: Vec<String>,
        /// The build log.
        log: PathBuf,
    },
    /// A build ran and failed (a provisioner failed, the cloud refused).
    /// Retried only when the errors look transient (throttling, timeouts,
    /// connection resets, 5xx).
    #[error("packer build of {template} failed (exit status {status}): {}; log {}", errors.join("; "), log.display())]
    BuildFailed {
        /// The template.
        template: PathBuf,
        /// Packer's exit status, as text.
        status: String,
        /// Packer's last error lines.
        errors: Vec<String>,
        /// The build log.
        log: PathBuf,
        /// Whether the errors look transient.
        transient: bool,
    },
    /// Packer succeeded but reported no artifact this bake can register.
    #[error("packer build of {template} produced no {wanted} artifact (it reported {reported}); log {}", log.display())]
    NoArtifact {
        /// The template.
        template: PathBuf,
        /// What was looked for (`file`, `id`, with the builder id filter).
        wanted: String,
        /// What packer reported, briefly.
        reported: String,
        /// The build log.
        log: PathBuf,
    },
    /// The artifact was built but the image back end refused to register
    /// it; its kind is kept, so a transient refusal is retried.
    #[error("registering packer artifact {artifact} failed: {source}")]
    Registration {
        /// The artifact (a path or an id).
        artifact: String,
        /// The image back end's error.
        #[source]
        source: PortError,
    },
    /// A local file (the template, the log) could not be read or written.
    #[error("packer bake: cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Packer printed something this bake cannot use (no version).
    #[error("packer gave an unusable answer: {0}")]
    BadOutput(String),
}

/// Error texts that mean "try again later" in the clouds packer talks to.
const TRANSIENT: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
    "rate exceeded",
    "Rate exceeded",
    "timeout",
    "timed out",
    "connection reset",
    "connection refused",
    "Service Unavailable",
    "InternalError",
    "503",
    "502",
];

/// Whether packer's error lines look transient.
pub(crate) fn looks_transient(errors: &[String]) -> bool {
    errors
        .iter()
        .any(|e| TRANSIENT.iter().any(|t| e.contains(t)))
}

/// Whether packer failed before any build: the template itself is wrong.
pub(crate) fn is_template_error(errors: &[String]) -> bool {
    errors.iter().any(|e| {
        e.starts_with("Failed to parse template")
            || e.starts_with("Failed to prepare build")
            || e.starts_with("Failed to initialize build")
            || e.starts_with("Error: Failed to prepare build")
            || e.contains("Unknown builder")
            || e.contains("Unknown provisioner")
            || e.contains("Unknown post-processor")
            || e.contains("Error parsing JSON")
            || e.contains("Unsupported argument")
            || e.contains("Missing required argument")
    })
}

impl PackerError {
    /// The [`ErrorKind`] this error maps onto.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Missing { .. } => ErrorKind::Unsupported(self.to_string()),
            Self::TemplateInvalid { .. } => ErrorKind::Invalid(self.to_string()),
            Self::BuildFailed {
                transient: true, ..
            } => ErrorKind::Temporary(self.to_string()),
            Self::BuildFailed { .. } => ErrorKind::Permanent(self.to_string()),
            Self::NoArtifact { .. } | Self::BadOutput(_) => {
                ErrorKind::BadResponse(self.to_string())
            }
            Self::Registration { source, .. } => source.kind.clone(),
            Self::Io { .. } => ErrorKind::Permanent(self.to_string()),
        }
    }

    /// The build log, when the build got far enough to write one.
    pub fn log(&self) -> Option<&PathBuf> {
        match self {
            Self::TemplateInvalid { log, .. }
            | Self::BuildFailed { log, .. }
            | Self::NoArtifact { log, .. } => Some(log),
            _ => None,
        }
    }

    /// As a [`PortError`] of `operation`, keeping this error as its cause.
    pub fn into_port(self, operation: impl Into<String>) -> PortError {
        let kind = self.kind();
        PortError::new(operation, kind).with_source(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let e = PackerError::BuildFailed {
            template: "t.json".into(),
            status: "1".into(),
            errors: vec!["Error launching source instance: RequestLimitExceeded".into()],
            log: "x.log".into(),
            transient: looks_transient(&[
                "Error launching source instance: RequestLimitExceeded".into()
            ]),
        };
        assert!(matches!(e.kind(), ErrorKind::Temporary(_)));
        assert!(e.into_port("packer build").is_retryable());
        assert!(is_template_error(&[
            "Failed to parse template: Error parsing JSON".into()
        ]));
        assert!(!is_template_error(&[
            "Script exited with non-zero exit status: 3".into()
        ]));
        let inner = PortError::temporary("local: bake", "disk busy");
        let e = PackerError::Registration {
            artifact: "/tmp/x".into(),
            source: inner,
        };
        assert!(e.into_port("packer bake").is_retryable());
    }
}
