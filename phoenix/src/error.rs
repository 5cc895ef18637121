//! [`StackError`]: why a stack (the local one, or one composed from a
//! `phoenix.toml`) failed.

use std::path::PathBuf;

use phoenix_core::id::ReleaseLabel;

/// Why a stack failed: the local one, or one composed from a
/// `phoenix.toml` (whose file errors are [`crate::StackFileError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// A file or directory operation failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The state store could not be opened.
    #[error("cannot open the state store")]
    State(#[source] Box<phoenix_state::OpenError>),
    /// The configuration did not load.
    #[error("cannot load the configuration")]
    Config(#[source] Box<phoenix_config::ConfigError>),
    /// A provider or balancer call failed.
    #[error(transparent)]
    Port(#[from] phoenix_core::ports::PortError),
    /// The embedded balancer did not start.
    #[error("cannot start the embedded balancer")]
    Balancer(#[from] phoenix_lb::embedded::EmbeddedError),
    /// The local haproxy did not start or stop.
    #[cfg(feature = "haproxy")]
    #[error("local haproxy")]
    Haproxy(#[source] Box<phoenix_lb::haproxy::LocalHaproxyError>),
    /// The HAProxy balancer could not be built.
    #[cfg(feature = "haproxy")]
    #[error("HAProxy balancer")]
    HaproxyBalancer(#[source] Box<phoenix_lb::haproxy::HaproxyError>),
    /// No balancer answers on the admin socket.
    #[error("no balancer answers on {} (start one with `phoenix lb serve`)", socket.display())]
    NoBalancer {
        /// The admin socket.
        socket: PathBuf,
        /// Cause.
        #[source]
        source: phoenix_core::ports::PortError,
    },
    /// The balancer's admin socket could not be served.
    #[error("cannot serve the balancer's admin socket")]
    Admin(#[from] phoenix_lb::remote::ServeError),
    /// The probe could not be built.
    #[error("cannot build the probe")]
    Probe(#[from] phoenix_lb::probe::ProbeConfigError),
    /// Phoenix could not be built.
    #[error(transparent)]
    Build(#[from] phoenix_core::phoenix::BuildError),
    /// Records could not be read or written.
    #[error(transparent)]
    Records(#[from] phoenix_core::records::RecordError),
    /// An image or release could not be recorded.
    #[error(transparent)]
    Catalog(Box<phoenix_core::phoenix::CatalogError>),
    /// No plan could be made.
    #[error(transparent)]
    Planning(Box<phoenix_core::ops::PlanningError>),
    /// An operation did not complete.
    #[error(transparent)]
    Exec(Box<phoenix_core::executor::ExecError>),
    /// A name (release, deployment, role, operation) is not valid.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// What it names.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// Something the stack expects did not hold.
    #[error("{0}")]
    Unexpected(String),
}

/// Parses a release label, naming it in the error.
pub(crate) fn release_label(value: &str) -> Result<ReleaseLabel, StackError> {
    value.parse().map_err(|e| StackError::InvalidName {
        what: "release",
        value: value.to_owned(),
        reason: format!("{e}"),
    })
}

impl StackError {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { what, path, source }
    }
}

// The big errors are boxed so that every `Result<_, StackError>` stays small.
macro_rules! boxed_from {
    ($($variant:ident: $ty:ty),* $(,)?) => {
        $(impl From<$ty> for StackError {
            fn from(e: $ty) -> Self {
                Self::$variant(Box::new(e))
            }
        })*
    };
}

boxed_from!(
    State: phoenix_state::OpenError,
    Config: phoenix_config::ConfigError,
    Planning: phoenix_core::ops::PlanningError,
    Exec: phoenix_core::executor::ExecError,
    Catalog: phoenix_core::phoenix::CatalogError,
);

#[cfg(feature = "haproxy")]
boxed_from!(
    Haproxy: phoenix_lb::haproxy::LocalHaproxyError,
    HaproxyBalancer: phoenix_lb::haproxy::HaproxyError,
);
