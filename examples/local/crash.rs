use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::ports::{Commit, Lease, StateStore, StoreError, StoredEvent, Versioned};

/// A store wrapper that kills its own process with SIGKILL at a chosen
/// commit, before or after the write lands: how the fault tests kill a
/// real orchestrator at every journaled step. Set by the environment
/// variables `PHOENIX_CRASH_AT_COMMIT=N` and `PHOENIX_CRASH_BEFORE_WRITE=1`.
#[derive(Clone)]
pub struct KillSwitchStore {
    inner: Arc<dyn StateStore>,
    at: Option<u64>,
    before_write: bool,
    commits: Arc<AtomicU64>,
}

impl std::fmt::Debug for KillSwitchStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KillSwitchStore")
            .field("at", &self.at)
            .field("before_write", &self.before_write)
            .finish_non_exhaustive()
    }
}

impl KillSwitchStore {
    /// Wraps `inner`, armed from the environment (disarmed without it).
    pub fn from_env(inner: Arc<dyn StateStore>) -> Self {
        let at = std::env::var("PHOENIX_CRASH_AT_COMMIT")
            .ok()
            .and_then(|v| v.parse().ok());
        let before_write = std::env::var("PHOENIX_CRASH_BEFORE_WRITE").is_ok_and(|v| v == "1");
        Self {
            inner,
            at,
            before_write,
            commits: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Commits made so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    fn die() -> ! {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; this only runs if the kill was refused.
        std::process::abort()
    }
}

#[async_trait]
impl StateStore for KillSwitchStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn commit(&self, commit: Commit) -> Result<Vec<u64>, StoreError> {
        let n = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        let armed = self.at == Some(n);
        if armed && self.before_write {
            Self::die();
        }
        let result = self.inner.commit(commit).await;
        if armed {
            Self::die();
        }
        result
    }

    async fn events(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.events(stream, after, limit).await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        self.inner.acquire_lease(name, holder, ttl).await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        self.inner.renew_lease(lease, ttl).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.release_lease(lease).await
    }

    async fn current_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        self.inner.current_lease(name).await
    }
}
