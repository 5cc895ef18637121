//! Errors from opening a store. Once open, a store reports
//! [`StoreError`]s like every `StateStore`.

use std::path::PathBuf;

use phoenix_core::ports::StoreError;

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The location (`PHOENIX_STATE_URL` or an argument) makes no sense.
    #[error("invalid state store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The PostgreSQL schema name cannot be used.
    #[error("invalid schema name {schema:?}: {reason}")]
    InvalidSchema {
        /// The name as given.
        schema: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database file's path could not be resolved, or its directory
    /// could not be created.
    #[error("cannot prepare the state store path {}", path.display())]
    Filesystem {
        /// Path or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The database was migrated by a newer build of Phoenix; this build
    /// would misread it, so it refuses to touch it.
    #[error(
        "state store schema is at version {found}, newer than the {supported} this build knows"
    )]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// An applied migration's text differs from this build's, so the
    /// database's schema is not the one this build expects.
    #[error("migration {version} ({name}) applied to this database differs from this build's (checksum {found}, expected {expected})")]
    MigrationChanged {
        /// Migration version.
        version: i64,
        /// Migration name.
        name: String,
        /// Checksum recorded in the database.
        found: String,
        /// Checksum of this build's text.
        expected: String,
    },
    /// Connecting, configuring or migrating failed in the database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OpenError {
    /// True when trying again may succeed (for example, another process
    /// held the database locked for longer than the busy timeout).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_retryable())
    }
}
