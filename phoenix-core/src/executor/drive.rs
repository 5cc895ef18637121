//! The journaled loop that runs an operation's steps, then its rollback
//! steps after a failure, and ends it.
//!
//! A step's failure is never committed on its own: it lands in the same
//! commit as what follows from it (the start of the rollback, or the end
//! of the operation), so a crash or a store outage in between cannot leave
//! a failed step that a resume would run again (a flaky smoke test that
//! passes the second time must not let a failed rollout continue).

use tracing::Instrument;

use crate::events::{EventKind, Outcome};
use crate::model::PoolState;
use crate::plan::Step;

use super::compensation;
use super::error::{ExecError, Interruption, StepError};
use super::journal::{OperationStatus, RollbackJournal, StepRecord, StepStatus};
use super::run::Run;
use super::{FailureCause, OperationReport};

pub(crate) fn interrupted(run: &Run, source: Interruption) -> ExecError {
    ExecError::Interrupted {
        operation: run.plan.id.clone(),
        source,
    }
}

/// Runs the operation to its end (or until it cannot write).
pub(crate) async fn drive(mut run: Run, resumed: bool) -> Result<OperationReport, ExecError> {
    let span = tracing::info_span!(
        "phoenix_operation",
        operation = %run.plan.id,
        kind = %run.plan.kind,
        deployment = %run.plan.deployment,
        role = %run.plan.role,
    );
    async move {
        match steps(&mut run, resumed).await {
            Err(ExecError::Interrupted {
                source: Interruption::Preempted { by, reason },
                ..
            }) => {
                let report = end_preempted(&mut run, &by, &reason, resumed).await?;
                Err(ExecError::Preempted {
                    report: Box::new(report),
                })
            }
            other => other,
        }
    }
    .instrument(span)
    .await
}

async fn steps(run: &mut Run, resumed: bool) -> Result<OperationReport, ExecError> {
    loop {
        match run.progress.value.status {
            OperationStatus::Running => {
                let i = run.progress.value.next_step();
                let Some(step) = run.plan.steps.get(i).cloned() else {
                    finish(run, Outcome::Succeeded).await?;
                    continue;
                };
                // A journal written before failures were committed with
                // their rollback may hold a failed step: it is rolled back,
                // never run again.
                if let Some(failed) = run
                    .progress
                    .value
                    .steps
                    .get(i)
                    .filter(|r| r.status == StepStatus::Failed)
                {
                    let error = StepError::Inconsistent(
                        failed.error.clone().unwrap_or_else(|| "it failed".into()),
                    );
                    begin_rollback(run, i, &step, &error).await?;
                    continue;
                }
                run.safe_point().await.map_err(|e| interrupted(run, e))?;
                if let Err(e) = run_journaled(run, i, &step, false).await? {
                    begin_rollback(run, i, &step, &e).await?;
                }
            }
            OperationStatus::RollingBack => {
                let Some(rb) = run.progress.value.rollback.clone() else {
                    finish(run, Outcome::Failed).await?;
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
                    finish(run, outcome).await?;
                    continue;
                };
                let failed_before = rb
                    .records
                    .get(j)
                    .filter(|r| r.status == StepStatus::Failed)
                    .map(|r| r.error.clone().unwrap_or_default());
                let failure = match failed_before {
                    Some(error) => Some(error),
                    None => {
                        run.safe_point().await.map_err(|e| interrupted(run, e))?;
                        run_journaled(run, j, &step, true)
                            .await?
                            .err()
                            .map(|e| e.chain())
                    }
                };
                if let Some(error) = failure {
                    let progress = run.progress_mut();
                    let first = progress.error.clone().unwrap_or_default();
                    progress.error = Some(format!(
                        "{first}; then rollback step {} ({step}) failed: {error}",
                        j + 1,
                    ));
                    finish(run, Outcome::Failed).await?;
                }
            }
            OperationStatus::Finished(outcome) => {
                let report = report(run, outcome, resumed);
                return match outcome {
                    Outcome::Succeeded => Ok(report),
                    Outcome::Preempted => Err(ExecError::Preempted {
                        report: Box::new(report),
                    }),
                    _ => Err(ExecError::Failed {
                        cause: report.cause.clone().unwrap_or(FailureCause::Unknown),
                        report: Box::new(report),
                    }),
                };
            }
        }
    }
}

/// Journals a step before running it and, when it succeeds, after. The
/// outer error means the run must stop (it cannot write); the inner one is
/// the step's failure, recorded in memory and committed by the caller
/// together with what follows from it.
async fn run_journaled(
    run: &mut Run,
    index: usize,
    step: &Step,
    rollback: bool,
) -> Result<Result<(), StepError>, ExecError> {
    let now = run.now();
    if let Some(r) = step_record(run, index, rollback) {
        r.status = StepStatus::Running;
        r.runs += 1;
        r.started_at.get_or_insert(now);
    }
    run.emit(EventKind::StepStarted {
        index,
        rollback,
        step: step.to_string(),
    });
    // Committed with the step's first change, or before it waits for
    // anything: a step that neither changes nor waits costs no commit.
    run.journal_pending = true;
    let span = tracing::info_span!("phoenix_step", index, rollback, step = %step);
    run.restoring = rollback;
    run.current = Some((index, rollback));
    let result = execute(run, step).instrument(span).await;
    run.restoring = false;
    run.current = None;
    let now = run.now();
    match result {
        Ok(()) => {
            if let Some(r) = step_record(run, index, rollback) {
                r.status = StepStatus::Done;
                r.finished_at = Some(now);
            }
            run.emit(EventKind::StepFinished { index, rollback });
            // Rides on the next commit (the next step's, or the end's).
            run.journal_pending = true;
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

/// Starts the rollback (or clean-up) of a failed step: committed in one
/// write with the failure itself.
async fn begin_rollback(
    run: &mut Run,
    index: usize,
    step: &Step,
    error: &StepError,
) -> Result<(), ExecError> {
    let (steps, restores) = compensation::compensation(&run.plan, &run.snap, Some(step));
    let reason = format!("step {} ({step}) failed: {}", index + 1, error.chain());
    let progress = run.progress_mut();
    progress.status = OperationStatus::RollingBack;
    progress.error = Some(reason.clone());
    progress.cause = Some(FailureCause::of(error));
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

/// Ends an operation an emergency pre-empted, at a safe point: nothing
/// more is done in the cloud; pools it created that never served are
/// marked failed (reap removes them), and what it left half-way is
/// recorded as it is (heal and reap settle it).
pub(crate) async fn end_preempted(
    run: &mut Run,
    by: &str,
    reason: &str,
    resumed: bool,
) -> Result<OperationReport, ExecError> {
    let now = run.now();
    let created: Vec<crate::id::PoolId> = run
        .plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::CreatePool { pool, .. } => Some(pool.clone()),
            _ => None,
        })
        .collect();
    let mut changed = Vec::new();
    for id in &created {
        let Ok(pool) = run.pool_mut(id) else { continue };
        let never_served = matches!(
            pool.state,
            PoolState::Provisioning | PoolState::Verifying | PoolState::Ready
        ) && pool
            .slots
            .iter()
            .all(|s| s.traffic == crate::model::Traffic::Out);
        let from = pool.state;
        if never_served && pool.transition(PoolState::Failed, now).is_ok() {
            changed.push((id.clone(), from));
        }
    }
    for (id, from) in &changed {
        run.emit(EventKind::PoolStateChanged {
            pool: id.clone(),
            from: *from,
            to: PoolState::Failed,
        });
    }
    let why = format!("pre-empted by {by}: {reason}");
    let progress = run.progress_mut();
    if let OperationStatus::Running = progress.status {
        let i = progress.next_step();
        if let Some(r) = progress.steps.get_mut(i) {
            if r.status == StepStatus::Running {
                r.error = Some(why.clone());
            }
        }
    }
    progress.status = OperationStatus::Finished(Outcome::Preempted);
    progress.finished_at = Some(now);
    progress.error = Some(why.clone());
    run.snap.record.value.active_operation = None;
    run.emit(EventKind::OperationFinished {
        outcome: Outcome::Preempted,
        error: Some(why),
    });
    let refs: Vec<&crate::id::PoolId> = changed.iter().map(|(id, _)| id).collect();
    run.save(&refs).await.map_err(|e| interrupted(run, e))?;
    Ok(report(run, Outcome::Preempted, resumed))
}

pub(crate) fn report(run: &Run, outcome: Outcome, resumed: bool) -> OperationReport {
    let p = &run.progress.value;
    OperationReport {
        operation: run.plan.id.clone(),
        kind: run.plan.kind,
        deployment: run.plan.deployment.clone(),
        role: run.plan.role.clone(),
        summary: run.plan.summary.clone(),
        outcome,
        error: p.error.clone(),
        cause: p.cause.clone(),
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
        Step::Stage { pool, slots } => run.stage(pool, slots).await,
        Step::Switch {
            pool,
            slots,
            away,
            standby,
        } => run.switch(pool, slots, away, *standby).await,
        Step::AwaitHealthy { pool, slots } => run.await_healthy(pool, slots).await,
        Step::Bake {
            pool,
            slots,
            duration,
        } => run.bake(pool, slots, *duration).await,
        Step::Canary {
            pool,
            slots,
            baseline,
            window,
        } => run.canary(pool, slots, baseline, *window).await,
        Step::Detach {
            pool,
            slots,
            replacements,
        } => run.detach(pool, slots, replacements, false).await,
        Step::Standby {
            pool,
            slots,
            replacements,
        } => run.detach(pool, slots, replacements, true).await,
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
