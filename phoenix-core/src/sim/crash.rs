use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::memory_store::MemoryStore;
use crate::ports::{Commit, StateStore, StoreError};
use crate::store_layer::{CommitInterceptor, Intercepted};

/// Which commits a crash point counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrashOn {
    /// Every commit.
    #[default]
    Any,
    /// Only commits that append an event of this kind (its serialised
    /// tag, such as `step_failed`): a crash aimed at one moment.
    Event(&'static str),
    /// Only commits made after one that appends an event of this kind (the
    /// commit after `launch_requested` follows the launch call itself).
    After(&'static str),
}

/// When the orchestrator "dies".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPoint {
    /// At the n-th counted commit from when it was armed (1 = the next one).
    pub commit: u64,
    /// Whether that commit lands before the crash.
    pub after_write: bool,
    /// Which commits count.
    pub on: CrashOn,
}

impl CrashPoint {
    /// At the n-th commit of any kind.
    pub fn at(commit: u64, after_write: bool) -> Self {
        Self {
            commit,
            after_write,
            on: CrashOn::Any,
        }
    }
}

#[derive(Debug, Default)]
struct Arming {
    point: Option<CrashPoint>,
    seen: u64,
    /// For `CrashOn::After`: the tagged commit went by.
    passed: bool,
}

/// Store outages: each commit may start one, during which commits fail.
#[derive(Debug)]
struct Outages {
    rng: ChaCha8Rng,
    p: f64,
    longest: Duration,
    until: Option<Instant>,
}

/// Simulates the orchestrator dying at a chosen commit: the commit (maybe
/// applied) never returns, and a `Notify` fires so the test drops the
/// orchestrator's future, as a SIGKILL would. Also simulates store
/// outages (see [`super::Faults::store_blip`]).
#[derive(Debug, Clone)]
pub struct CrashSwitch {
    memory: MemoryStore,
    arming: Arc<Mutex<Arming>>,
    crashed: Arc<Notify>,
    outages: Arc<Mutex<Outages>>,
}

/// The simulation's store: a [`MemoryStore`] behind a [`CrashSwitch`].
pub type CrashingStore = Intercepted<CrashSwitch>;

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CrashingStore {
    pub(crate) fn over(memory: MemoryStore, seed: u64) -> Self {
        Intercepted::new(
            Arc::new(memory.clone()),
            CrashSwitch {
                memory,
                arming: Arc::new(Mutex::new(Arming::default())),
                crashed: Arc::new(Notify::new()),
                outages: Arc::new(Mutex::new(Outages {
                    rng: ChaCha8Rng::seed_from_u64(seed ^ 0x0057_07e0_u64),
                    p: 0.0,
                    longest: Duration::ZERO,
                    until: None,
                })),
            },
        )
    }

    /// The memory store underneath (to inspect everything it holds).
    pub fn inner(&self) -> &MemoryStore {
        &self.interceptor().memory
    }

    /// Arms a crash, counted from the next commit.
    pub fn arm(&self, point: CrashPoint) {
        let mut a = guard(&self.interceptor().arming);
        a.point = Some(point);
        a.seen = 0;
        a.passed = false;
    }

    /// Disarms.
    pub fn disarm(&self) {
        guard(&self.interceptor().arming).point = None;
    }

    /// Fires when an armed crash happens.
    pub fn crashed(&self) -> Arc<Notify> {
        self.interceptor().crashed.clone()
    }

    /// Each commit starts an outage with probability `p`, lasting up to
    /// `longest`.
    pub fn set_outages(&self, p: f64, longest: Duration) {
        let mut o = guard(&self.interceptor().outages);
        o.p = p;
        o.longest = longest;
        if p <= 0.0 {
            o.until = None;
        }
    }

    /// True while a store outage lasts.
    pub fn in_outage(&self) -> bool {
        guard(&self.interceptor().outages)
            .until
            .is_some_and(|t| Instant::now() < t)
    }
}

fn tagged(commit: &Commit, tag: &str) -> bool {
    let needle = format!("\"event\":\"{tag}\"");
    commit
        .events
        .iter()
        .any(|e| String::from_utf8_lossy(&e.payload).contains(&needle))
}

impl CrashSwitch {
    fn should_crash(&self, commit: &Commit) -> Option<CrashPoint> {
        let mut a = guard(&self.arming);
        let point = a.point?;
        match point.on {
            CrashOn::Any => {}
            CrashOn::Event(tag) => {
                if !tagged(commit, tag) {
                    return None;
                }
            }
            CrashOn::After(tag) => {
                if !a.passed {
                    a.passed = tagged(commit, tag);
                    return None;
                }
            }
        }
        a.seen += 1;
        if a.seen >= point.commit {
            a.point = None;
            Some(point)
        } else {
            None
        }
    }

    /// `Some(landed)` when this commit fails for an outage (and whether it
    /// landed before its answer was lost).
    fn outage(&self) -> Option<bool> {
        let mut o = guard(&self.outages);
        let now = Instant::now();
        if o.until.is_some_and(|t| now < t) {
            return Some(false);
        }
        let p = o.p.min(1.0);
        if p <= 0.0 || !o.rng.random_bool(p) {
            return None;
        }
        let ms = u64::try_from(o.longest.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let length = Duration::from_millis(o.rng.random_range(1..=ms));
        o.until = Some(now + length);
        Some(o.rng.random_bool(0.5))
    }
}

fn unavailable(why: &str) -> StoreError {
    StoreError::Unavailable {
        operation: "commit".into(),
        source: why.to_owned().into(),
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
        if let Some(point) = self.should_crash(&commit) {
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
        match self.outage() {
            Some(true) => {
                let _ = next.commit(commit).await;
                Err(unavailable("connection lost before the answer"))
            }
            Some(false) => Err(unavailable("the database is unreachable")),
            None => next.commit(commit).await,
        }
    }
}
