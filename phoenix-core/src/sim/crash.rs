use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::memory_store::MemoryStore;
use crate::ports::{Commit, Lease, StateStore, StoreError, StoredEvent, Versioned};

/// When the orchestrator "dies".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPoint {
    /// At the n-th commit from when it was armed (1 = the next one).
    pub commit: u64,
    /// Whether that commit lands before the crash.
    pub after_write: bool,
}

#[derive(Debug, Default)]
struct Arming {
    point: Option<CrashPoint>,
    seen: u64,
}

/// A [`MemoryStore`] that can simulate the orchestrator dying at a chosen
/// commit: the commit (maybe applied) never returns, and the `Notify`
/// fires so the test drops the orchestrator's future, as a SIGKILL would.
#[derive(Debug, Clone)]
pub struct CrashingStore {
    inner: MemoryStore,
    arming: Arc<Mutex<Arming>>,
    crashed: Arc<Notify>,
    commits: Arc<AtomicU64>,
}

impl CrashingStore {
    pub(crate) fn new(inner: MemoryStore) -> Self {
        Self {
            inner,
            arming: Arc::new(Mutex::new(Arming::default())),
            crashed: Arc::new(Notify::new()),
            commits: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The store underneath.
    pub fn inner(&self) -> &MemoryStore {
        &self.inner
    }

    /// Arms a crash.
    pub fn arm(&self, point: CrashPoint) {
        let mut a = self.arming.lock().unwrap_or_else(|p| p.into_inner());
        a.point = Some(point);
        a.seen = 0;
    }

    /// Disarms.
    pub fn disarm(&self) {
        let mut a = self.arming.lock().unwrap_or_else(|p| p.into_inner());
        a.point = None;
    }

    /// Fires when an armed crash happens.
    pub fn crashed(&self) -> Arc<Notify> {
        self.crashed.clone()
    }

    /// Commits so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn should_crash(&self) -> Option<CrashPoint> {
        let mut a = self.arming.lock().unwrap_or_else(|p| p.into_inner());
        let point = a.point?;
        a.seen += 1;
        if a.seen >= point.commit {
            a.point = None;
            Some(point)
        } else {
            None
        }
    }
}

#[async_trait]
impl StateStore for CrashingStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn commit(&self, commit: Commit) -> Result<Vec<u64>, StoreError> {
        self.commits.fetch_add(1, Ordering::Relaxed);
        if let Some(point) = self.should_crash() {
            if point.after_write {
                let _ = self.inner.commit(commit).await;
            }
            self.crashed.notify_one();
            // The process is gone: this call never returns.
            std::future::pending::<()>().await;
            return Err(StoreError::Backend {
                operation: "commit".into(),
                source: "the orchestrator crashed".into(),
            });
        }
        self.inner.commit(commit).await
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
