//! The canary gate step ([`Step::Canary`](crate::plan::Step::Canary)):
//! weight the canary members where the balancer routes by weight, read the
//! balancer's counters for the canary and the live members, wait out the
//! analysis window, read again, judge the difference against the policy
//! and ask the user's [`CanaryCheck`](crate::canary::CanaryCheck).
//!
//! The step changes nothing that serves: the live members stay as they
//! are. A failing gate fails the step with [`StepError::Canary`]; the
//! compensation then takes the canary members out (with the live pool as
//! their replacement under the capacity guard) and marks the new pool
//! failed. Re-run after a crash, the step starts its window again from a
//! fresh read: counters read before the crash are not evidence of now.

use std::time::Duration;

use crate::canary::CanaryContext;
use crate::id::{PoolId, ServerId};
use crate::plan::SlotRef;
use crate::ports::{ErrorKind, TrafficStats};

use super::error::{CanaryFailure, StepError};
use super::run::Run;

impl Run {
    pub(crate) async fn canary(
        &mut self,
        pool_id: &PoolId,
        slots: &[u32],
        baseline: &[SlotRef],
        window: Duration,
    ) -> Result<(), StepError> {
        let policy = self.plan.policy.canary.clone().unwrap_or_default();
        let wanted = self.slots_of(pool_id, slots)?;
        let targets = Self::targets_of(pool_id, &wanted)?;
        let canary: Vec<ServerId> = targets.iter().map(|(_, t)| t.server.clone()).collect();
        let live = self.baseline_servers(baseline)?;
        let release = self.pool(pool_id)?.release.clone();

        if let Some(percent) = policy.weight {
            self.weigh(pool_id, &canary, percent).await?;
        }
        let canary_before = self.traffic(&canary, "the canary").await?;
        let live_before = self.traffic(&live, "the live pool").await?;
        tracing::info!(pool = %pool_id, window = ?window, "canary: analysis window starts");
        self.sleep(window).await?;
        let canary_seen = self
            .traffic(&canary, "the canary")
            .await?
            .since(&canary_before);
        let live_seen = self
            .traffic(&live, "the live pool")
            .await?
            .since(&live_before);
        let fail = |reason: String| {
            StepError::Canary(Box::new(CanaryFailure {
                pool: pool_id.clone(),
                reason,
                canary: canary_seen,
                baseline: live_seen,
            }))
        };
        if let Err(reason) = policy.judge(&canary_seen) {
            tracing::warn!(pool = %pool_id, %reason, canary = %canary_seen, "canary: gate failed");
            return Err(fail(reason));
        }
        if let Some(check) = self.env.ports.canary_check.clone() {
            let context = CanaryContext {
                pool: pool_id.clone(),
                release,
                servers: targets
                    .iter()
                    .map(|(_, t)| (t.server.clone(), t.endpoint))
                    .collect(),
                canary: canary_seen,
                baseline: live_seen,
            };
            let limit = self.plan.policy.calls.timeout;
            let outcome = tokio::time::timeout(limit, check.check(&context))
                .await
                .map_err(|_| {
                    fail(format!(
                        "the canary check did not answer within {}",
                        crate::time::human(limit)
                    ))
                })?;
            if !outcome.pass {
                return Err(fail(format!("the canary check failed: {}", outcome.detail)));
            }
        }
        if policy.weight.is_some() {
            // The gate passed: the canary members take their full share of
            // what comes next (a switch, the rest of the rollout).
            self.weigh(pool_id, &canary, 100).await?;
        }
        tracing::info!(pool = %pool_id, canary = %canary_seen, live = %live_seen, "canary: gate passed");
        Ok(())
    }

    /// The servers behind the live slots the canary is compared with.
    fn baseline_servers(&self, baseline: &[SlotRef]) -> Result<Vec<ServerId>, StepError> {
        let mut out = Vec::new();
        for r in baseline {
            let pool = self.pool(&r.pool)?;
            if let Some(server) = pool.slot(r.slot).and_then(|s| s.server.clone()) {
                out.push(server);
            }
        }
        Ok(out)
    }

    /// The balancer's counters for `servers`; a balancer that keeps none
    /// fails the gate closed (there is no evidence to pass it on).
    async fn traffic(&self, servers: &[ServerId], whose: &str) -> Result<TrafficStats, StepError> {
        let lb = self.lb.clone();
        self.call(&format!("reading the traffic of {whose}"), || {
            lb.traffic_stats(servers)
        })
        .await
    }

    /// Sets the canary members' weight; a balancer that does not route by
    /// weight keeps the share at the number of members.
    async fn weigh(
        &self,
        pool_id: &PoolId,
        servers: &[ServerId],
        percent: u8,
    ) -> Result<(), StepError> {
        let lb = self.lb.clone();
        match self
            .call(
                &format!("weighting the canary of {pool_id} at {percent}%"),
                || lb.set_weight(servers, percent),
            )
            .await
        {
            Err(StepError::Port { source, .. })
                if matches!(source.kind, ErrorKind::Unsupported(_)) =>
            {
                tracing::info!(pool = %pool_id, "canary: the balancer routes by member count, not weight");
                Ok(())
            }
            other => other,
        }
    }
}
