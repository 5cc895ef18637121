//! Every operation in one call: resume what was interrupted, plan, apply.

use phoenix_core::executor::OperationReport;
use phoenix_core::id::ReleaseLabel;
use phoenix_core::model::PoolState;
use phoenix_core::plan::Plan;

use super::stack::LocalStack;
use crate::error::{release_label as label, StackError};

impl LocalStack {
    /// Applies a plan unless it has nothing to do.
    pub async fn run(&self, plan: Plan) -> Result<Option<OperationReport>, StackError> {
        if plan.is_noop() {
            return Ok(None);
        }
        Ok(Some(self.phoenix.apply(plan).await?))
    }

    /// Creates and verifies a pool of `release` (baked and recorded with
    /// [`Self::release`]) without putting it behind the balancer.
    pub async fn provision(&self, release: &str) -> Result<Option<OperationReport>, StackError> {
        let target = label(release)?;
        self.resume().await?;
        let plan = self
            .phoenix
            .plan_provision(&self.deployment, &self.role, &target, None)
            .await?;
        self.run(plan).await
    }

    /// Makes `release` live, blue-green: a pool of it (an existing ready
    /// or standby one, or a new one) takes the traffic, and the pool that
    /// served is kept as the standby.
    pub async fn deploy(&self, release: &str) -> Result<Option<OperationReport>, StackError> {
        let target = label(release)?;
        self.resume().await?;
        let plan = self
            .phoenix
            .plan_deploy(&self.deployment, &self.role, &target)
            .await?;
        self.run(plan).await
    }

    /// Replaces the live pool by `release` batch by batch.
    pub async fn rollout(&self, release: &str) -> Result<Option<OperationReport>, StackError> {
        let target = label(release)?;
        self.resume().await?;
        let plan = self
            .phoenix
            .plan_rolling_replace(&self.deployment, &self.role, &target)
            .await?;
        self.run(plan).await
    }

    /// Rolls back to the most recent standby pool, or `release`'s.
    pub async fn rollback(&self, release: Option<&str>) -> Result<OperationReport, StackError> {
        let target = release.map(label).transpose()?;
        self.resume().await?;
        let plan = self
            .phoenix
            .plan_rollback(&self.deployment, &self.role, target.as_ref())
            .await?;
        Ok(self.phoenix.apply(plan).await?)
    }

    /// Deletes pools beyond the retention policy (never a serving one).
    pub async fn reap(&self) -> Result<Option<OperationReport>, StackError> {
        self.resume().await?;
        let plan = self.phoenix.plan_reap(&self.deployment, &self.role).await?;
        self.run(plan).await
    }

    /// Replaces servers older than the policy's `max_age`.
    pub async fn refresh(&self) -> Result<Option<OperationReport>, StackError> {
        self.resume().await?;
        let plan = self
            .phoenix
            .plan_refresh(&self.deployment, &self.role)
            .await?;
        self.run(plan).await
    }

    /// Replaces dead or unhealthy servers of the live pool.
    pub async fn heal(&self) -> Result<Option<OperationReport>, StackError> {
        self.resume().await?;
        let plan = self.phoenix.plan_heal(&self.deployment, &self.role).await?;
        self.run(plan).await
    }

    /// The release the live pool runs, if any.
    pub async fn live_release(&self) -> Result<Option<ReleaseLabel>, StackError> {
        let snap = self.phoenix.snapshot(&self.deployment).await?;
        Ok(snap
            .pools
            .values()
            .map(|p| &p.value)
            .find(|p| p.role == self.role && p.state == PoolState::Live)
            .map(|p| p.release.clone()))
    }
}
