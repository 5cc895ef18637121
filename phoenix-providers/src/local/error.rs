//! Typed errors of the local provider and their classification into
//! [`PortError`]s.

use std::fmt;
use std::io;
use std::path::PathBuf;

use phoenix_core::ports::{ErrorKind, PortError};

/// How an image's content differs from its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageChange {
    /// A file's content changed.
    Modified {
        /// The file, relative to the image directory.
        path: String,
    },
    /// A file's permissions changed.
    ModeChanged {
        /// The file, relative to the image directory.
        path: String,
        /// The recorded mode.
        expected: u32,
        /// The mode found.
        found: u32,
    },
    /// A file that the manifest does not list was added.
    Added {
        /// The file, relative to the image directory.
        path: String,
    },
    /// A file that the manifest lists is missing.
    Removed {
        /// The file, relative to the image directory.
        path: String,
    },
    /// The manifest no longer matches the image id (the manifest itself
    /// was edited).
    ManifestTampered {
        /// What does not match.
        detail: String,
    },
}

impl ImageChange {
    /// The file concerned, when one file is.
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::Modified { path }
            | Self::ModeChanged { path, .. }
            | Self::Added { path }
            | Self::Removed { path } => Some(path),
            Self::ManifestTampered { .. } => None,
        }
    }
}

impl fmt::Display for ImageChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Modified { path } => write!(f, "file {path:?} changed"),
            Self::ModeChanged {
                path,
                expected,
                found,
            } => write!(
                f,
                "file {path:?} changed mode from {expected:04o} to {found:04o}"
            ),
            Self::Added { path } => write!(f, "file {path:?} was added"),
            Self::Removed { path } => write!(f, "file {path:?} was removed"),
            Self::ManifestTampered { detail } => write!(f, "its manifest was edited: {detail}"),
        }
    }
}

/// An error of the local provider: what failed, on what, and why.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A file system operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done, such as `read manifest`.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A record or manifest on disk is not valid JSON of the expected shape.
    #[error("{} is corrupt", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An image's content no longer matches its manifest.
    #[error("image {image} was modified after baking: {change}; refusing to launch it")]
    ImageModified {
        /// The image.
        image: String,
        /// What changed.
        change: ImageChange,
    },
    /// The request is malformed.
    #[error("{what}: {reason}")]
    Invalid {
        /// What was refused.
        what: String,
        /// Why.
        reason: String,
    },
    /// The thing does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The server records could not be read.
    #[error("cannot read the server records: {0}")]
    Unreadable(String),
    /// The local provider cannot do this.
    #[error("{0}")]
    Unsupported(String),
    /// Starting a process failed.
    #[error("cannot start {}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Signalling or waiting for a process failed.
    #[error("cannot {action} process {pid}")]
    Process {
        /// What was being done.
        action: &'static str,
        /// The process (or group) id.
        pid: i32,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// A process group was still running after SIGKILL.
    #[error("process group {pgid} still has running members {members:?} after SIGKILL")]
    Unkillable {
        /// The group.
        pgid: i32,
        /// Its remaining members.
        members: Vec<i32>,
    },
    /// A blocking task could not complete.
    #[error("a background task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl LocalError {
    /// An I/O error with what was being done and on what path.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A refused input.
    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// The classification of this error.
    pub fn kind(&self) -> ErrorKind {
        let message = self.to_string();
        match self {
            Self::Io { source, .. } | Self::Spawn { source, .. } => match source.kind() {
                io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::AddrInUse
                // Another thread's fork briefly held a just-written file open.
                | io::ErrorKind::ExecutableFileBusy => ErrorKind::Temporary(message),
                io::ErrorKind::PermissionDenied => ErrorKind::Unauthorized(message),
                _ => ErrorKind::Permanent(message),
            },
            Self::Corrupt { .. } | Self::Unreadable(_) => ErrorKind::BadResponse(message),
            Self::ImageModified { .. } => ErrorKind::Permanent(message),
            Self::Invalid { .. } => ErrorKind::Invalid(message),
            Self::NotFound(_) => ErrorKind::NotFound(message),
            Self::Conflict(_) => ErrorKind::Conflict(message),
            Self::Unsupported(_) => ErrorKind::Unsupported(message),
            Self::Process { .. } => ErrorKind::Permanent(message),
            Self::Unkillable { .. } | Self::Task(_) => ErrorKind::Temporary(message),
        }
    }

    /// Converts into a [`PortError`] for `operation`, keeping this error as
    /// the source so that the cause chain is preserved.
    pub fn into_port(self, operation: impl Into<String>) -> PortError {
        PortError::new(operation, self.kind()).with_source(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn chains_name_the_operation_the_path_and_the_cause() {
        let e = LocalError::io(
            "read manifest",
            "/x/manifest.json",
            io::Error::new(io::ErrorKind::NotFound, "no such file"),
        )
        .into_port("local: get image img-1");
        assert_eq!(
            e.chain(),
            "local: get image img-1: cannot read manifest /x/manifest.json: no such file"
        );
        let m = LocalError::ImageModified {
            image: "img-1".into(),
            change: ImageChange::Modified {
                path: "bin/app".into(),
            },
        };
        assert!(m.to_string().contains("\"bin/app\" changed"));
        assert!(!m.into_port("launch").is_retryable());
    }
}
