//! One operation's run: the cached records it owns while it holds the
//! lease, its gated port calls, its fresh reads of the balancers, and the
//! journaled, fenced commits of every change.

use std::sync::Arc;
use std::time::Duration;

use crate::events::{Event, EventKind};
use crate::id::PoolId;
use crate::model::{Pool, Role};
use crate::plan::Plan;
use crate::ports::{Commit, EventAppend, Expect, Lease, LoadBalancer, Member, PortError, Write};
use crate::records::{encode, key, RecordError, Snapshot, Stored};

use crate::time::Timestamp;

use super::calls::Calls;
use super::error::{Interruption, StepError};
use super::guards::Roster;
use super::journal::OperationProgress;
use super::lease::LeaseKeeper;
use super::Env;

pub(crate) struct Run {
    pub(crate) env: Arc<Env>,
    pub(crate) plan: Arc<Plan>,
    /// The role's balancer: members are attached to and detached from it.
    pub(crate) lb: Arc<dyn LoadBalancer>,
    /// Every other balancer the deployment knows: servers may serve behind
    /// them too, so guards read them all.
    pub(crate) others: Vec<Arc<dyn LoadBalancer>>,
    pub(crate) calls: Calls,
    pub(crate) snap: Snapshot,
    pub(crate) progress: Stored<OperationProgress>,
    progress_dirty: bool,
    /// Events not committed yet, stamped when they happened.
    outbox: Vec<(crate::time::Timestamp, EventKind)>,
    /// A step's start or end is recorded but not committed: it rides on
    /// the next commit, which comes before any wait (so that a step that
    /// takes time is seen started) and at the latest with the operation's
    /// end. A crash in between re-runs the step, as a crash at any point
    /// of a step does.
    pub(crate) journal_pending: bool,
    /// Running rollback steps: they restore service, so nothing optional
    /// (a hook) may stop them.
    pub(crate) restoring: bool,
    /// The step being run: (index, whether a rollback step).
    pub(crate) current: Option<(usize, bool)>,
    /// An emergency run is never pre-empted.
    pub(crate) emergency: bool,
    /// Boot payloads rendered for launch attempts not yet answered, by
    /// token: an attempt sent again carries the very payload it was first
    /// sent with. They hold secrets and never leave memory.
    pub(crate) payloads: std::collections::BTreeMap<String, crate::ports::BootPayload>,
    /// Pool records to delete with the next commit.
    forget: Vec<PoolId>,
    /// Pools changed in ways a crash may lose (the step that changed them
    /// redoes it when resumed): they ride on the next commit, like
    /// `journal_pending`.
    deferred: Vec<PoolId>,
}

/// Why a read for a guard was not usable.
enum GuardReadError {
    /// Empty while members are recorded: not believed.
    Empty,
    /// Gathering the reads took longer than a fresh read may be old.
    Stale,
    Port(PortError),
    Stop(Interruption),
}

impl crate::retry::Classify for GuardReadError {
    fn retry_class(&self) -> crate::ports::RetryClass {
        match self {
            Self::Empty | Self::Stale => crate::ports::RetryClass::Temporary,
            Self::Port(e) => e.retry_class(),
            Self::Stop(_) => crate::ports::RetryClass::Permanent,
        }
    }
}

/// What the guards read: every balancer the deployment knows, at once.
pub(crate) struct GuardRead {
    /// The role's balancer.
    pub(crate) primary: Vec<Member>,
    /// The others.
    pub(crate) others: Vec<Vec<Member>>,
    /// When the reads were sent: the age of the oldest answer is at most
    /// the time since.
    pub(crate) taken_at: tokio::time::Instant,
}

impl GuardRead {
    /// Every member of every balancer.
    pub(crate) fn all(&self) -> Vec<Member> {
        self.primary
            .iter()
            .chain(self.others.iter().flatten())
            .cloned()
            .collect()
    }
}

impl Run {
    pub(crate) fn new(
        env: Arc<Env>,
        plan: Arc<Plan>,
        lb: Arc<dyn LoadBalancer>,
        lease: Lease,
        snap: Snapshot,
        progress: Stored<OperationProgress>,
    ) -> Self {
        let keeper = LeaseKeeper::new(
            env.ports.store.clone(),
            lease,
            &env.clock,
            env.lease_ttl,
            plan.policy.retry.clone(),
            plan.policy.calls.timeout,
        );
        keeper.watch_preemption(plan.deployment.clone(), env.clock.clone());
        let calls = Calls::new(
            keeper,
            plan.policy.retry.clone(),
            plan.policy.calls.timeout,
            plan.policy.provision.poll_interval,
        );
        let others = env.ports.balancers.others(&lb);
        Self {
            env,
            plan,
            lb,
            others,
            calls,
            snap,
            progress,
            progress_dirty: false,
            outbox: Vec::new(),
            journal_pending: false,
            deferred: Vec::new(),
            restoring: false,
            current: None,
            emergency: false,
            payloads: std::collections::BTreeMap::new(),
            forget: Vec::new(),
        }
    }

    /// Deletes a pool's record with the next commit.
    pub(crate) fn forget(&mut self, pool: &PoolId) {
        self.forget.push(pool.clone());
    }

    /// True for a pool whose record is gone (deleted and forgotten): not in
    /// the records, nor listed by the header.
    pub(crate) fn forgotten(&self, pool: &PoolId) -> bool {
        self.snap.pool(pool).is_none() && !self.snap.record.value.pools.contains(pool)
    }

    fn current_record(&mut self) -> Option<&mut super::journal::StepRecord> {
        let (index, rollback) = self.current?;
        let progress = self.progress_mut();
        if rollback {
            progress.rollback.as_mut()?.records.get_mut(index)
        } else {
            progress.steps.get_mut(index)
        }
    }

    /// Launches the current step replaced so far.
    pub(crate) fn step_replacements(&self) -> u32 {
        let Some((index, rollback)) = self.current else {
            return 0;
        };
        let p = &self.progress.value;
        let record = if rollback {
            p.rollback.as_ref().and_then(|r| r.records.get(index))
        } else {
            p.steps.get(index)
        };
        record.map_or(0, |r| r.replacements)
    }

    /// Records how many launches the current step replaced (saved with
    /// the next commit, together with the pool it changed).
    pub(crate) fn set_step_replacements(&mut self, n: u32) {
        if let Some(r) = self.current_record() {
            r.replacements = n;
        }
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.env.clock.now()
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.plan.policy.provision.poll_interval
    }

    /// The lease as held now.
    pub(crate) fn lease(&self) -> Lease {
        self.calls.keeper.lease()
    }

    /// Makes sure the lease is still ours (renewing it when due).
    pub(crate) async fn keep_alive(&mut self) -> Result<(), Interruption> {
        self.calls.keeper.ensure().await.map(|_| ())
    }

    pub(crate) fn emit(&mut self, kind: EventKind) {
        let at = self.now();
        self.outbox.push((at, kind));
    }

    pub(crate) fn progress_mut(&mut self) -> &mut OperationProgress {
        self.progress_dirty = true;
        &mut self.progress.value
    }

    pub(crate) fn role(&self) -> Result<&Role, StepError> {
        self.snap
            .deployment()
            .roles
            .get(&self.plan.role)
            .ok_or_else(|| {
                StepError::Inconsistent(format!(
                    "role {} is not defined in deployment {}",
                    self.plan.role, self.plan.deployment
                ))
            })
    }

    pub(crate) fn pool(&self, id: &PoolId) -> Result<&Pool, StepError> {
        self.snap
            .pool(id)
            .ok_or_else(|| StepError::Inconsistent(format!("pool {id} is not recorded")))
    }

    pub(crate) fn pool_mut(&mut self, id: &PoolId) -> Result<&mut Pool, StepError> {
        self.snap
            .pools
            .get_mut(id)
            .map(|s| &mut s.value)
            .ok_or_else(|| StepError::Inconsistent(format!("pool {id} is not recorded")))
    }

    /// Who the deployment's recorded servers are, for attributing members.
    pub(crate) fn roster(&self) -> Roster {
        Roster::of(&self.snap)
    }

    /// A fresh read of the role's balancer. A failed read fails the caller
    /// closed.
    pub(crate) async fn members(&mut self) -> Result<Vec<Member>, StepError> {
        let lb = self.lb.clone();
        self.calls
            .call("reading balancer members", || lb.members())
            .await
    }

    /// A fresh read of the role's balancer that an empty answer, while
    /// members are recorded behind it, does not satisfy: it is read again,
    /// as for a guard (a bake must not fail, nor a drain end, nor a release
    /// be judged, on a balancer that answered nothing).
    pub(crate) async fn members_trusted(&mut self) -> Result<Vec<Member>, StepError> {
        let others = std::mem::take(&mut self.others);
        let read = self.guard_read().await;
        self.others = others;
        Ok(read?.primary)
    }

    /// A fresh read of every balancer the deployment knows, all at once,
    /// for a guard. An empty answer from the role's balancer while the
    /// records say servers of the role are behind it is not believed (a
    /// balancer that restarted, a wrong backend, a bug): it is read again
    /// as after a failure, and the guard fails closed if it stays empty.
    pub(crate) async fn guard_read(&mut self) -> Result<GuardRead, StepError> {
        let attached = self
            .snap
            .pools_of(&self.plan.role)
            .flat_map(|p| p.attached())
            .count();
        let calls = self.calls.clone();
        let primary = self.lb.clone();
        let others = self.others.clone();
        let backoff = calls.clone();
        let fresh = self.plan.policy.calls.fresh_read;
        // Every balancer is read at once, and read again together when one
        // read is not usable: the reads a guard acts on are of one moment.
        let read = calls
            .retry()
            .run_sleeping(
                move |d| {
                    let backoff = backoff.clone();
                    async move { backoff.backoff(d).await }
                },
                || {
                    let calls = &calls;
                    let primary = primary.clone();
                    let others = others.clone();
                    async move {
                        let taken_at = tokio::time::Instant::now();
                        let read_primary =
                            calls.once("reading balancer members", primary.members());
                        let read_others = futures::future::join_all(others.iter().map(|lb| {
                            calls.once("reading the members of another balancer", lb.members())
                        }));
                        let (p, o) = futures::join!(read_primary, read_others);
                        let p = match p {
                            Err(i) => return Err(GuardReadError::Stop(i)),
                            Ok(Err(e)) => return Err(GuardReadError::Port(e)),
                            Ok(Ok(m)) if m.is_empty() && attached > 0 => {
                                return Err(GuardReadError::Empty)
                            }
                            Ok(Ok(m)) => m,
                        };
                        let mut rest = Vec::with_capacity(o.len());
                        for r in o {
                            match r {
                                Err(i) => return Err(GuardReadError::Stop(i)),
                                Ok(Err(e)) => return Err(GuardReadError::Port(e)),
                                Ok(Ok(m)) => rest.push(m),
                            }
                        }
                        if taken_at.elapsed() > fresh {
                            return Err(GuardReadError::Stale);
                        }
                        Ok(GuardRead {
                            primary: p,
                            others: rest,
                            taken_at,
                        })
                    }
                },
            )
            .await;
        match read {
            Ok(read) => Ok(read),
            Err(GuardReadError::Empty) => {
                let refusal = super::guards::Refusal {
                    invariant: crate::events::Invariant::NoServingTermination,
                    detail: format!(
                        "the balancer reports no member while {attached} server(s) of {} are \
                         recorded behind it; not acting on an empty read",
                        self.plan.role
                    ),
                };
                Err(self.refused(refusal))
            }
            Err(GuardReadError::Stale) => Err(StepError::port(
                "reading balancer members",
                PortError::temporary(
                    "reading balancer members",
                    format!(
                        "the balancers' answers took longer than {} to gather, on every try",
                        crate::time::human(self.plan.policy.calls.fresh_read)
                    ),
                ),
            )),
            Err(GuardReadError::Port(e)) => Err(StepError::port("reading balancer members", e)),
            Err(GuardReadError::Stop(i)) => Err(StepError::Interrupted(i)),
        }
    }

    /// Runs a port call with the plan's retry policy, behind the lease and
    /// within its deadline.
    pub(crate) async fn call<T, F, Fut>(&self, context: &str, f: F) -> Result<T, StepError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PortError>>,
    {
        self.calls.call(context, f).await
    }

    /// Commits the deployment header (bumping its generation), the given
    /// pools, the journal if it changed, and the pending events, all under
    /// the lease's fence. Then publishes the events.
    pub(crate) async fn save(&mut self, pools: &[&PoolId]) -> Result<(), Interruption> {
        self.keep_alive().await?;
        let dep = self.plan.deployment.clone();
        // Only pools present in the run's records can have been changed.
        let mut pools: Vec<PoolId> = pools
            .iter()
            .filter(|id| self.snap.pools.contains_key(**id))
            .map(|id| (*id).clone())
            .collect();
        for id in &self.deferred {
            if !pools.contains(id) && self.snap.pools.contains_key(id) {
                pools.push(id.clone());
            }
        }
        // A pool deleted by this commit is not written by it too.
        pools.retain(|id| !self.forget.contains(id));
        let events: Vec<Event> = self
            .outbox
            .drain(..)
            .map(|(at, kind)| Event {
                at,
                deployment: dep.clone(),
                operation: Some(self.plan.id.clone()),
                kind,
            })
            .collect();
        let mut header = self.snap.record.value.clone();
        header.generation += 1;
        let store = self.env.ports.store.clone();
        // The commit is encoded afresh for each attempt rather than cloned:
        // a pool of ten thousand slots is megabytes.
        let versions = {
            let this = &*self;
            let header = &header;
            let pools = &pools;
            let events = &events;
            self.calls
                .store("committing the operation's records", || {
                    let store = store.clone();
                    let commit = this.encode_commit(header, pools, events);
                    async move {
                        match commit {
                            Ok(c) => store.commit(c).await.map_err(RecordError::Store),
                            Err(e) => Err(e),
                        }
                    }
                })
                .await?
        };
        let mut versions = versions.into_iter();
        self.snap.record.value = header;
        self.snap.record.version = versions.next().unwrap_or_default();
        for id in &pools {
            let v = versions.next().unwrap_or_default();
            if let Some(stored) = self.snap.pools.get_mut(id) {
                stored.version = v;
            }
        }
        for id in std::mem::take(&mut self.forget) {
            if self.snap.pools.remove(&id).is_some() {
                let _ = versions.next();
            }
        }
        if self.progress_dirty {
            self.progress.version = versions.next().unwrap_or_default();
            self.progress_dirty = false;
        }
        self.journal_pending = false;
        self.deferred.clear();
        for e in events {
            tracing::debug!(event = ?e.kind, "phoenix event");
            self.env.events.publish(e);
        }
        Ok(())
    }

    fn encode_commit(
        &self,
        header: &crate::records::DeploymentRecord,
        pools: &[PoolId],
        events: &[Event],
    ) -> Result<Commit, RecordError> {
        let dep = &self.plan.deployment;
        let header_key = key::deployment(dep);
        let mut writes = vec![Write {
            key: header_key.clone(),
            expect: Expect::Version(self.snap.record.version),
            value: Some(encode(&header_key, header)?),
        }];
        for id in pools {
            let Some(stored) = self.snap.pools.get(id) else {
                continue;
            };
            let k = key::pool(dep, id);
            let expect = if stored.version == 0 {
                Expect::Absent
            } else {
                Expect::Version(stored.version)
            };
            writes.push(Write {
                value: Some(encode(&k, &stored.value)?),
                key: k,
                expect,
            });
        }
        for id in &self.forget {
            let Some(stored) = self.snap.pools.get(id) else {
                continue;
            };
            writes.push(Write {
                key: key::pool(dep, id),
                expect: Expect::Version(stored.version),
                value: None,
            });
        }
        if self.progress_dirty {
            let progress_key = key::operation(dep, &self.plan.id);
            writes.push(Write {
                key: progress_key.clone(),
                expect: if self.progress.version == 0 {
                    Expect::Absent
                } else {
                    Expect::Version(self.progress.version)
                },
                value: Some(encode(&progress_key, &self.progress.value)?),
            });
        }
        let stream = key::events(dep);
        let mut appends = Vec::with_capacity(events.len());
        for e in events {
            appends.push(EventAppend {
                stream: stream.clone(),
                payload: encode(&stream, e)?,
            });
        }
        Ok(Commit {
            fence: Some(self.lease().fence()),
            writes,
            events: appends,
        })
    }

    /// A safe point: the lease is still ours and nobody asked to pre-empt
    /// this operation.
    pub(crate) async fn safe_point(&mut self) -> Result<(), Interruption> {
        self.keep_alive().await?;
        self.calls.keeper.poll_preemption().await
    }

    /// Makes this run an emergency: nothing pre-empts it.
    pub(crate) fn make_emergency(&mut self) {
        self.emergency = true;
        self.calls.keeper.exempt();
    }

    /// Sleeps `d`, keeping the lease alive and stopping at the first safe
    /// point where a pre-emption is asked for (checked at least every
    /// poll interval).
    pub(crate) async fn sleep(&mut self, d: Duration) -> Result<(), Interruption> {
        // Nothing to see in a wait of no time (a rollback's bake).
        if !d.is_zero() {
            self.flush_journal().await?;
        }
        let mut left = d;
        loop {
            if !left.is_zero() {
                let usable = self.calls.keeper.ensure().await?;
                let step = left
                    .min(usable.max(Duration::from_millis(1)))
                    .min(self.poll_interval().max(Duration::from_millis(1)));
                tokio::time::sleep(step).await;
                left = left.saturating_sub(step);
            }
            self.safe_point().await?;
            if left.is_zero() {
                return Ok(());
            }
        }
    }

    /// Records that `pool` changed in a way its step redoes if a crash
    /// loses it: the change rides on the next commit.
    pub(crate) fn defer_save(&mut self, pool: &PoolId) {
        if !self.deferred.contains(pool) {
            self.deferred.push(pool.clone());
        }
    }

    /// Commits a step start or end, or a deferred pool change, recorded
    /// but not committed yet (see `journal_pending` and `deferred`).
    pub(crate) async fn flush_journal(&mut self) -> Result<(), Interruption> {
        if self.journal_pending || !self.deferred.is_empty() {
            self.save(&[]).await?;
        }
        Ok(())
    }

    pub(crate) async fn pause(&mut self) -> Result<(), Interruption> {
        self.sleep(self.poll_interval()).await
    }
}

/// A deadline on the tokio clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: tokio::time::Instant,
    limit: Duration,
}

impl Deadline {
    pub(crate) fn after(limit: Duration) -> Self {
        Self {
            at: tokio::time::Instant::now() + limit,
            limit,
        }
    }

    pub(crate) fn passed(&self) -> bool {
        tokio::time::Instant::now() >= self.at
    }

    pub(crate) fn timeout(&self, what: impl Into<String>) -> StepError {
        StepError::Timeout {
            what: what.into(),
            after: self.limit,
        }
    }
}

/// Pool ids that appear in a snapshot for a stored pool that was never
/// written have version 0.
pub(crate) fn new_stored(pool: Pool) -> Stored<Pool> {
    Stored {
        value: pool,
        version: 0,
    }
}
