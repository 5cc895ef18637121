//! [`restore`]: pick up after a restart, on any stack.

use phoenix_core::executor::ExecError;
use phoenix_core::id::{DeploymentId, RoleName};
use phoenix_core::ops::ReconcileOptions;
use phoenix_core::Phoenix;

use crate::error::StackError;

/// Picks up where an earlier orchestrator left off, on any stack: resumes
/// an interrupted operation (one that resumes and then fails, rolled back
/// or halted, is done with: not an error here), then plans and applies a
/// reconciliation with `options`, then heals the live pool if there is
/// one. Returns what the reconciliation found.
pub async fn restore(
    phoenix: &Phoenix,
    deployment: &DeploymentId,
    role: &RoleName,
    options: ReconcileOptions,
) -> Result<String, StackError> {
    match phoenix.resume(deployment).await {
        Ok(_) | Err(ExecError::Failed { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let (report, plan) = phoenix.plan_reconcile(deployment, role, options).await?;
    let found = report.to_string();
    if !plan.is_noop() {
        phoenix.apply(plan).await?;
    }
    let snap = phoenix.snapshot(deployment).await?;
    if snap.live_pool(role).is_some() {
        let plan = phoenix.plan_heal(deployment, role).await?;
        if !plan.is_noop() {
            phoenix.apply(plan).await?;
        }
    }
    Ok(found)
}
