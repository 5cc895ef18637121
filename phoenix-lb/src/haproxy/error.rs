//! What can go wrong talking to HAProxy, and how it maps onto
//! [`PortError`].

use std::net::SocketAddr;
use std::time::Duration;

use phoenix_core::id::ServerId;
use phoenix_core::ports::{ErrorKind, PortError};

use super::RuntimeAddr;

/// Why a runtime-API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HaproxyError {
    /// The runtime API's socket could not be reached.
    #[error("HAProxy runtime API at {addr}: connecting failed")]
    Connect {
        /// The socket.
        addr: RuntimeAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing failed while a command was under way.
    #[error("HAProxy runtime API at {addr}: the connection failed during `{command}`")]
    Io {
        /// The socket.
        addr: RuntimeAddr,
        /// The command (the first of a batch) under way.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// HAProxy closed the connection before its answer was complete.
    #[error("HAProxy runtime API at {addr}: the connection closed before the answer to `{command}` was complete")]
    Closed {
        /// The socket.
        addr: RuntimeAddr,
        /// The command (the first of a batch) under way.
        command: String,
    },
    /// No complete answer in time.
    #[error("HAProxy runtime API at {addr}: no complete answer to `{command}` within {after:?}")]
    Timeout {
        /// The socket.
        addr: RuntimeAddr,
        /// The command (the first of a batch) under way.
        command: String,
        /// The limit.
        after: Duration,
    },
    /// An answer larger than this client accepts.
    #[error("HAProxy runtime API at {addr}: the answer to `{command}` exceeds {limit} bytes")]
    TooLarge {
        /// The socket.
        addr: RuntimeAddr,
        /// The command (the first of a batch) under way.
        command: String,
        /// The limit.
        limit: usize,
    },
    /// HAProxy refused the command; `message` is its answer, verbatim.
    #[error("HAProxy refused `{command}`: {message}")]
    Command {
        /// The command.
        command: String,
        /// HAProxy's answer (trimmed of surrounding blank lines).
        message: String,
    },
    /// HAProxy answered something this client cannot read.
    #[error(
        "HAProxy answered `{command}` with output that cannot be read ({reason}): {excerpt:?}"
    )]
    Unparsable {
        /// The command.
        command: String,
        /// What is wrong with it.
        reason: String,
        /// The start of the output.
        excerpt: String,
    },
    /// A server is already in the backend under the member's name, at
    /// another address.
    #[error(transparent)]
    EndpointConflict(Box<EndpointConflict>),
    /// One call names a server twice, at two addresses.
    #[error("server {server} is named twice in one call, at {first} and at {second}")]
    DuplicateTarget {
        /// The server.
        server: ServerId,
        /// Its first endpoint.
        first: SocketAddr,
        /// Its second endpoint.
        second: SocketAddr,
    },
    /// A batch larger than the balancer accepts.
    #[error("{count} servers in one call; this balancer takes at most {max}")]
    BatchTooLarge {
        /// Servers asked for.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A setting is out of range.
    #[error("HAProxy balancer setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The builder method that set it.
        setting: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
}

impl HaproxyError {
    /// HAProxy's own message, when HAProxy refused a command.
    pub fn haproxy_message(&self) -> Option<&str> {
        match self {
            Self::Command { message, .. } => Some(message),
            Self::EndpointConflict(c) => Some(&c.message),
            _ => None,
        }
    }

    /// Whether HAProxy said the server does not exist.
    pub fn is_no_such_server(&self) -> bool {
        matches!(self, Self::Command { message, .. } if message.starts_with("No such server"))
    }

    /// Whether the failure is about reaching HAProxy (worth retrying),
    /// not about what was asked.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Io { .. } | Self::Closed { .. } | Self::Timeout { .. } => {
                true
            }
            Self::Command { message, .. } => message.starts_with(STILL_HAS_CONNECTIONS),
            _ => false,
        }
    }

    /// The [`ErrorKind`] this error maps to.
    pub fn kind(&self) -> ErrorKind {
        let text = self.to_string();
        match self {
            _ if self.is_transient() => ErrorKind::Temporary(text),
            Self::TooLarge { .. } | Self::Unparsable { .. } => ErrorKind::BadResponse(text),
            Self::EndpointConflict(_) => ErrorKind::Conflict(text),
            Self::BatchTooLarge { .. }
            | Self::InvalidSetting { .. }
            | Self::DuplicateTarget { .. } => ErrorKind::Invalid(text),
            Self::Command { message, .. } => classify(message, text),
            _ => ErrorKind::Permanent(text),
        }
    }

    /// This error as a [`PortError`] of `operation`, keeping it as the
    /// source.
    pub fn into_port_error(self, operation: impl Into<String>) -> PortError {
        PortError::new(operation, self.kind()).with_source(self)
    }
}

/// A server already in the backend under a member's name, at another
/// address than the one asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "server {server} is in HAProxy backend {backend} as {name} at {current}, not {requested}: \
     detach it first (HAProxy: {message})"
)]
#[non_exhaustive]
pub struct EndpointConflict {
    /// The backend.
    pub backend: String,
    /// The server.
    pub server: ServerId,
    /// Its HAProxy name.
    pub name: String,
    /// Where it is now.
    pub current: SocketAddr,
    /// Where it was asked to be.
    pub requested: SocketAddr,
    /// HAProxy's answer to the `add server`, verbatim.
    pub message: String,
}

/// HAProxy's answer to `del server` while connections remain.
pub(crate) const STILL_HAS_CONNECTIONS: &str = "Server still has connections attached";

/// HAProxy's answer to `add server` with a name already in the backend.
pub(crate) const ALREADY_EXISTS: &str = "Already exists a server with the same name";

/// Classifies one of HAProxy's refusals by its message (HAProxy 2.6 gives
/// no status codes on the CLI).
fn classify(message: &str, text: String) -> ErrorKind {
    let m = message.to_ascii_lowercase();
    if m.contains("permission denied") {
        ErrorKind::Unauthorized(text)
    } else if m.starts_with("no such server") {
        ErrorKind::NotFound(text)
    } else if m.starts_with("already exists")
        || m.starts_with("only servers in maintenance")
        || m.contains("dynamic load-balancing")
        || m.contains("not supported")
    {
        ErrorKind::Conflict(text)
    } else if m.starts_with("unknown command")
        || m.starts_with("unknown keyword")
        || m.starts_with("invalid")
        || m.contains("not permitted")
        || m.contains("between 0 and 256")
        || m.starts_with("require")
    {
        ErrorKind::Invalid(text)
    } else {
        ErrorKind::Permanent(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(message: &str) -> HaproxyError {
        HaproxyError::Command {
            command: "x".into(),
            message: message.into(),
        }
    }

    #[test]
    fn classification() {
        let kind = |m: &str| refused(m).kind();
        assert!(matches!(kind("No such server."), ErrorKind::NotFound(_)));
        assert!(matches!(
            kind("Already exists a server with the same name in backend."),
            ErrorKind::Conflict(_)
        ));
        assert!(matches!(
            kind("Server still has connections attached to it, cannot remove it."),
            ErrorKind::Temporary(_)
        ));
        assert!(matches!(
            kind("Permission denied"),
            ErrorKind::Unauthorized(_)
        ));
        assert!(matches!(
            kind("unknown keyword 'x'."),
            ErrorKind::Invalid(_)
        ));
        assert!(matches!(
            kind("character '@' is not permitted in server name 'b@x'."),
            ErrorKind::Invalid(_)
        ));
        assert!(matches!(kind("No such backend."), ErrorKind::Permanent(_)));
        let e = refused("No such server.").into_port_error("haproxy: del");
        assert!(e.chain().contains("No such server."), "{}", e.chain());
        assert!(refused("No such server.").is_no_such_server());
        let io = HaproxyError::Connect {
            addr: RuntimeAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 1))),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(io.is_transient());
        assert!(matches!(io.kind(), ErrorKind::Temporary(_)));
    }
}
