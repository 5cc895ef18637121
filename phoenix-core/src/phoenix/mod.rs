//! [`Phoenix`]: the entry point. It reads the records and fresh state,
//! builds plans, applies them, and manages images and releases.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::sync::broadcast;

use crate::events::{Event, EventBus};
use crate::executor::{ExecError, Executor, OperationReport};
use crate::id::{DeploymentId, ImageId, OperationId, ReleaseLabel, RoleName};
use crate::labels::LabelSelector;
use crate::model::{Deployment, Image, ImageState, Release, TestEvidence, TransitionError};
use crate::ops::{self, PlanInput, PlanningError, ReconcileOptions, ReconcileReport};
use crate::plan::Plan;
use crate::policy::Policy;
use crate::ports::{
    BootConfig, Compute, Expect, Images, LoadBalancer, Member, PortError, Probe, ServerHooks,
    StateStore,
};
use crate::ports_set::{Balancers, Ports};
use crate::records::{RecordError, Records, Snapshot};
use crate::time::{SharedClock, SystemClock};

/// A missing part when building [`Phoenix`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Phoenix needs a {0}; set it on the builder")]
pub struct BuildError(pub &'static str);

/// Errors of image and release management.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The image is unknown to the records and the provider.
    #[error("image {0} does not exist")]
    UnknownImage(ImageId),
    /// The image may not be used.
    #[error("image {image} is {state}: {reason}")]
    NotLaunchable {
        /// Image.
        image: ImageId,
        /// State.
        state: ImageState,
        /// Why not.
        reason: String,
    },
    /// A role of the deployment has no image in the release.
    #[error("release {release} names no image for role {role}")]
    MissingRole {
        /// Release.
        release: ReleaseLabel,
        /// Role.
        role: RoleName,
    },
    /// An illegal lifecycle step.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A port failed.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The records failed.
    #[error(transparent)]
    Records(#[from] RecordError),
}

/// Builds [`Phoenix`].
#[derive(Default)]
pub struct PhoenixBuilder {
    compute: Option<Arc<dyn Compute>>,
    images: Option<Arc<dyn Images>>,
    balancers: Balancers,
    has_balancer: bool,
    boot: Option<Arc<dyn BootConfig>>,
    probe: Option<Arc<dyn Probe>>,
    store: Option<Arc<dyn StateStore>>,
    hooks: Option<Arc<dyn ServerHooks>>,
    clock: Option<SharedClock>,
    events: Option<EventBus>,
    policy: Policy,
    holder: Option<String>,
    lease_ttl: Option<Duration>,
    lease_wait: Option<Duration>,
    id_seed: Option<u64>,
}

impl fmt::Debug for PhoenixBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoenixBuilder")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl PhoenixBuilder {
    /// The compute back end.
    pub fn compute(mut self, c: Arc<dyn Compute>) -> Self {
        self.compute = Some(c);
        self
    }
    /// The image back end.
    pub fn images(mut self, i: Arc<dyn Images>) -> Self {
        self.images = Some(i);
        self
    }
    /// One balancer for every role.
    pub fn balancer(mut self, lb: Arc<dyn LoadBalancer>) -> Self {
        self.balancers = self.balancers.with_default(lb);
        self.has_balancer = true;
        self
    }
    /// The balancer of one role.
    pub fn balancer_for(mut self, role: RoleName, lb: Arc<dyn LoadBalancer>) -> Self {
        self.balancers = self.balancers.with_role(role, lb);
        self.has_balancer = true;
        self
    }
    /// The boot configuration renderer.
    pub fn boot_config(mut self, b: Arc<dyn BootConfig>) -> Self {
        self.boot = Some(b);
        self
    }
    /// The health and smoke probe.
    pub fn probe(mut self, p: Arc<dyn Probe>) -> Self {
        self.probe = Some(p);
        self
    }
    /// The state store.
    pub fn store(mut self, s: Arc<dyn StateStore>) -> Self {
        self.store = Some(s);
        self
    }
    /// Hooks that drain state out of servers before they leave and warm
    /// them up before they serve (default: none).
    pub fn hooks(mut self, h: Arc<dyn ServerHooks>) -> Self {
        self.hooks = Some(h);
        self
    }
    /// The clock for timestamps (default: the system clock).
    pub fn clock(mut self, c: SharedClock) -> Self {
        self.clock = Some(c);
        self
    }
    /// The event bus (default: a new one).
    pub fn events(mut self, e: EventBus) -> Self {
        self.events = Some(e);
        self
    }
    /// The policy for plans (default: [`Policy::default`]).
    pub fn policy(mut self, p: Policy) -> Self {
        self.policy = p;
        self
    }
    /// Who this orchestrator is, in leases and journals (default:
    /// `phoenix@<host>:<pid>`).
    pub fn holder(mut self, h: impl Into<String>) -> Self {
        self.holder = Some(h.into());
        self
    }
    /// How long a lease lasts unless renewed (default 60 s).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = Some(ttl);
        self
    }
    /// Wait up to this long for another orchestrator's lease instead of
    /// failing at once with `ExecError::Busy` (default: do not wait).
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.lease_wait = Some(wait);
        self
    }
    /// Seeds operation ids, for reproducible simulations.
    pub fn id_seed(mut self, seed: u64) -> Self {
        self.id_seed = Some(seed);
        self
    }

    /// Builds, refusing a missing port or an unusable policy.
    pub fn build(self) -> Result<Phoenix, BuildError> {
        let compute = self.compute.ok_or(BuildError("compute back end"))?;
        let images = self.images.ok_or(BuildError("image back end"))?;
        if !self.has_balancer {
            return Err(BuildError("load balancer"));
        }
        let boot = self.boot.ok_or(BuildError("boot configuration renderer"))?;
        let probe = self.probe.ok_or(BuildError("probe"))?;
        let store = self.store.ok_or(BuildError("state store"))?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let events = self.events.unwrap_or_default();
        let holder = self.holder.unwrap_or_else(default_holder);
        let ports = Ports {
            compute,
            images,
            balancers: self.balancers,
            boot,
            probe,
            store: store.clone(),
            hooks: self.hooks,
        };
        let executor = Executor::new(
            ports.clone(),
            clock.clone(),
            events.clone(),
            holder,
            self.lease_ttl.unwrap_or(Duration::from_secs(60)),
        )
        .with_lease_wait(self.lease_wait.unwrap_or(Duration::ZERO));
        let rng = match self.id_seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_os_rng(),
        };
        Ok(Phoenix {
            ports,
            clock,
            events,
            policy: self.policy,
            executor,
            records: Records::new(store),
            ids: Mutex::new(rng),
        })
    }
}

fn default_holder() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    format!("phoenix@{host}:{}", std::process::id())
}

/// Plans and applies Phoenix operations over a set of ports.
pub struct Phoenix {
    ports: Ports,
    clock: SharedClock,
    events: EventBus,
    policy: Policy,
    executor: Executor,
    records: Records,
    ids: Mutex<rand::rngs::StdRng>,
}

impl fmt::Debug for Phoenix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Phoenix")
            .field("ports", &self.ports)
            .field("executor", &self.executor)
            .finish_non_exhaustive()
    }
}

impl Phoenix {
    /// Starts building.
    pub fn builder() -> PhoenixBuilder {
        PhoenixBuilder::default()
    }

    /// The ports.
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// The default policy of new plans.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Subscribes to every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The executor.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// Typed access to the records.
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Registers a deployment (idempotent for the same definition).
    pub async fn register(&self, deployment: &Deployment) -> Result<(), RecordError> {
        self.records
            .register_deployment(deployment)
            .await
            .map(|_| ())
    }

    /// Everything recorded about a deployment.
    pub async fn snapshot(&self, deployment: &DeploymentId) -> Result<Snapshot, RecordError> {
        self.records.snapshot(deployment).await
    }

    fn next_operation_id(&self) -> OperationId {
        let suffix: u32 = self
            .ids
            .lock()
            .map(|mut rng| rng.random())
            .unwrap_or_else(|p| p.into_inner().random());
        let at = self.clock.now().format("%Y%m%dT%H%M%S");
        // Only characters ids accept.
        OperationId::from_valid(format!("op-{at}-{suffix:08x}"))
    }

    async fn input(
        &self,
        deployment: &DeploymentId,
    ) -> Result<(Snapshot, OperationId), PlanningError> {
        let snap = self.records.snapshot(deployment).await?;
        Ok((snap, self.next_operation_id()))
    }

    fn plan_input<'a>(
        &'a self,
        snap: &'a Snapshot,
        operation: OperationId,
        role: &RoleName,
        policy: &'a Policy,
    ) -> PlanInput<'a> {
        PlanInput {
            snap,
            policy,
            operation,
            now: self.clock.now(),
            role: role.clone(),
        }
    }

    async fn members(&self, role: &RoleName) -> Result<Vec<Member>, PlanningError> {
        let lb = self.ports.balancers.for_role(role).ok_or_else(|| {
            PlanningError::Read(PortError::permanent(
                "choosing a balancer",
                format!("no balancer is configured for role {role}"),
            ))
        })?;
        self.policy
            .retry
            .run(|| lb.members())
            .await
            .map_err(PlanningError::Read)
    }

    /// Checks that an image may be launched in the deployment's
    /// environment: it exists, and it is certified when the environment
    /// is production or the policy requires it.
    pub async fn check_launchable(
        &self,
        deployment: &Deployment,
        image: &ImageId,
        policy: &Policy,
    ) -> Result<(), PlanningError> {
        let state = match self.records.image(image).await? {
            Some(stored) => stored.value.state,
            None => {
                let images = self.ports.images.clone();
                match self.policy.retry.run(|| images.get(image)).await {
                    Ok(img) => img.state,
                    Err(e) if e.is_not_found() => {
                        return Err(PlanningError::UnknownImage(image.clone()))
                    }
                    Err(e) => return Err(PlanningError::Read(e)),
                }
            }
        };
        let refuse = |reason: &str| PlanningError::ImageNotLaunchable {
            image: image.clone(),
            state,
            reason: reason.to_owned(),
        };
        match state {
            ImageState::Building | ImageState::Deleted => Err(refuse("it cannot be launched")),
            s if s.is_certified() || s == ImageState::Deprecated => Ok(()),
            _ if deployment.environment.production => {
                Err(refuse("production only launches certified images"))
            }
            _ if policy.provision.require_certified => {
                Err(refuse("the policy requires certified images"))
            }
            _ => Ok(()),
        }
    }

    async fn check_release_image(
        &self,
        snap: &Snapshot,
        role: &RoleName,
        release: &ReleaseLabel,
        policy: &Policy,
    ) -> Result<(), PlanningError> {
        let r = snap
            .releases
            .get(release)
            .ok_or_else(|| PlanningError::UnknownRelease(release.clone()))?;
        let image = r
            .image_for(role)
            .ok_or_else(|| PlanningError::NoImageForRole {
                release: release.clone(),
                role: role.clone(),
            })?;
        self.check_launchable(snap.deployment(), image, policy)
            .await
    }

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
        ops::deploy(&self.plan_input(&snap, op, role, policy), release)
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
        ops::rolling_replace(&self.plan_input(&snap, op, role, policy), release)
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
        let members = self.members(role).await?;
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
                self.policy
                    .retry
                    .run(|| compute.describe(chunk))
                    .await
                    .map_err(PlanningError::Read)?,
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
        let (snap, op) = self.input(deployment).await?;
        let members = self.members(role).await?;
        let compute = self.ports.compute.clone();
        let selector = LabelSelector::deployment(deployment);
        let cloud = self
            .policy
            .retry
            .run(|| compute.list(&selector))
            .await
            .map_err(PlanningError::Read)?;
        let window = compute.capabilities().consistency_window;
        ops::reconcile(
            &self.plan_input(&snap, op, role, &self.policy),
            &cloud,
            &members,
            window,
            options,
        )
    }

    /// Applies a plan (see [`Executor::apply`]).
    pub async fn apply(&self, plan: Plan) -> Result<OperationReport, ExecError> {
        self.executor.apply(plan).await
    }

    /// Resumes an interrupted operation (see [`Executor::resume`]).
    pub async fn resume(
        &self,
        deployment: &DeploymentId,
    ) -> Result<Option<OperationReport>, ExecError> {
        self.executor.resume(deployment).await
    }

    /// Records an image (from a bake) in the records, so that its
    /// lifecycle and evidence are kept for auditors.
    pub async fn register_image(&self, image: &Image) -> Result<(), CatalogError> {
        match self.records.image(&image.id).await? {
            Some(_) => Ok(()),
            None => {
                self.records.put_image(image, Expect::Absent).await?;
                Ok(())
            }
        }
    }

    async fn image_record(&self, id: &ImageId) -> Result<(Image, u64), CatalogError> {
        if let Some(stored) = self.records.image(id).await? {
            return Ok((stored.value, stored.version));
        }
        let images = self.ports.images.clone();
        match self.policy.retry.run(|| images.get(id)).await {
            Ok(img) => {
                let version = self.records.put_image(&img, Expect::Absent).await?;
                Ok((img, version))
            }
            Err(e) if e.is_not_found() => Err(CatalogError::UnknownImage(id.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Records test evidence on an image.
    pub async fn record_evidence(
        &self,
        id: &ImageId,
        evidence: TestEvidence,
    ) -> Result<Image, CatalogError> {
        let (mut image, version) = self.image_record(id).await?;
        image.record_evidence(evidence)?;
        self.records
            .put_image(&image, Expect::Version(version))
            .await?;
        Ok(image)
    }

    /// Moves an image along its lifecycle (checked), records it, and tags
    /// the provider's image with its new state.
    pub async fn promote(&self, id: &ImageId, to: ImageState) -> Result<Image, CatalogError> {
        let (mut image, version) = self.image_record(id).await?;
        image.transition(to)?;
        self.records
            .put_image(&image, Expect::Version(version))
            .await?;
        if self.ports.images.capabilities().properties {
            let mut props = BTreeMap::new();
            props.insert("phoenix-image-state".to_owned(), to.to_string());
            let images = self.ports.images.clone();
            self.policy
                .retry
                .run(|| images.set_properties(id, &props))
                .await?;
        }
        Ok(image)
    }

    /// Records a release: every role of the deployment must have an image
    /// that may be launched in its environment. The configuration
    /// fingerprint combines each role's fingerprint from the boot
    /// configuration. Images are promoted to `Released`.
    pub async fn create_release(
        &self,
        deployment: &DeploymentId,
        label: ReleaseLabel,
        images: BTreeMap<RoleName, ImageId>,
    ) -> Result<Release, CatalogError> {
        let snap = self.records.snapshot(deployment).await?;
        let dep = snap.deployment().clone();
        let mut fingerprints = Vec::new();
        for role in dep.roles.keys() {
            let image = images.get(role).ok_or_else(|| CatalogError::MissingRole {
                release: label.clone(),
                role: role.clone(),
            })?;
            match self.check_launchable(&dep, image, &self.policy).await {
                Ok(()) => {}
                Err(PlanningError::UnknownImage(i)) => return Err(CatalogError::UnknownImage(i)),
                Err(PlanningError::ImageNotLaunchable {
                    image,
                    state,
                    reason,
                }) => {
                    return Err(CatalogError::NotLaunchable {
                        image,
                        state,
                        reason,
                    })
                }
                Err(PlanningError::Read(e)) => return Err(CatalogError::Port(e)),
                Err(PlanningError::Records(e)) => return Err(CatalogError::Records(e)),
                Err(other) => {
                    return Err(CatalogError::Port(PortError::permanent(
                        "checking the image",
                        other.to_string(),
                    )))
                }
            }
            let boot = self.ports.boot.clone();
            let env = dep.environment.name.clone();
            let fp = self
                .policy
                .retry
                .run(|| boot.fingerprint(&env, role, &label))
                .await?;
            fingerprints.push(format!("{role}={fp}"));
        }
        let release = Release {
            label,
            deployment: deployment.clone(),
            images: images.clone(),
            config_fingerprint: crate::fingerprint_of(&fingerprints.join("\n")),
            created_at: self.clock.now(),
        };
        self.records.record_release(&release).await?;
        for image in images.values() {
            let (current, _) = self.image_record(image).await?;
            if current.state == ImageState::Certified {
                self.promote(image, ImageState::Released).await?;
            }
        }
        Ok(release)
    }
}
