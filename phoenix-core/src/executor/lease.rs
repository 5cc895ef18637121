//! The deployment lease while a run holds it. It is checked, and renewed
//! when half of it is gone, right before every port call and after every
//! sleep; a call's deadline never reaches past it. So a stalled or slow
//! orchestrator cannot act on servers once another one may own them: at
//! worst it finds its lease lost at its next call and stops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::ports::{Lease, StateStore, StoreError};
use crate::retry::RetryPolicy;
use crate::time::SharedClock;

use super::error::Interruption;

#[derive(Debug)]
struct Held {
    lease: Lease,
    /// Until when, by the tokio clock, the lease is certainly ours.
    valid_until: Instant,
}

struct Inner {
    store: Arc<dyn StateStore>,
    ttl: Duration,
    retry: RetryPolicy,
    timeout: Duration,
    held: Mutex<Held>,
    /// One renewal at a time.
    renewing: tokio::sync::Mutex<()>,
    /// Which deployment's pre-emption requests stop this run (none for an
    /// emergency), and the clock that says whether one is in force.
    watch: Mutex<Option<(crate::id::DeploymentId, SharedClock)>>,
    /// A pre-emption seen: (by, reason).
    preempted: Mutex<Option<(String, String)>>,
}

/// A held lease, shared by every call of one run.
#[derive(Clone)]
pub(crate) struct LeaseKeeper {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper")
            .field("lease", &self.lease())
            .finish_non_exhaustive()
    }
}

fn lost(e: StoreError) -> Interruption {
    match e {
        e @ (StoreError::Fenced { .. }
        | StoreError::LeaseLost { .. }
        | StoreError::LeaseHeld { .. }) => Interruption::LeaseLost(e),
        other => Interruption::Store(other.into()),
    }
}

impl LeaseKeeper {
    /// Keeps `lease`, just granted or renewed (its expiry read by `clock`).
    pub(crate) fn new(
        store: Arc<dyn StateStore>,
        lease: Lease,
        clock: &SharedClock,
        ttl: Duration,
        retry: RetryPolicy,
        timeout: Duration,
    ) -> Self {
        let left = crate::time::elapsed_between(clock.now(), lease.expires_at).min(ttl);
        Self {
            inner: Arc::new(Inner {
                store,
                ttl,
                retry,
                timeout,
                held: Mutex::new(Held {
                    lease,
                    valid_until: Instant::now() + left,
                }),
                renewing: tokio::sync::Mutex::new(()),
                watch: Mutex::new(None),
                preempted: Mutex::new(None),
            }),
        }
    }

    /// Stops this run when an emergency asks for `deployment` (checked at
    /// every safe point: waits, backoffs, between steps).
    pub(crate) fn watch_preemption(&self, deployment: crate::id::DeploymentId, clock: SharedClock) {
        *self.inner.watch.lock().unwrap_or_else(|p| p.into_inner()) = Some((deployment, clock));
    }

    /// Never pre-empted (an emergency run).
    pub(crate) fn exempt(&self) {
        *self.inner.watch.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A pre-emption this run has seen, if any.
    pub(crate) fn preempted(&self) -> Option<Interruption> {
        self.inner
            .preempted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(|(by, reason)| Interruption::Preempted { by, reason })
    }

    /// Looks for a pre-emption request in force (from another holder).
    /// Errors reading it are not a reason to stop (the next read will
    /// tell).
    pub(crate) async fn poll_preemption(&self) -> Result<(), Interruption> {
        if let Some(p) = self.preempted() {
            return Err(p);
        }
        let watch = self
            .inner
            .watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some((deployment, clock)) = watch else {
            return Ok(());
        };
        let read = tokio::time::timeout(
            self.inner.timeout,
            super::preempt::pending(self.inner.store.as_ref(), &deployment),
        )
        .await;
        let holder = self.lease().holder;
        if let Ok(Ok(Some(r))) = read {
            if r.in_force(clock.now()) && r.by != holder {
                *self
                    .inner
                    .preempted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some((r.by, r.reason));
            }
        }
        match self.preempted() {
            Some(p) => Err(p),
            None => Ok(()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.inner.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lease as last granted.
    pub(crate) fn lease(&self) -> Lease {
        self.held().lease.clone()
    }

    /// Kept back from the lease's end, for the clock skew between this
    /// process and the store.
    fn margin(&self) -> Duration {
        (self.inner.ttl / 10).clamp(Duration::from_millis(10), Duration::from_secs(5))
    }

    /// How long the lease is certainly ours from now, less the margin.
    pub(crate) fn usable(&self) -> Duration {
        self.held()
            .valid_until
            .saturating_duration_since(Instant::now())
            .saturating_sub(self.margin())
    }

    /// Makes sure the lease is ours for a while: renews it when half of it
    /// is gone (or it lapsed). Returns how long it is certainly ours, the
    /// limit of any call or sleep that follows. A lease another holder took
    /// is lost for good.
    pub(crate) async fn ensure(&self) -> Result<Duration, Interruption> {
        let half = self.inner.ttl / 2;
        if self.usable() > half {
            return Ok(self.usable());
        }
        let _one = self.inner.renewing.lock().await;
        if self.usable() > half {
            return Ok(self.usable());
        }
        let lease = self.lease();
        let store = self.inner.store.clone();
        let ttl = self.inner.ttl;
        let timeout = self.inner.timeout;
        let started = Instant::now();
        let renewed = self
            .inner
            .retry
            .run(|| {
                let store = store.clone();
                let lease = lease.clone();
                async move {
                    match tokio::time::timeout(timeout, store.renew_lease(&lease, ttl)).await {
                        Ok(r) => r,
                        Err(_) => Err(StoreError::Unavailable {
                            operation: "renewing the deployment lease".into(),
                            source: format!("no answer within {}", crate::time::human(timeout))
                                .into(),
                        }),
                    }
                }
            })
            .await
            .map_err(lost)?;
        let mut held = self.held();
        held.lease = renewed;
        held.valid_until = started + ttl;
        drop(held);
        Ok(self.usable())
    }

    /// Keeps the lease alive for as long as it is polled (while a long
    /// call such as a hook runs); returns only when the lease is lost.
    pub(crate) async fn heartbeat(&self) -> Interruption {
        loop {
            match self.ensure().await {
                Ok(usable) => {
                    let beat = (self.inner.ttl / 3)
                        .min(usable)
                        .max(Duration::from_millis(1));
                    tokio::time::sleep(beat).await;
                }
                Err(e) => return e,
            }
        }
    }

    /// Sleeps `d` (a backoff) in pieces that never outlast the lease,
    /// renewing it between them, and looking for pre-emption requests. A
    /// lost lease or a pre-emption ends the sleep; the next call finds it.
    pub(crate) async fn sleep(&self, d: Duration, poll: Duration) {
        let mut left = d;
        while !left.is_zero() {
            let Ok(usable) = self.ensure().await else {
                return;
            };
            let step = left
                .min(usable.max(Duration::from_millis(1)))
                .min(poll.max(Duration::from_millis(1)));
            tokio::time::sleep(step).await;
            left = left.saturating_sub(step);
            if self.poll_preemption().await.is_err() {
                return;
            }
        }
    }
}
