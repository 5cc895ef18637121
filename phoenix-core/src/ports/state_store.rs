use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::BoxError;
use crate::time::Timestamp;

/// A record's value and version. Versions start at 1 and increase by one
/// on every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// Version of this value.
    pub version: u64,
    /// JSON bytes.
    pub value: Vec<u8>,
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// The key must not exist.
    Absent,
    /// The key must be at this version.
    Version(u64),
    /// No expectation (use sparingly).
    Any,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent => f.write_str("absent"),
            Self::Version(v) => write!(f, "version {v}"),
            Self::Any => f.write_str("any version"),
        }
    }
}

/// One record write inside a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Key.
    pub key: String,
    /// Compare-and-swap expectation.
    pub expect: Expect,
    /// New value; `None` deletes the record.
    pub value: Option<Vec<u8>>,
}

/// One event appended to a stream inside a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventAppend {
    /// Stream name, such as `deployments/shop`.
    pub stream: String,
    /// JSON bytes.
    pub payload: Vec<u8>,
}

/// A fencing token: a commit carrying it is refused once a newer lease was
/// granted, so a stalled holder that comes back cannot write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// Lease name.
    pub lease: String,
    /// Token the holder received.
    pub token: u64,
}

/// An atomic unit of writes: every write's expectation holds and the fence
/// is current, and then all writes and events land, or nothing does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// Fence, for writes made under a lease.
    pub fence: Option<Fence>,
    /// Record writes.
    pub writes: Vec<Write>,
    /// Event appends.
    pub events: Vec<EventAppend>,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Stream.
    pub stream: String,
    /// Position in the stream, from 1.
    pub seq: u64,
    /// JSON bytes.
    pub payload: Vec<u8>,
}

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Lease name, such as `deployments/shop`.
    pub name: String,
    /// Who holds it.
    pub holder: String,
    /// Fencing token, strictly increasing per name across grants.
    pub token: u64,
    /// When it expires unless renewed.
    pub expires_at: Timestamp,
}

impl Lease {
    /// The fence for commits made under this lease.
    pub fn fence(&self) -> Fence {
        Fence {
            lease: self.name.clone(),
            token: self.token,
        }
    }
}

/// Errors from a state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare-and-swap expectation did not hold.
    #[error("conflict on {key}: expected {expected}, found {}", found.map_or("nothing".to_owned(), |v| format!("version {v}")))]
    Conflict {
        /// Key.
        key: String,
        /// What the write expected.
        expected: Expect,
        /// What was there.
        found: Option<u64>,
    },
    /// The commit's fencing token is stale.
    #[error("write fenced off: lease {lease} token {token} is stale (current token {current})")]
    Fenced {
        /// Lease.
        lease: String,
        /// The stale token.
        token: u64,
        /// The current token.
        current: u64,
    },
    /// Someone else holds the lease.
    #[error("lease {name} is held by {holder} until {expires_at}")]
    LeaseHeld {
        /// Lease.
        name: String,
        /// Current holder.
        holder: String,
        /// When it expires unless renewed.
        expires_at: Timestamp,
    },
    /// A renew or release of a lease that is no longer ours.
    #[error("lease {name} token {token} is no longer held by {holder}")]
    LeaseLost {
        /// Lease.
        name: String,
        /// The caller.
        holder: String,
        /// The caller's token.
        token: u64,
    },
    /// The store could not be reached; retrying may help.
    #[error("state store unavailable during {operation}")]
    Unavailable {
        /// What was being done.
        operation: String,
        /// Cause.
        #[source]
        source: BoxError,
    },
    /// The caller's input cannot be stored (not UTF-8, a NUL byte, a key the
    /// back end refuses); retrying will not help.
    #[error("state store refused the input of {operation}")]
    Invalid {
        /// What was being done.
        operation: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A stored value could not be decoded.
    #[error("record {key} is corrupt")]
    Corrupt {
        /// Key.
        key: String,
        /// Cause.
        #[source]
        source: BoxError,
    },
    /// Any other back-end failure.
    #[error("state store failed during {operation}")]
    Backend {
        /// What was being done.
        operation: String,
        /// Cause.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// True when retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// Versioned records with compare-and-swap, append-only event history and
/// leases with fencing tokens.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Reads one record.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;

    /// Reads every record whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError>;

    /// Applies a commit atomically. Returns the new version of each write
    /// (0 for deletes), in order.
    async fn commit(&self, commit: Commit) -> Result<Vec<u64>, StoreError>;

    /// Events of a stream with `seq > after`, oldest first, at most `limit`.
    async fn events(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Acquires a lease for `ttl`, or fails with `LeaseHeld`. An expired
    /// lease is granted with a higher token.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError>;

    /// Extends a lease we hold, or fails with `LeaseLost`.
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError>;

    /// Gives a lease up; releasing one that is no longer ours succeeds.
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError>;

    /// The current holder of a lease, if it is held and not expired.
    async fn current_lease(&self, name: &str) -> Result<Option<Lease>, StoreError>;
}
