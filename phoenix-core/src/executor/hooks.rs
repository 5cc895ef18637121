//! Running the drain and warm-up hooks at the steps that move servers.

use futures::stream::{self, StreamExt};

use crate::events::{EventKind, HookKind};
use crate::id::PoolId;
use crate::policy::HookFailure;
use crate::ports::{HookReport, HookTarget};

use super::error::StepError;
use super::run::Run;

impl Run {
    /// True when `kind` still has to run for some of the listed slots.
    pub(crate) fn hooks_due(
        &self,
        kind: HookKind,
        pool_id: &PoolId,
        slots: &[u32],
    ) -> Result<bool, StepError> {
        if self.env.ports.hooks.is_none() {
            return Ok(false);
        }
        let pool = self.pool(pool_id)?;
        Ok(slots
            .iter()
            .filter_map(|i| pool.slot(*i))
            .filter(|s| s.server.is_some() && s.endpoint.is_some())
            .any(|s| match kind {
                HookKind::WarmUp => !s.warmed,
                HookKind::Drain => !s.drained,
            }))
    }

    /// Runs `kind` for the listed slots that have a server and have not had
    /// it yet since they were last attached; records each outcome. A
    /// failure fails the step when the policy blocks, else it is an event.
    pub(crate) async fn run_hooks(
        &mut self,
        kind: HookKind,
        pool_id: &PoolId,
        slots: &[u32],
    ) -> Result<(), StepError> {
        let Some(hooks) = self.env.ports.hooks.clone() else {
            return Ok(());
        };
        let pool = self.pool(pool_id)?;
        let targets: Vec<HookTarget> = slots
            .iter()
            .filter_map(|i| pool.slot(*i))
            .filter(|s| match kind {
                HookKind::WarmUp => !s.warmed,
                HookKind::Drain => !s.drained,
            })
            .filter_map(|s| {
                Some(HookTarget {
                    server: s.server.clone()?,
                    endpoint: s.endpoint?,
                    pool: pool.id.clone(),
                    slot: s.index,
                    role: pool.role.clone(),
                    release: pool.release.clone(),
                })
            })
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let mut policy = self.plan.policy.hooks.clone();
        // A hook changes what a server holds: it runs under the lease. The
        // lease is renewed while hooks run (they may take their whole
        // timeout), and hooks are abandoned at once if it is lost.
        self.calls.keeper.ensure().await?;
        if self.restoring {
            // A rollback restores service: a hook that fails while the
            // failed pool leaves is recorded, never a reason to keep it.
            policy.on_failure = HookFailure::Proceed;
        }
        let all = stream::iter(targets)
            .map(|target| {
                let hooks = hooks.clone();
                async move {
                    let run = async {
                        match kind {
                            HookKind::WarmUp => hooks.warm_up(&target).await,
                            HookKind::Drain => hooks.drain(&target).await,
                        }
                    };
                    let outcome = match tokio::time::timeout(policy.timeout, run).await {
                        Ok(Ok(report)) if report.failed == 0 => Ok(report),
                        Ok(Ok(report)) => Err(format!(
                            "{} of {} failed: {}",
                            report.failed,
                            report.done + report.failed,
                            report.detail
                        )),
                        Ok(Err(e)) => Err(e.chain()),
                        Err(_) => Err(format!(
                            "did not finish within {}",
                            crate::time::human(policy.timeout)
                        )),
                    };
                    (target, outcome)
                }
            })
            .buffered(policy.concurrency.max(1))
            .collect::<Vec<(HookTarget, Result<HookReport, String>)>>();
        // Hooks take time: the step is seen started while they run. The
        // commit goes out alongside them, not before (nothing the hooks
        // do depends on it, and a crash re-runs them either way).
        let keeper = self.calls.keeper.clone();
        let (flushed, outcomes) = tokio::select! {
            both = async { tokio::join!(self.flush_journal(), all) } => both,
            lost = keeper.heartbeat() => return Err(StepError::Interrupted(lost)),
        };
        flushed?;
        let mut blocking = None;
        let pool = self.pool_mut(pool_id)?;
        let mut events = Vec::new();
        for (target, outcome) in outcomes {
            let (ok, done, failed, detail) = match &outcome {
                Ok(r) => (true, r.done, r.failed, r.detail.clone()),
                Err(e) => (false, 0, 1, e.clone()),
            };
            if ok || policy.on_failure == HookFailure::Proceed {
                if let Some(s) = pool.slot_mut(target.slot) {
                    match kind {
                        HookKind::WarmUp => s.warmed = true,
                        HookKind::Drain => s.drained = true,
                    }
                }
            } else {
                blocking.get_or_insert(StepError::Hook {
                    hook: kind,
                    server: target.server.clone(),
                    detail: detail.clone(),
                });
            }
            events.push(EventKind::HookRan {
                hook: kind,
                pool: target.pool,
                slot: target.slot,
                server: target.server,
                ok,
                done,
                failed,
                detail,
            });
        }
        for e in events {
            self.emit(e);
        }
        // A hook that ran is redone if a crash loses its record (hooks
        // are idempotent hand-overs), so the record rides on the next
        // commit rather than delaying what the hook made way for (the
        // traffic leaving the pool).
        self.defer_save(pool_id);
        match blocking {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
