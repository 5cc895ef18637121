//! A layer over a [`StateStore`] that intercepts its commits, for tests and
//! tools that pause, fail or kill an orchestrator around a write (the way
//! `tower` layers wrap a service). Reads, events and leases pass through.
//!
//! ```
//! use std::sync::Arc;
//! use phoenix_core::memory_store::MemoryStore;
//! use phoenix_core::ports::{Commit, StateStore, StoreError};
//! use phoenix_core::store_layer::{CommitInterceptor, Intercepted};
//!
//! /// Fails every third commit as if the database were unreachable.
//! struct Flaky;
//!
//! #[async_trait::async_trait]
//! impl CommitInterceptor for Flaky {
//!     async fn commit(&self, n: u64, commit: Commit, next: &dyn StateStore) -> Result<Vec<u64>, StoreError> {
//!         if n % 3 == 0 {
//!             return Err(StoreError::Unavailable { operation: "commit".into(), source: "down".into() });
//!         }
//!         next.commit(commit).await
//!     }
//! }
//!
//! let store = Intercepted::new(Arc::new(MemoryStore::default()), Flaky);
//! # let _ = store;
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::ports::{Commit, Lease, StateStore, StoreError, StoredEvent, Versioned};

/// Decides what happens to each commit.
#[async_trait]
pub trait CommitInterceptor: Send + Sync {
    /// Handles the `n`-th commit (from 1) through this layer; calls
    /// `next.commit(commit)` to write it.
    async fn commit(
        &self,
        n: u64,
        commit: Commit,
        next: &dyn StateStore,
    ) -> Result<Vec<u64>, StoreError>;
}

/// A store whose commits go through an interceptor.
#[derive(Clone)]
pub struct Intercepted<I> {
    next: Arc<dyn StateStore>,
    interceptor: I,
    commits: Arc<AtomicU64>,
}

impl<I: std::fmt::Debug> std::fmt::Debug for Intercepted<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intercepted")
            .field("interceptor", &self.interceptor)
            .field("commits", &self.commits())
            .finish_non_exhaustive()
    }
}

impl<I> Intercepted<I> {
    /// Wraps `next`.
    pub fn new(next: Arc<dyn StateStore>, interceptor: I) -> Self {
        Self {
            next,
            interceptor,
            commits: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The interceptor.
    pub fn interceptor(&self) -> &I {
        &self.interceptor
    }

    /// The wrapped store.
    pub fn wrapped(&self) -> &Arc<dyn StateStore> {
        &self.next
    }

    /// Commits made through this layer so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl<I: CommitInterceptor> StateStore for Intercepted<I> {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.next.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.next.list(prefix).await
    }

    async fn commit(&self, commit: Commit) -> Result<Vec<u64>, StoreError> {
        let n = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        self.interceptor.commit(n, commit, self.next.as_ref()).await
    }

    async fn events(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.next.events(stream, after, limit).await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        self.next.acquire_lease(name, holder, ttl).await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        self.next.renew_lease(lease, ttl).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.next.release_lease(lease).await
    }

    async fn current_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        self.next.current_lease(name).await
    }
}
