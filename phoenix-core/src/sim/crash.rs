use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::memory_store::MemoryStore;
use crate::ports::{Commit, StateStore, StoreError};
use crate::store_layer::{CommitInterceptor, Intercepted};

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

/// Simulates the orchestrator dying at a chosen commit: the commit (maybe
/// applied) never returns, and a `Notify` fires so the test drops the
/// orchestrator's future, as a SIGKILL would.
#[derive(Debug, Clone)]
pub struct CrashSwitch {
    memory: MemoryStore,
    arming: Arc<Mutex<Arming>>,
    crashed: Arc<Notify>,
}

/// The simulation's store: a [`MemoryStore`] behind a [`CrashSwitch`].
pub type CrashingStore = Intercepted<CrashSwitch>;

impl CrashingStore {
    pub(crate) fn over(memory: MemoryStore) -> Self {
        Intercepted::new(
            Arc::new(memory.clone()),
            CrashSwitch {
                memory,
                arming: Arc::new(Mutex::new(Arming::default())),
                crashed: Arc::new(Notify::new()),
            },
        )
    }

    /// The memory store underneath (to inspect everything it holds).
    pub fn inner(&self) -> &MemoryStore {
        &self.interceptor().memory
    }

    /// Arms a crash, counted from the next commit.
    pub fn arm(&self, point: CrashPoint) {
        let mut a = self
            .interceptor()
            .arming
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        a.point = Some(point);
        a.seen = 0;
    }

    /// Disarms.
    pub fn disarm(&self) {
        let mut a = self
            .interceptor()
            .arming
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        a.point = None;
    }

    /// Fires when an armed crash happens.
    pub fn crashed(&self) -> Arc<Notify> {
        self.interceptor().crashed.clone()
    }
}

impl CrashSwitch {
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
impl CommitInterceptor for CrashSwitch {
    async fn commit(
        &self,
        _n: u64,
        commit: Commit,
        next: &dyn StateStore,
    ) -> Result<Vec<u64>, StoreError> {
        if let Some(point) = self.should_crash() {
            if point.after_write {
                let _ = next.commit(commit).await;
            }
            self.crashed.notify_one();
            // The process is gone: this call never returns.
            std::future::pending::<()>().await;
            return Err(StoreError::Backend {
                operation: "commit".into(),
                source: "the orchestrator crashed".into(),
            });
        }
        next.commit(commit).await
    }
}
