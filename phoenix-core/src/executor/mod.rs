//! The executor: applies a plan step by step under the deployment's lease,
//! journaling every step before and after, and resumes an interrupted
//! operation from its journal.

mod compensation;
mod error;
pub mod guards;
mod hooks;
mod journal;
mod launch;
mod lifecycle;
mod run;
mod traffic;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::Instrument;

pub use error::{ExecError, Interruption, StepError};
pub use journal::{
    LeaseHold, OperationProgress, OperationStatus, RollbackJournal, StepRecord, StepStatus,
};

use crate::events::{EventBus, EventKind, Outcome};
use crate::id::{DeploymentId, OperationId, RoleName};
use crate::plan::{OperationKind, Plan, Precondition, Step};
use crate::ports::{Commit, Expect, LoadBalancer, StoreError, Write};
use crate::ports_set::Ports;
use crate::records::{encode, key, RecordError, Records, Stored};
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

/// Applies plans.
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
                    if waited >= self.env.lease_wait {
                        return Err(ExecError::Busy { holder, expires_at });
                    }
                    // Until the lease would expire, polling now and then in
                    // case it is released earlier.
                    let until_expiry =
                        crate::time::elapsed_between(self.env.clock.now(), expires_at);
                    let pause = until_expiry
                        .min(Duration::from_millis(500))
                        .min(self.env.lease_wait - waited)
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
    /// another orchestrator holds the deployment, an earlier operation is
    /// unfinished, the records changed since it was made, or a
    /// precondition no longer holds against a fresh read.
    ///
    /// Returns the report of a successful operation; a failed one is
    /// `ExecError::Failed` carrying its report (rolled back or halted).
    pub async fn apply(&self, plan: Plan) -> Result<OperationReport, ExecError> {
        plan.validate()?;
        let lb = self.balancer(&plan)?;
        let lease = self.acquire(&plan.deployment).await?;
        let result = self.start(plan, lb, lease.clone()).await;
        self.release(&lease).await;
        result
    }

    async fn start(
        &self,
        plan: Plan,
        lb: Arc<dyn LoadBalancer>,
        lease: crate::ports::Lease,
    ) -> Result<OperationReport, ExecError> {
        let records = self.records();
        let snap = records.snapshot(&plan.deployment).await?;
        if let Some(active) = &snap.record.value.active_operation {
            return Err(ExecError::Unfinished(active.clone()));
        }
        for pre in &plan.preconditions {
            self.check(pre, &snap, lb.as_ref(), &plan).await?;
        }
        let now = self.env.clock.now();
        let plan_key = key::operation_plan(&plan.deployment, &plan.id);
        self.env
            .ports
            .store
            .commit(Commit {
                fence: Some(lease.fence()),
                writes: vec![Write {
                    key: plan_key.clone(),
                    expect: Expect::Any,
                    value: Some(encode(&plan_key, &plan)?),
                }],
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
        run.progress_mut();
        let header = &mut run.snap.record.value;
        header.active_operation = Some(plan.id.clone());
        header.operations.push(plan.id.clone());
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
        self.drive(run, false).await
    }

    async fn check(
        &self,
        pre: &Precondition,
        snap: &crate::records::Snapshot,
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
            Precondition::HealthyMembers { pool, at_least } => {
                let members = plan
                    .policy
                    .retry
                    .run(|| lb.members())
                    .await
                    .map_err(ExecError::PreconditionRead)?;
                let owned = snap.pool(pool);
                let healthy = members
                    .iter()
                    .filter(|m| m.is_serving_healthy())
                    .filter(|m| owned.is_some_and(|p| p.slot_of(&m.server).is_some()))
                    .count();
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
        let result = self.resume_held(deployment, lease.clone()).await;
        self.release(&lease).await;
        result
    }

    async fn resume_held(
        &self,
        deployment: &DeploymentId,
        lease: crate::ports::Lease,
    ) -> Result<Option<OperationReport>, ExecError> {
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
        self.drive(run, true).await.map(Some)
    }

    async fn drive(&self, mut run: Run, resumed: bool) -> Result<OperationReport, ExecError> {
        let span = tracing::info_span!(
            "phoenix_operation",
            operation = %run.plan.id,
            kind = %run.plan.kind,
            deployment = %run.plan.deployment,
            role = %run.plan.role,
        );
        async move {
            loop {
                match run.progress.value.status {
                    OperationStatus::Running => {
                        let i = run.progress.value.next_step();
                        let Some(step) = run.plan.steps.get(i).cloned() else {
                            finish(&mut run, Outcome::Succeeded).await?;
                            continue;
                        };
                        match run_journaled(&mut run, i, &step, false).await? {
                            Ok(()) => {}
                            Err(e) => begin_rollback(&mut run, i, &step, &e).await?,
                        }
                    }
                    OperationStatus::RollingBack => {
                        let Some(rb) = run.progress.value.rollback.clone() else {
                            finish(&mut run, Outcome::Failed).await?;
                            continue;
                        };
                        let j = rb
                            .records
                            .iter()
                            .position(|r| r.status != StepStatus::Done)
                            .unwrap_or(rb.records.len());
                        let Some(step) = rb.steps.get(j).cloned() else {
                            let outcome = if rb.restores {
                                Outcome::RolledBack
                            } else {
                                Outcome::Failed
                            };
                            finish(&mut run, outcome).await?;
                            continue;
                        };
                        if let Err(e) = run_journaled(&mut run, j, &step, true).await? {
                            let progress = run.progress_mut();
                            let first = progress.error.clone().unwrap_or_default();
                            progress.error = Some(format!(
                                "{first}; then rollback step {} ({step}) failed: {}",
                                j + 1,
                                e.chain()
                            ));
                            finish(&mut run, Outcome::Failed).await?;
                        }
                    }
                    OperationStatus::Finished(outcome) => {
                        let report = report(&run, outcome, resumed);
                        return if outcome == Outcome::Succeeded {
                            Ok(report)
                        } else {
                            Err(ExecError::Failed {
                                report: Box::new(report),
                            })
                        };
                    }
                }
            }
        }
        .instrument(span)
        .await
    }
}

fn interrupted(run: &Run, source: Interruption) -> ExecError {
    ExecError::Interrupted {
        operation: run.plan.id.clone(),
        source,
    }
}

/// Journals a step before and after running it. The outer error means the
/// run must stop (it cannot write); the inner one is the step's failure.
async fn run_journaled(
    run: &mut Run,
    index: usize,
    step: &Step,
    rollback: bool,
) -> Result<Result<(), StepError>, ExecError> {
    let now = run.now();
    {
        let record = step_record(run, index, rollback);
        if let Some(r) = record {
            r.status = StepStatus::Running;
            r.runs += 1;
            r.started_at.get_or_insert(now);
        }
    }
    run.emit(EventKind::StepStarted {
        index,
        rollback,
        step: step.to_string(),
    });
    run.save(&[]).await.map_err(|e| interrupted(run, e))?;
    let span = tracing::info_span!("phoenix_step", index, rollback, step = %step);
    run.restoring = rollback;
    let result = execute(run, step).instrument(span).await;
    run.restoring = false;
    let now = run.now();
    match result {
        Ok(()) => {
            if let Some(r) = step_record(run, index, rollback) {
                r.status = StepStatus::Done;
                r.finished_at = Some(now);
            }
            run.emit(EventKind::StepFinished { index, rollback });
            run.save(&[]).await.map_err(|e| interrupted(run, e))?;
            Ok(Ok(()))
        }
        Err(StepError::Interrupted(i)) => Err(interrupted(run, i)),
        Err(e) => {
            let chain = e.chain();
            tracing::warn!(error = %chain, "step failed");
            if let Some(r) = step_record(run, index, rollback) {
                r.status = StepStatus::Failed;
                r.finished_at = Some(now);
                r.error = Some(chain.clone());
            }
            run.emit(EventKind::StepFailed {
                index,
                rollback,
                error: chain,
            });
            run.save(&[]).await.map_err(|e| interrupted(run, e))?;
            Ok(Err(e))
        }
    }
}

fn step_record(run: &mut Run, index: usize, rollback: bool) -> Option<&mut StepRecord> {
    let progress = run.progress_mut();
    if rollback {
        progress.rollback.as_mut()?.records.get_mut(index)
    } else {
        progress.steps.get_mut(index)
    }
}

async fn begin_rollback(
    run: &mut Run,
    index: usize,
    step: &Step,
    error: &StepError,
) -> Result<(), ExecError> {
    let (steps, restores) = compensation::compensation(&run.plan, &run.snap);
    let reason = format!("step {} ({step}) failed: {}", index + 1, error.chain());
    let progress = run.progress_mut();
    progress.status = OperationStatus::RollingBack;
    progress.error = Some(reason.clone());
    progress.rollback = Some(RollbackJournal {
        reason: reason.clone(),
        failed_step: index,
        records: steps.iter().map(|_| StepRecord::pending()).collect(),
        steps: steps.clone(),
        restores,
    });
    run.emit(EventKind::RollbackStarted {
        reason,
        steps: steps.len(),
    });
    run.save(&[]).await.map_err(|e| interrupted(run, e))
}

async fn finish(run: &mut Run, outcome: Outcome) -> Result<(), ExecError> {
    let now = run.now();
    let progress = run.progress_mut();
    progress.status = OperationStatus::Finished(outcome);
    progress.finished_at = Some(now);
    let error = progress.error.clone();
    run.snap.record.value.active_operation = None;
    run.emit(EventKind::OperationFinished { outcome, error });
    run.save(&[]).await.map_err(|e| interrupted(run, e))
}

fn report(run: &Run, outcome: Outcome, resumed: bool) -> OperationReport {
    let p = &run.progress.value;
    OperationReport {
        operation: run.plan.id.clone(),
        kind: run.plan.kind,
        deployment: run.plan.deployment.clone(),
        role: run.plan.role.clone(),
        summary: run.plan.summary.clone(),
        outcome,
        error: p.error.clone(),
        started_at: p.started_at,
        finished_at: p.finished_at.unwrap_or(p.started_at),
        steps: run.plan.steps.len(),
        rollback_steps: p.rollback.as_ref().map_or(0, |r| {
            r.records
                .iter()
                .filter(|s| s.status == StepStatus::Done)
                .count()
        }),
        resumed,
    }
}

async fn execute(run: &mut Run, step: &Step) -> Result<(), StepError> {
    match step {
        Step::CreatePool {
            pool,
            role,
            release,
            image,
            size,
            slots,
        } => {
            run.create_pool(pool, role, release, image, *size, *slots)
                .await
        }
        Step::AddSlots { pool, slots } => run.add_slots(pool, slots).await,
        Step::Launch { pool, slots } => run.launch(pool, slots).await,
        Step::Verify { pool, slots } => run.verify(pool, slots).await,
        Step::SetPoolState { pool, to } => run.set_pool_state(pool, *to).await,
        Step::Attach { pool, slots } => run.attach(pool, slots).await,
        Step::AwaitHealthy { pool, slots } => run.await_healthy(pool, slots).await,
        Step::Bake {
            pool,
            slots,
            duration,
        } => run.bake(pool, slots, *duration).await,
        Step::Detach {
            pool,
            slots,
            replacements,
        } => run.detach(pool, slots, replacements).await,
        Step::AwaitDrained { pool, slots } => run.await_drained(pool, slots).await,
        Step::Stop { pool, slots } => run.stop(pool, slots).await,
        Step::Start { pool, slots } => run.start(pool, slots).await,
        Step::Terminate { pool, slots } => run.terminate(pool, slots).await,
        Step::CleanUpDiscarded { pool } => run.clean_up_discarded(pool).await,
        Step::DeletePool { pool } => run.delete_pool(pool).await,
        Step::AwaitReplacementBudget { count } => run.await_replacement_budget(*count).await,
        Step::VerifyServing { role, release } => run.verify_serving(role, release).await,
        Step::MarkMissing { pool, slots } => run.mark_missing(pool, slots).await,
        Step::TerminateOrphans { servers } => run.terminate_orphans(servers).await,
    }
}

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
