use std::fmt;
use std::time::Duration;

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, classified so that a caller can decide whether to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Rate limited (HTTP 413/429, `RequestLimitExceeded`); retry after the
    /// given delay when the provider names one.
    Throttled {
        /// The provider's Retry-After, if any.
        retry_after: Option<Duration>,
    },
    /// A transient fault (5xx, timeouts, connection resets, a balancer
    /// that is immutable while it updates): retry with backoff.
    Temporary(String),
    /// The thing does not exist (or is not visible yet).
    NotFound(String),
    /// The request conflicts with the current state and will not succeed
    /// by retrying as is.
    Conflict(String),
    /// The request is malformed or names something invalid.
    Invalid(String),
    /// Credentials are missing, wrong or lack permission.
    Unauthorized(String),
    /// The back end cannot do this.
    Unsupported(String),
    /// The provider answered something we cannot use (garbage, a missing
    /// field).
    BadResponse(String),
    /// Any other permanent failure.
    Permanent(String),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Throttled {
                retry_after: Some(d),
            } => write!(f, "throttled (retry after {}ms)", d.as_millis()),
            Self::Throttled { retry_after: None } => f.write_str("throttled"),
            Self::Temporary(m) => write!(f, "temporarily unavailable: {m}"),
            Self::NotFound(m) => write!(f, "not found: {m}"),
            Self::Conflict(m) => write!(f, "conflict: {m}"),
            Self::Invalid(m) => write!(f, "invalid request: {m}"),
            Self::Unauthorized(m) => write!(f, "unauthorized: {m}"),
            Self::Unsupported(m) => write!(f, "not supported: {m}"),
            Self::BadResponse(m) => write!(f, "unusable response: {m}"),
            Self::Permanent(m) => f.write_str(m),
        }
    }
}

/// Whether and how to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Retry, waiting at least the given delay if there is one.
    Throttled(Option<Duration>),
    /// Retry with backoff.
    Temporary,
    /// Do not retry.
    Permanent,
}

/// An error from a port, carrying which operation failed, how it is
/// classified, and the underlying cause.
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {kind}")]
pub struct PortError {
    /// The operation that failed, such as `nova: create server web-1`.
    pub operation: String,
    /// Its classification.
    pub kind: ErrorKind,
    /// The cause.
    #[source]
    pub source: Option<BoxError>,
}

impl PortError {
    /// An error without a cause.
    pub fn new(operation: impl Into<String>, kind: ErrorKind) -> Self {
        Self {
            operation: operation.into(),
            kind,
            source: None,
        }
    }

    /// Attaches a cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The same failure for another subject of one call that failed as a
    /// whole (a batch): same operation and kind, the cause kept as text.
    pub fn for_another(&self) -> Self {
        let copy = Self::new(self.operation.clone(), self.kind.clone());
        match &self.source {
            Some(s) => copy.with_source(s.to_string()),
            None => copy,
        }
    }

    /// A transient failure.
    pub fn temporary(operation: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(operation, ErrorKind::Temporary(message.into()))
    }

    /// A permanent failure.
    pub fn permanent(operation: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(operation, ErrorKind::Permanent(message.into()))
    }

    /// Not found.
    pub fn not_found(operation: impl Into<String>, what: impl Into<String>) -> Self {
        Self::new(operation, ErrorKind::NotFound(what.into()))
    }

    /// Throttled, with an optional Retry-After.
    pub fn throttled(operation: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self::new(operation, ErrorKind::Throttled { retry_after })
    }

    /// How to retry this error.
    pub fn retry_class(&self) -> RetryClass {
        match &self.kind {
            ErrorKind::Throttled { retry_after } => RetryClass::Throttled(*retry_after),
            ErrorKind::Temporary(_) => RetryClass::Temporary,
            _ => RetryClass::Permanent,
        }
    }

    /// True when retrying may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retry_class() != RetryClass::Permanent
    }

    /// True for "not found".
    pub fn is_not_found(&self) -> bool {
        matches!(self.kind, ErrorKind::NotFound(_))
    }

    /// The operation, the kind and every cause, on one line: for events
    /// and journals, which must not hold error objects.
    pub fn chain(&self) -> String {
        crate::error_chain(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_and_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = PortError::temporary("nova: list servers", "connection failed").with_source(io);
        assert!(e.is_retryable());
        assert_eq!(
            e.chain(),
            "nova: list servers: temporarily unavailable: connection failed: reset by peer"
        );
        let t = PortError::throttled("ec2", Some(Duration::from_secs(3)));
        assert_eq!(
            t.retry_class(),
            RetryClass::Throttled(Some(Duration::from_secs(3)))
        );
        assert!(!PortError::not_found("glance", "image x").is_retryable());
    }
}
