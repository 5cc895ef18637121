//! One operation's run: the cached records it owns while it holds the
//! lease, and the journaled, fenced commits of every change.

use std::sync::Arc;
use std::time::Duration;

use crate::events::{Event, EventKind};
use crate::id::PoolId;
use crate::model::{Pool, Role};
use crate::plan::Plan;
use crate::ports::{Commit, EventAppend, Expect, Lease, LoadBalancer, Member, PortError, Write};
use crate::records::{encode, key, RecordError, Snapshot, Stored};

use crate::time::Timestamp;

use super::error::{Interruption, StepError};
use super::journal::OperationProgress;
use super::Env;

pub(crate) struct Run {
    pub(crate) env: Arc<Env>,
    pub(crate) plan: Arc<Plan>,
    pub(crate) lb: Arc<dyn LoadBalancer>,
    pub(crate) lease: Lease,
    renewed: tokio::time::Instant,
    pub(crate) snap: Snapshot,
    pub(crate) progress: Stored<OperationProgress>,
    progress_dirty: bool,
    outbox: Vec<EventKind>,
    /// Running rollback steps: they restore service, so nothing optional
    /// (a hook) may stop them.
    pub(crate) restoring: bool,
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
        Self {
            env,
            plan,
            lb,
            lease,
            renewed: tokio::time::Instant::now(),
            snap,
            progress,
            progress_dirty: false,
            outbox: Vec::new(),
            restoring: false,
        }
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.env.clock.now()
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.plan.policy.provision.poll_interval
    }

    /// Renews the lease once a third of its time has passed, so a run that
    /// waits long keeps it; a lost lease interrupts the run.
    pub(crate) async fn keep_alive(&mut self) -> Result<(), Interruption> {
        let ttl = self.env.lease_ttl;
        if self.renewed.elapsed() < ttl / 3 {
            return Ok(());
        }
        let store = self.env.ports.store.clone();
        let lease = self.lease.clone();
        let renewed = self
            .plan
            .policy
            .retry
            .run(|| store.renew_lease(&lease, ttl))
            .await
            .map_err(Interruption::LeaseLost)?;
        self.lease = renewed;
        self.renewed = tokio::time::Instant::now();
        Ok(())
    }

    pub(crate) fn emit(&mut self, kind: EventKind) {
        self.outbox.push(kind);
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

    /// A fresh read of the balancer's members. A failed read fails the
    /// caller closed.
    pub(crate) async fn members(&mut self) -> Result<Vec<Member>, StepError> {
        self.keep_alive().await?;
        let lb = self.lb.clone();
        self.plan
            .policy
            .retry
            .run(|| lb.members())
            .await
            .map_err(|e| StepError::port("reading balancer members", e))
    }

    /// A fresh read for a guard: like [`Self::members`], but an empty
    /// answer while the records say servers of this role are behind the
    /// balancer is not believed (a balancer that restarted, a wrong
    /// backend, a bug): the guard fails closed.
    pub(crate) async fn members_for_guard(&mut self) -> Result<Vec<Member>, StepError> {
        let members = self.members().await?;
        if members.is_empty() {
            let attached = self
                .snap
                .pools_of(&self.plan.role)
                .flat_map(|p| p.attached())
                .count();
            if attached > 0 {
                let refusal = super::guards::Refusal {
                    invariant: crate::events::Invariant::NoServingTermination,
                    detail: format!(
                        "the balancer reports no member while {attached} server(s) of {} are recorded \
                         behind it; not acting on an empty read",
                        self.plan.role
                    ),
                };
                return Err(self.refused(refusal));
            }
        }
        Ok(members)
    }

    /// Runs a port call with the plan's retry policy.
    pub(crate) async fn call<T, F, Fut>(&self, context: &str, f: F) -> Result<T, StepError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PortError>>,
    {
        self.plan
            .policy
            .retry
            .run(f)
            .await
            .map_err(|e| StepError::port(context, e))
    }

    /// Commits the deployment header (bumping its generation), the given
    /// pools, the journal if it changed, and the pending events, all under
    /// the lease's fence. Then publishes the events.
    pub(crate) async fn save(&mut self, pools: &[&PoolId]) -> Result<(), Interruption> {
        self.keep_alive().await?;
        let dep = self.plan.deployment.clone();
        // Only pools present in the run's records can have been changed.
        let pools: Vec<PoolId> = pools
            .iter()
            .filter(|id| self.snap.pools.contains_key(**id))
            .map(|id| (*id).clone())
            .collect();
        let at = self.now();
        let events: Vec<Event> = self
            .outbox
            .drain(..)
            .map(|kind| Event {
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
            self.plan
                .policy
                .retry
                .run(|| {
                    let store = store.clone();
                    let commit = this.encode_commit(header, pools, events);
                    async move {
                        match commit {
                            Ok(c) => store.commit(c).await.map_err(RecordError::Store),
                            Err(e) => Err(e),
                        }
                    }
                })
                .await
                .map_err(Interruption::from)?
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
        if self.progress_dirty {
            self.progress.version = versions.next().unwrap_or_default();
            self.progress_dirty = false;
        }
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
            fence: Some(self.lease.fence()),
            writes,
            events: appends,
        })
    }

    /// Sleeps one poll interval, keeping the lease alive.
    pub(crate) async fn pause(&mut self) -> Result<(), Interruption> {
        tokio::time::sleep(self.poll_interval()).await;
        self.keep_alive().await
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
