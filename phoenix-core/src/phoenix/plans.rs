//! Planning: every `plan_*` reads the records and, where it matters,
//! fresh state (with deadlines, failing closed), and builds a plan.

use crate::id::{DeploymentId, ReleaseLabel, RoleName};
use crate::labels::LabelSelector;
use crate::ops::{self, PlanningError, ReconcileOptions, ReconcileReport};
use crate::plan::Plan;
use crate::policy::Policy;

use super::Phoenix;

impl Phoenix {
    /// Plans a new verified pool for a release (not made live).
    pub async fn plan_provision(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        release: &ReleaseLabel,
        size: Option<usize>,
    ) -> Result<Plan, PlanningError> {
        self.plan_provision_with(deployment, role, release, size, &self.policy)
            .await
    }

    /// [`Self::plan_provision`] with another policy.
    pub async fn plan_provision_with(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        release: &ReleaseLabel,
        size: Option<usize>,
        policy: &Policy,
    ) -> Result<Plan, PlanningError> {
        let (snap, op) = self.input(deployment).await?;
        self.check_release_image(&snap, role, release, policy)
            .await?;
        ops::provision(&self.plan_input(&snap, op, role, policy), release, size)
    }

    /// Plans a blue-green switch of a role to a release.
    pub async fn plan_deploy(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        release: &ReleaseLabel,
    ) -> Result<Plan, PlanningError> {
        self.plan_deploy_with(deployment, role, release, &self.policy)
            .await
    }

    /// [`Self::plan_deploy`] with another policy.
    pub async fn plan_deploy_with(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        release: &ReleaseLabel,
        policy: &Policy,
    ) -> Result<Plan, PlanningError> {
        let (snap, op) = self.input(deployment).await?;
        self.check_release_image(&snap, role, release, policy)
            .await?;
        let input = self.plan_input(&snap, op, role, policy);
        let plan = ops::deploy(&input, release)?;
        if !plan.is_noop() {
            return self.promoted(&snap, role, release, plan).await;
        }
        // "Already live" by the records: the balancer has the last word.
        let members = self.members(role).await?;
        let plan = ops::deploy_seen(&input, release, &members)?;
        self.promoted(&snap, role, release, plan).await
    }

    /// Adds the proof the deployment's promotion rule asks for to a plan
    /// that makes `release` live; refuses the plan without it.
    async fn promoted(
        &self,
        snap: &crate::records::Snapshot,
        role: &RoleName,
        release: &ReleaseLabel,
        mut plan: Plan,
    ) -> Result<Plan, PlanningError> {
        if plan.is_noop() {
            return Ok(plan);
        }
        let image = snap
            .releases
            .get(release)
            .and_then(|r| r.image_for(role))
            .ok_or_else(|| PlanningError::NoImageForRole {
                release: release.clone(),
                role: role.clone(),
            })?;
        if let Some(proof) = ops::promotion::check(
            &self.records,
            snap.deployment(),
            role,
            image,
            self.clock.now(),
        )
        .await?
        {
            plan.preconditions
                .push(crate::plan::Precondition::Promoted { proof });
        }
        Ok(plan)
    }

    /// Plans a rolling replacement of a role's live pool by a release.
    pub async fn plan_rolling_replace(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        release: &ReleaseLabel,
    ) -> Result<Plan, PlanningError> {
        self.plan_rolling_replace_with(deployment, role, release, &self.policy)
            .await
    }

    /// [`Self::plan_rolling_replace`] with another policy.
    pub async fn plan_rolling_replace_with(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        release: &ReleaseLabel,
        policy: &Policy,
    ) -> Result<Plan, PlanningError> {
        let (snap, op) = self.input(deployment).await?;
        self.check_release_image(&snap, role, release, policy)
            .await?;
        let plan = ops::rolling_replace(&self.plan_input(&snap, op, role, policy), release)?;
        self.promoted(&snap, role, release, plan).await
    }

    /// Plans a rollback to the previous release, or to a named one.
    pub async fn plan_rollback(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        release: Option<&ReleaseLabel>,
    ) -> Result<Plan, PlanningError> {
        self.plan_rollback_with(deployment, role, release, &self.policy)
            .await
    }

    /// [`Self::plan_rollback`] with another policy.
    pub async fn plan_rollback_with(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        release: Option<&ReleaseLabel>,
        policy: &Policy,
    ) -> Result<Plan, PlanningError> {
        let (snap, op) = self.input(deployment).await?;
        ops::rollback(&self.plan_input(&snap, op, role, policy), release)
    }

    /// Plans deleting pools beyond retention (refusing any the balancer
    /// serves, by a fresh read).
    pub async fn plan_reap(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
    ) -> Result<Plan, PlanningError> {
        self.plan_reap_with(deployment, role, &self.policy).await
    }

    /// [`Self::plan_reap`] with another policy.
    pub async fn plan_reap_with(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        policy: &Policy,
    ) -> Result<Plan, PlanningError> {
        let (snap, op) = self.input(deployment).await?;
        // Serving means serving behind any balancer Phoenix knows.
        let members = self.all_members().await?;
        let can_stop = self.ports.compute.capabilities().stop_start;
        ops::reap(
            &self.plan_input(&snap, op, role, policy),
            &members,
            can_stop,
        )
    }

    /// Plans replacing servers older than the maximum age.
    pub async fn plan_refresh(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
    ) -> Result<Plan, PlanningError> {
        self.plan_refresh_with(deployment, role, &self.policy).await
    }

    /// [`Self::plan_refresh`] with another policy.
    pub async fn plan_refresh_with(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        policy: &Policy,
    ) -> Result<Plan, PlanningError> {
        let (snap, op) = self.input(deployment).await?;
        ops::refresh(&self.plan_input(&snap, op, role, policy))
    }

    /// Plans replacing dead or unhealthy live servers (fresh reads of the
    /// balancer and the cloud).
    pub async fn plan_heal(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
    ) -> Result<Plan, PlanningError> {
        self.plan_heal_with(deployment, role, &self.policy).await
    }

    /// [`Self::plan_heal`] with another policy.
    pub async fn plan_heal_with(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        policy: &Policy,
    ) -> Result<Plan, PlanningError> {
        let (snap, op) = self.input(deployment).await?;
        let members = self.members(role).await?;
        let ids: Vec<_> = snap
            .live_pools(role)
            .flat_map(|p| p.attached().filter_map(|s| s.server.clone()))
            .collect();
        let compute = self.ports.compute.clone();
        let max = compute.capabilities().max_describe_batch.max(1);
        let mut cloud = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(max) {
            cloud.extend(
                self.read("describing live servers", || compute.describe(chunk))
                    .await?,
            );
        }
        ops::heal(&self.plan_input(&snap, op, role, policy), &members, &cloud)
    }

    /// Compares records, cloud and balancer; plans the requested repairs.
    pub async fn plan_reconcile(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        options: ReconcileOptions,
    ) -> Result<(ReconcileReport, Plan), PlanningError> {
        self.plan_reconcile_with(deployment, role, options, &self.policy)
            .await
    }

    /// [`Self::plan_reconcile`] with another policy (its batch size and
    /// every other setting apply to the repairs).
    pub async fn plan_reconcile_with(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        options: ReconcileOptions,
        policy: &Policy,
    ) -> Result<(ReconcileReport, Plan), PlanningError> {
        let (snap, op) = self.input(deployment).await?;
        let members = self.members(role).await?;
        let serving = self.all_members().await?;
        let compute = self.ports.compute.clone();
        let selector = LabelSelector::deployment(deployment);
        let cloud = self
            .read("listing the deployment's servers", || {
                compute.list(&selector)
            })
            .await?;
        let window = compute.capabilities().consistency_window;
        ops::reconcile(
            &self.plan_input(&snap, op, role, policy),
            &cloud,
            &members,
            &serving,
            window,
            options,
        )
    }
}
