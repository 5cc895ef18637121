//! The executor: applies a plan step by step under the deployment's lease,
//! journaling every step before and after, and resumes an interrupted
//! operation from its journal.
//!
//!
//! See [`Executor`] for what it guarantees, what it assumes of the ports,
//! and what cancelling it means.

mod calls;
mod canary;
mod cause;
mod compensation;
mod drive;
mod error;
pub mod guards;
mod hooks;
mod journal;
mod launch;
mod lease;
mod lifecycle;
mod preempt;
mod removal;
mod run;
mod standby;
mod switch;
mod traffic;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use cause::{FailureCause, PortFailure};
pub use error::{CanaryFailure, ExecError, Interruption, StepError};
pub use journal::{
    LeaseHold, OperationProgress, OperationStatus, RollbackJournal, StepRecord, StepStatus,
};
pub use preempt::PreemptRequest;

use crate::events::{EventBus, EventKind, Outcome};
use crate::id::{DeploymentId, OperationId, RoleName};
use crate::plan::{OperationKind, Plan, Precondition};
use crate::policy::RefreshPolicy;
use crate::ports::{Commit, Expect, LoadBalancer, StoreError, Write};
use crate::ports_set::Ports;
use crate::records::{encode, key, RecordError, Records, Snapshot, Stored};
use crate::time::{SharedClock, Timestamp};

use run::Run;

/// What the executor needs besides the plan.
pub(crate) struct Env {
    pub(crate) ports: Ports,
    pub(crate) clock: SharedClock,
    pub(crate) events: EventBus,
    pub(crate) holder: String,
    pub(crate) lease_ttl: Duration,
    pub(crate) lease_wait: Duration,
    /// How long an emergency waits for a running operation to stop.
    pub(crate) emergency_wait: Duration,
    /// The orchestrator's own replacement budget: plans cannot loosen it.
    pub(crate) budget: RefreshPolicy,
}

/// How an operation went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationReport {
    /// Operation.
    pub operation: OperationId,
    /// Kind.
    pub kind: OperationKind,
    /// Deployment.
    pub deployment: DeploymentId,
    /// Role.
    pub role: RoleName,
    /// Summary of the plan.
    pub summary: String,
    /// Outcome.
    pub outcome: Outcome,
    /// The error that failed it.
    pub error: Option<String>,
    /// Why it failed, typed (the first step failure).
    pub cause: Option<FailureCause>,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub finished_at: Timestamp,
    /// Plan steps.
    pub steps: usize,
    /// Rollback steps run.
    pub rollback_steps: usize,
    /// Whether this run resumed an interrupted one.
    pub resumed: bool,
}

impl OperationReport {
    /// How long it took by the executor's clock.
    pub fn duration(&self) -> Duration {
        crate::time::elapsed_between(self.started_at, self.finished_at)
    }
}

/// Applies plans: step by step, under the deployment's lease, journaling
/// every step, resuming from the journal after a crash.
///
/// # Guarantees
///
/// What [`Executor::apply`] (and [`Executor::resume`], and
/// [`Executor::emergency`]) promise, invariant by invariant, as long as the
/// assumptions below hold:
///
/// 1. **No serving server is stopped or terminated.** Every stop and
///    terminate call follows, with no sleep or hook in between and within
///    `calls.fresh_read` of sending the reads, a read of *every* balancer
///    the deployment knows showing the server absent, or not active with no
///    open connections; a read that took longer to gather, or aged while
///    earlier calls ran, is taken again, and a retried call reads again. A
///    member reported under the server's id at another endpoint, or a read
///    that fails or comes back empty while members are recorded, refuses.
/// 2. **The capacity floor holds.** A detach call follows a fresh read
///    (after the drain hooks, within `calls.fresh_read`) in which every replacement is attached, smoke-tested,
///    baked and healthy, and the role's own healthy members left behind are at
///    least `min_healthy`; members of other deployments sharing the balancer
///    are not counted; the last healthy members never leave. An atomic
///    switch call follows a fresh read (after the drain hooks, within
///    `calls.fresh_read`) in which every incoming server is staged (present,
///    not draining), healthy by the balancer's own checks, smoke-tested and
///    baked there, there are at least `min_healthy` of them, and every
///    leaving member can be attributed.
/// 3. **Blast radius.** A plan whose step changes more than `batch_size`
///    servers is refused before any call, except the atomic switch when
///    the policy's cutover is `switch` (the operator's consent).
/// 4. **Halt and roll back.** The first failed step stops the plan; its
///    failure and the start of its compensation commit together, so a resumed
///    run never retries it. With auto-rollback the previous pool is attached
///    again (members left draining or disabled are re-activated) and healthy
///    before anything of the failed pool leaves.
/// 5. **One writer.** Every run holds the deployment lease; every port call
///    first makes sure the lease is still its own (renewing it when half is
///    gone) and has a deadline that ends before the lease could lapse; every
///    sleep renews it; every commit carries its fencing token. A run that
///    finds its lease lost stops at once (`Interrupted`). A plan made against
///    records that changed since is refused.
/// 6. **No orphans, no duplicates.** A launch is recorded (token, time,
///    payload fingerprint) before it is sent; a lost answer is found by its
///    token; "not found" within the provider's consistency window is never
///    taken as absence; a token is sent again only to a provider that
///    de-duplicates, with the same payload; otherwise a new token is used and
///    the old one is remembered, so a server that appears late is adopted or
///    terminated.
/// 7. **Bounded time.** Each step has deadlines (progress, health, drain,
///    per-call timeouts) and a replacement budget per step.
/// 8. **Done means done.** An operation that makes a release live succeeds
///    only when a fresh read shows every active member of the deployment
///    running it.
/// 9. **Retention** never retires a pool below `keep` rollback pools.
/// 10. **Secrets** stay in boot payloads (in memory, for the length of a
///     launch step), never in plans, records, events, logs or errors.
///
/// # Assumptions
///
/// - **Balancers** report every member they send traffic to (the list is
///   complete), with the endpoint traffic goes to; an id may be a stand-in,
///   the endpoint may not. `attach` re-activates a member that is draining,
///   disabled or in maintenance. `detach` finds members by the id they were
///   attached with.
/// - **Compute** lists a launched server by its labels within its declared
///   `consistency_window` (a server appearing later is still handled, as an
///   orphan or a late arrival); a provider that declares `idempotent_launch`
///   de-duplicates launches by token.
/// - **The state store** grants a lease to one holder at a time, refuses a
///   commit whose fencing token is stale, and its clock and this process's
///   agree within a tenth of the lease's time to live (at most 5 s).
/// - **Clouds and balancers do not take fencing tokens**: a call sent just
///   before a lease lapsed may still take effect after it. Phoenix makes that
///   window as small as its call deadline and never sends a call it knows is
///   late.
///
/// # Cancellation
///
/// Dropping the future of `apply` or `resume` is like killing the process:
/// every change made so far is journaled (intent before each cloud call),
/// the lease lapses after its time to live, and the next `resume` continues
/// from the journal. An emergency ([`Executor::emergency`]) pre-empts a
/// running operation at its next safe point: between steps, or in any wait
/// (a poll, a bake, the replacement budget), within a poll interval; the
/// pre-empted operation ends (`ExecError::Preempted`), its records
/// consistent; pools it created that never served are marked failed.
///
/// # Events
///
/// Events are committed with the records they describe, then broadcast. A
/// subscriber that falls more than the bus's capacity behind misses the
/// oldest ones (it sees `Lagged`); the store's event history is complete.
#[derive(Clone)]
pub struct Executor {
    env: Arc<Env>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("holder", &self.env.holder)
            .field("lease_ttl", &self.env.lease_ttl)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor that identifies itself as `holder` when taking leases.
    pub fn new(
        ports: Ports,
        clock: SharedClock,
        events: EventBus,
        holder: impl Into<String>,
        lease_ttl: Duration,
    ) -> Self {
        Self {
            env: Arc::new(Env {
                ports,
                clock,
                events,
                holder: holder.into(),
                lease_ttl,
                lease_wait: Duration::ZERO,
                emergency_wait: lease_ttl * 2,
                budget: RefreshPolicy::default(),
            }),
        }
    }

    /// Waits up to `wait` for another orchestrator's lease to be released or
    /// to expire, instead of failing at once with [`ExecError::Busy`].
    pub fn with_lease_wait(mut self, wait: Duration) -> Self {
        if let Some(env) = Arc::get_mut(&mut self.env) {
            env.lease_wait = wait;
        }
        self
    }

    /// The orchestrator's own replacement-rate budget (default:
    /// [`RefreshPolicy::default`]): a refresh waits for the stricter of it
    /// and its plan's.
    pub fn with_budget(mut self, budget: RefreshPolicy) -> Self {
        if let Some(env) = Arc::get_mut(&mut self.env) {
            env.budget = budget;
        }
        self
    }

    /// How long an emergency waits for the running operation to reach a
    /// safe point and give the lease up (default: twice the lease's time to
    /// live, so a dead holder's lease lapses within it).
    pub fn with_emergency_wait(mut self, wait: Duration) -> Self {
        if let Some(env) = Arc::get_mut(&mut self.env) {
            env.emergency_wait = wait;
        }
        self
    }

    fn records(&self) -> Records {
        Records::new(self.env.ports.store.clone())
    }

    fn balancer(&self, plan: &Plan) -> Result<Arc<dyn LoadBalancer>, ExecError> {
        self.env
            .ports
            .balancers
            .for_role(&plan.role)
            .cloned()
            .ok_or_else(|| ExecError::Precondition {
                precondition: format!("a balancer is configured for role {}", plan.role),
                actual: "none is".into(),
            })
    }

    async fn acquire(&self, deployment: &DeploymentId) -> Result<crate::ports::Lease, ExecError> {
        self.acquire_within(deployment, self.env.lease_wait).await
    }

    async fn acquire_within(
        &self,
        deployment: &DeploymentId,
        wait: Duration,
    ) -> Result<crate::ports::Lease, ExecError> {
        let store = self.env.ports.store.clone();
        let started = tokio::time::Instant::now();
        loop {
            match store
                .acquire_lease(
                    &key::lease(deployment),
                    &self.env.holder,
                    self.env.lease_ttl,
                )
                .await
            {
                Ok(lease) => return Ok(lease),
                Err(StoreError::LeaseHeld {
                    holder, expires_at, ..
                }) => {
                    let waited = started.elapsed();
                    if waited >= wait {
                        return Err(ExecError::Busy { holder, expires_at });
                    }
                    // Until the lease would expire, polling now and then in
                    // case it is released earlier.
                    let until_expiry =
                        crate::time::elapsed_between(self.env.clock.now(), expires_at);
                    let pause = until_expiry
                        .min(Duration::from_millis(500))
                        .min(wait - waited)
                        .max(Duration::from_millis(10));
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(ExecError::Store(RecordError::Store(e))),
            }
        }
    }

    async fn release(&self, lease: &crate::ports::Lease) {
        if let Err(e) = self.env.ports.store.release_lease(lease).await {
            // The lease expires by itself; nothing else to do.
            tracing::warn!(error = %crate::error_chain(&e), "releasing the deployment lease failed");
        }
    }

    /// Applies a plan. Refuses it (before any change) when it is invalid,
    /// another orchestrator holds the deployment, an emergency reserved it,
    /// an earlier operation is unfinished, the records changed since it was
    /// made, or a precondition no longer holds against a fresh read.
    ///
    /// Returns the report of a successful operation; a failed one is
    /// `ExecError::Failed` carrying its report (rolled back or halted), a
    /// pre-empted one `ExecError::Preempted`.
    pub async fn apply(&self, plan: Plan) -> Result<OperationReport, ExecError> {
        plan.validate()?;
        let lb = self.balancer(&plan)?;
        let lease = self.acquire(&plan.deployment).await?;
        let result = self.start(plan, lb, lease.clone(), false).await;
        self.release(&lease).await;
        result
    }

    async fn start(
        &self,
        plan: Plan,
        lb: Arc<dyn LoadBalancer>,
        lease: crate::ports::Lease,
        emergency: bool,
    ) -> Result<OperationReport, ExecError> {
        let records = self.records();
        let snap = records.snapshot(&plan.deployment).await?;
        if let Some(active) = &snap.record.value.active_operation {
            return Err(ExecError::Unfinished(active.clone()));
        }
        if !emergency {
            let store = self.env.ports.store.clone();
            if let Some(r) = preempt::pending(store.as_ref(), &plan.deployment).await? {
                if r.in_force(self.env.clock.now()) && r.by != self.env.holder {
                    return Err(ExecError::Reserved {
                        by: r.by,
                        reason: r.reason,
                        until: r.until,
                    });
                }
            }
        }
        for pre in &plan.preconditions {
            self.check(pre, &snap, lb.as_ref(), &plan).await?;
        }
        self.check_promotion(&snap, &plan).await?;
        let now = self.env.clock.now();
        let plan_key = key::operation_plan(&plan.deployment, &plan.id);
        let mut writes = vec![Write {
            key: plan_key.clone(),
            expect: Expect::Any,
            value: Some(encode(&plan_key, &plan)?),
        }];
        if emergency {
            // The emergency has the lease: its request is fulfilled.
            writes.push(preempt::withdraw(&plan.deployment));
        }
        self.env
            .ports
            .store
            .commit(Commit {
                fence: Some(lease.fence()),
                writes,
                events: vec![],
            })
            .await
            .map_err(|e| ExecError::Store(RecordError::Store(e)))?;
        let progress = OperationProgress {
            status: OperationStatus::Running,
            steps: plan.steps.iter().map(|_| StepRecord::pending()).collect(),
            rollback: None,
            started_at: now,
            finished_at: None,
            error: None,
            cause: None,
            holders: vec![LeaseHold {
                holder: lease.holder.clone(),
                token: lease.token,
                at: now,
            }],
        };
        let plan = Arc::new(plan);
        let mut run = Run::new(
            self.env.clone(),
            plan.clone(),
            lb,
            lease,
            snap,
            Stored {
                value: progress,
                version: 0,
            },
        );
        if emergency {
            run.make_emergency();
        }
        run.progress_mut();
        let header = &mut run.snap.record.value;
        header.active_operation = Some(plan.id.clone());
        header.operations.push(plan.id.clone());
        // The header keeps the latest operations only; every operation's
        // journal and the event history keep the rest.
        let excess = header.operations.len().saturating_sub(RECENT_OPERATIONS);
        header.operations.drain(..excess);
        run.emit(EventKind::OperationStarted {
            kind: plan.kind,
            summary: plan.summary.clone(),
            steps: plan.steps.len(),
        });
        run.save(&[])
            .await
            .map_err(|source| ExecError::Interrupted {
                operation: plan.id.clone(),
                source,
            })?;
        drive::drive(run, false).await
    }

    /// A plan that makes a release live in a deployment with a promotion
    /// rule needs the proof, read now from the staging records: a plan
    /// made elsewhere, or edited, that left the precondition out is held
    /// to it all the same.
    async fn check_promotion(&self, snap: &Snapshot, plan: &Plan) -> Result<(), ExecError> {
        if snap.deployment().promotion.is_none()
            || !matches!(
                plan.kind,
                crate::plan::OperationKind::Deploy | crate::plan::OperationKind::RollingReplace
            )
            || plan.steps.is_empty()
        {
            return Ok(());
        }
        let refuse = |actual: String| ExecError::Precondition {
            precondition: format!(
                "release {} was promoted",
                plan.target_release
                    .as_ref()
                    .map_or_else(|| "?".to_owned(), ToString::to_string)
            ),
            actual,
        };
        let image = plan
            .target_release
            .as_ref()
            .and_then(|r| snap.releases.get(r))
            .and_then(|r| r.image_for(&plan.role))
            .ok_or_else(|| {
                refuse("the plan names no recorded release with an image for its role".into())
            })?;
        crate::ops::promotion::check(
            &self.records(),
            snap.deployment(),
            &plan.role,
            image,
            self.env.clock.now(),
        )
        .await
        .map_err(|e| refuse(e.to_string()))?;
        Ok(())
    }

    async fn check(
        &self,
        pre: &Precondition,
        snap: &Snapshot,
        lb: &dyn LoadBalancer,
        plan: &Plan,
    ) -> Result<(), ExecError> {
        match pre {
            Precondition::Generation { generation } => {
                if *generation != snap.generation() {
                    return Err(ExecError::Stale {
                        planned: *generation,
                        current: snap.generation(),
                    });
                }
            }
            Precondition::PoolState { pool, state } => {
                let actual = snap.pool(pool).map(|p| p.state);
                if actual != Some(*state) {
                    return Err(ExecError::Precondition {
                        precondition: pre.to_string(),
                        actual: actual
                            .map_or("the pool is not recorded".into(), |s| format!("it is {s}")),
                    });
                }
            }
            // Proved again below, whether or not the plan carries it.
            Precondition::Promoted { .. } => {}
            Precondition::HealthyMembers { pool, at_least } => {
                let timeout = plan.policy.calls.timeout;
                let members = plan
                    .policy
                    .retry
                    .run(|| async {
                        tokio::time::timeout(timeout, lb.members())
                            .await
                            .unwrap_or_else(|_| {
                                Err(crate::ports::PortError::temporary(
                                    "reading balancer members",
                                    "no answer in time",
                                ))
                            })
                    })
                    .await
                    .map_err(ExecError::PreconditionRead)?;
                let owned = snap.pool(pool);
                let index = guards::MemberIndex::new(&members);
                let healthy = owned
                    .map(|p| {
                        p.slots
                            .iter()
                            .filter(|s| index.of_slot(s).is_some_and(|m| m.is_serving_healthy()))
                            .count()
                    })
                    .unwrap_or(0);
                if healthy < *at_least {
                    return Err(ExecError::Precondition {
                        precondition: pre.to_string(),
                        actual: format!("{healthy} healthy"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Continues the deployment's unfinished operation, if there is one,
    /// from its journal. Returns `None` when nothing was unfinished.
    pub async fn resume(
        &self,
        deployment: &DeploymentId,
    ) -> Result<Option<OperationReport>, ExecError> {
        let lease = self.acquire(deployment).await?;
        let result = match self.load(deployment, lease.clone()).await {
            Ok(Some(run)) => drive::drive(run, true).await.map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        self.release(&lease).await;
        result
    }

    /// The unfinished operation of a deployment, as a run under `lease`
    /// (its resumption journaled).
    async fn load(
        &self,
        deployment: &DeploymentId,
        lease: crate::ports::Lease,
    ) -> Result<Option<Run>, ExecError> {
        let records = self.records();
        let snap = records.snapshot(deployment).await?;
        let Some(op) = snap.record.value.active_operation.clone() else {
            return Ok(None);
        };
        let plan: Plan = records
            .get(&key::operation_plan(deployment, &op), "plan")
            .await?
            .ok_or_else(|| ExecError::UnknownOperation(op.clone()))?
            .value;
        let progress: Stored<OperationProgress> = records
            .get(&key::operation(deployment, &op), "operation progress")
            .await?
            .ok_or_else(|| ExecError::UnknownOperation(op.clone()))?;
        let lb = self.balancer(&plan)?;
        let now = self.env.clock.now();
        let plan = Arc::new(plan);
        let mut run = Run::new(
            self.env.clone(),
            plan.clone(),
            lb,
            lease.clone(),
            snap,
            progress,
        );
        let rolling_back = run.progress.value.status == OperationStatus::RollingBack;
        let step = match &run.progress.value.rollback {
            Some(rb) if rolling_back => rb
                .records
                .iter()
                .position(|r| r.status != StepStatus::Done)
                .unwrap_or(rb.records.len()),
            _ => run.progress.value.next_step(),
        };
        run.progress_mut().holders.push(LeaseHold {
            holder: lease.holder.clone(),
            token: lease.token,
            at: now,
        });
        run.emit(EventKind::OperationResumed { step, rolling_back });
        run.save(&[])
            .await
            .map_err(|source| ExecError::Interrupted {
                operation: op.clone(),
                source,
            })?;
        Ok(Some(run))
    }

    /// Runs an emergency operation: asks whatever operation runs on the
    /// deployment to stop at its next safe point (within a poll interval,
    /// or a call's deadline), takes the lease as soon as it is given up
    /// (or has lapsed, when its holder died), ends an operation its holder
    /// left unfinished as pre-empted, then plans under the lease with
    /// `plan` (from the records as they are now) and applies that plan; no
    /// other operation can start in between. Nothing pre-empts an
    /// emergency.
    pub async fn emergency<F>(
        &self,
        deployment: &DeploymentId,
        reason: &str,
        plan: F,
    ) -> Result<OperationReport, ExecError>
    where
        F: FnOnce(&Snapshot) -> Result<Plan, crate::ops::PlanningError>,
    {
        let store = self.env.ports.store.clone();
        let now = self.env.clock.now();
        let wait = self.env.emergency_wait.max(self.env.lease_wait);
        let request = PreemptRequest {
            by: self.env.holder.clone(),
            reason: reason.to_owned(),
            at: now,
            until: now + chrono::TimeDelta::from_std(wait * 2).unwrap_or(chrono::TimeDelta::MAX),
        };
        if let Err(e) = preempt::request(store.as_ref(), deployment, &request).await {
            // The write may have landed although the store answered an
            // error: take it back rather than hold others off until it lapses.
            self.withdraw(deployment).await;
            return Err(e.into());
        }
        let mut events = Vec::new();
        let stream = key::events(deployment);
        events.push(crate::ports::EventAppend {
            payload: encode(
                &stream,
                &crate::events::Event {
                    at: now,
                    deployment: deployment.clone(),
                    operation: None,
                    kind: EventKind::PreemptionRequested {
                        by: request.by.clone(),
                        reason: request.reason.clone(),
                    },
                },
            )?,
            stream,
        });
        self.records().append_events(events).await?;
        let lease = match self.acquire_within(deployment, wait).await {
            Ok(lease) => lease,
            Err(e) => {
                self.withdraw(deployment).await;
                return Err(e);
            }
        };
        let result = self
            .emergency_held(deployment, &request, lease.clone(), plan)
            .await;
        if result.is_err() {
            self.withdraw(deployment).await;
        }
        self.release(&lease).await;
        result
    }

    async fn emergency_held<F>(
        &self,
        deployment: &DeploymentId,
        request: &PreemptRequest,
        lease: crate::ports::Lease,
        plan: F,
    ) -> Result<OperationReport, ExecError>
    where
        F: FnOnce(&Snapshot) -> Result<Plan, crate::ops::PlanningError>,
    {
        // An operation whose holder died is not resumed: it is ended.
        if let Some(mut run) = self.load(deployment, lease.clone()).await? {
            drive::end_preempted(&mut run, &request.by, &request.reason, true).await?;
        }
        let snap = self.records().snapshot(deployment).await?;
        let plan = plan(&snap).map_err(|e| ExecError::Planning(Box::new(e)))?;
        plan.validate()?;
        let lb = self.balancer(&plan)?;
        self.start(plan, lb, lease, true).await
    }

    async fn withdraw(&self, deployment: &DeploymentId) {
        let store = self.env.ports.store.clone();
        let commit = Commit {
            fence: None,
            writes: vec![preempt::withdraw(deployment)],
            events: vec![],
        };
        // Retried: a request left behind holds off every other operation
        // until it lapses.
        let retry = crate::retry::RetryPolicy::default();
        if let Err(e) = retry.run(|| store.commit(commit.clone())).await {
            // It lapses by itself.
            tracing::warn!(error = %crate::error_chain(&e), "withdrawing a pre-emption request failed");
        }
    }
}

/// Operations the deployment header lists (the journals keep them all).
const RECENT_OPERATIONS: usize = 32;

#[cfg(test)]
mod tests {
    fn assert_send<T: Send>(_: T) {}

    /// Operations are spawned on multi-threaded runtimes by callers.
    #[allow(dead_code)]
    fn operations_are_send(
        p: &crate::Phoenix,
        plan: crate::plan::Plan,
        d: &crate::id::DeploymentId,
    ) {
        assert_send(p.apply(plan));
        assert_send(p.resume(d));
    }
}
