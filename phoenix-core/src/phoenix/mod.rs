//! [`Phoenix`]: the entry point. It reads the records and fresh state,
//! builds plans, applies them, and manages images and releases.

mod catalog;
pub use catalog::{EVIDENCE_COUNT_PROPERTY, EVIDENCE_PROPERTY};
mod plans;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::sync::broadcast;

use crate::events::{Event, EventBus};
use crate::executor::{ExecError, Executor, OperationReport};
use crate::id::{DeploymentId, ImageId, OperationId, ReleaseLabel, RoleName};
use crate::model::{Deployment, ImageState, TransitionError};
use crate::ops::{self, PlanInput, PlanningError};
use crate::plan::Plan;
use crate::policy::Policy;
use crate::ports::{
    BootConfig, Compute, Images, LoadBalancer, Member, PortError, Probe, ServerHooks, StateStore,
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
#[non_exhaustive]
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
    canary_check: Option<Arc<dyn crate::canary::CanaryCheck>>,
    clock: Option<SharedClock>,
    events: Option<EventBus>,
    policy: Policy,
    holder: Option<String>,
    lease_ttl: Option<Duration>,
    lease_wait: Option<Duration>,
    emergency_wait: Option<Duration>,
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
    /// A balancer Phoenix never changes but behind which the deployment's
    /// servers may serve (a floating IP, a second listener, the balancer a
    /// role moved away from): no server serving behind it is stopped or
    /// terminated.
    pub fn watch_balancer(mut self, lb: Arc<dyn LoadBalancer>) -> Self {
        self.balancers = self.balancers.with_watched(lb);
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
    /// The user's check of a canary, run by the canary gate once the
    /// balancer's numbers passed (default: none; the gate reads the
    /// balancer alone). See [`CanaryCheck`](crate::canary::CanaryCheck).
    pub fn canary_check(mut self, c: Arc<dyn crate::canary::CanaryCheck>) -> Self {
        self.canary_check = Some(c);
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
    /// How long an emergency rollback waits for a running operation to
    /// stop (default: twice the lease's time to live).
    pub fn emergency_wait(mut self, wait: Duration) -> Self {
        self.emergency_wait = Some(wait);
        self
    }
    /// Seeds operation ids, for reproducible simulations.
    pub fn id_seed(mut self, seed: u64) -> Self {
        self.id_seed = Some(seed);
        self
    }

    /// Builds, refusing a missing port. The policy is checked where it is
    /// used: every plan made or applied with it is validated
    /// ([`Policy::validate`]) before any call.
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
            canary_check: self.canary_check,
        };
        let lease_ttl = self.lease_ttl.unwrap_or(Duration::from_secs(60));
        let executor = Executor::new(
            ports.clone(),
            clock.clone(),
            events.clone(),
            holder,
            lease_ttl,
        )
        .with_lease_wait(self.lease_wait.unwrap_or(Duration::ZERO))
        .with_emergency_wait(self.emergency_wait.unwrap_or(lease_ttl * 2))
        .with_budget(self.policy.refresh.clone());
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
///
/// # Guarantees
///
/// Every operation runs through the [`Executor`], and what it promises
/// holds here: no serving server is stopped or terminated, the capacity
/// floor and the blast radius hold, the first failed step halts and rolls
/// back, one orchestrator writes at a time (leases and fencing tokens), no
/// launch leaves an orphan or a duplicate, every step ends in bounded
/// time, "done" means a fresh read shows the release serving, retention
/// keeps its rollback pools, and secrets never leave boot payloads. See
/// [`Executor`]'s `# Guarantees` for each one precisely, and its
/// `# Cancellation` for what dropping a future or an emergency does.
///
/// Planning adds its own: a release is made only of images with passing
/// test evidence for their digest ([`Phoenix::create_release`]), plans are
/// made against the records' generation and refused if they changed, and
/// a refresh counts ages from when a server was first seen, never from a
/// provider's restart.
///
/// # Assumptions
///
/// The guarantees rest on the ports keeping their contracts: balancers
/// report every member at its true endpoint and re-activate on attach,
/// compute lists a launch by its labels within its consistency window, and
/// the state store grants one lease at a time and refuses stale fencing
/// tokens (see [`Executor`]'s `# Assumptions`). The conformance suites
/// (module `conformance`, feature `conformance`) check each adapter
/// against them.
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

    /// The clock timestamps come from.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
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
            balancer: self
                .ports
                .balancers
                .for_role(role)
                .map(|lb| lb.capabilities()),
        }
    }

    /// A port read for planning, retried under the policy, each attempt
    /// within the call deadline; a failure fails the planning closed.
    pub(crate) async fn read<T, F, Fut>(&self, context: &str, mut f: F) -> Result<T, PlanningError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PortError>>,
    {
        let timeout = self.policy.calls.timeout;
        self.policy
            .retry
            .run(|| {
                let call = f();
                async move {
                    tokio::time::timeout(timeout, call)
                        .await
                        .unwrap_or_else(|_| {
                            Err(PortError::temporary(
                                context,
                                format!("no answer within {}", crate::time::human(timeout)),
                            ))
                        })
                }
            })
            .await
            .map_err(PlanningError::Read)
    }

    /// A fresh read of a role's balancer.
    pub(crate) async fn members(&self, role: &RoleName) -> Result<Vec<Member>, PlanningError> {
        let lb = self
            .ports
            .balancers
            .for_role(role)
            .cloned()
            .ok_or_else(|| {
                PlanningError::Read(PortError::permanent(
                    "choosing a balancer",
                    format!("no balancer is configured for role {role}"),
                ))
            })?;
        self.read("reading balancer members", || lb.members()).await
    }

    /// A fresh read of every balancer Phoenix knows: what serves, anywhere.
    pub(crate) async fn all_members(&self) -> Result<Vec<Member>, PlanningError> {
        let mut all = Vec::new();
        for lb in self.ports.balancers.all() {
            all.extend(
                self.read("reading balancer members", || lb.members())
                    .await?,
            );
        }
        Ok(all)
    }

    /// Rolls a role back *now*, for an incident: whatever operation runs on
    /// the deployment (a refresh waiting on its replacement budget, a
    /// rolling replacement) is pre-empted at its next safe point, within a
    /// poll interval or a call's deadline, and the rollback is planned and
    /// applied under the same lease, so nothing starts in between. The
    /// target is the most recently live standby pool, or `release`'s. The
    /// invariants hold as for any rollback: the target serves at full
    /// capacity before what serves now leaves.
    pub async fn emergency_rollback(
        &self,
        deployment: &DeploymentId,
        role: &RoleName,
        release: Option<&ReleaseLabel>,
    ) -> Result<OperationReport, ExecError> {
        let policy = self.policy.clone();
        let operation = self.next_operation_id();
        let now = self.clock.clone();
        let balancer = self
            .ports
            .balancers
            .for_role(role)
            .map(|lb| lb.capabilities());
        let reason = format!(
            "emergency rollback of {role}{}",
            release.map(|r| format!(" to {r}")).unwrap_or_default()
        );
        self.executor
            .emergency(deployment, &reason, move |snap| {
                let input = PlanInput {
                    snap,
                    policy: &policy,
                    operation,
                    now: now.now(),
                    role: role.clone(),
                    balancer: balancer.clone(),
                };
                let mut plan = ops::rollback(&input, release)?;
                plan.summary = format!("emergency: {}", plan.summary);
                Ok(plan)
            })
            .await
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
}
