//! A deterministic simulated cloud for Phoenix's tests and for users'
//! tests: compute and images with configurable boot times, a balancer that
//! tracks members, health and serving capacity over time, a probe, a boot
//! configuration with per-environment secrets, and an in-memory store that
//! can simulate the orchestrator crashing at any commit.
//!
//! Everything is driven by a seed and by tokio's clock: run it under a
//! paused clock (`#[tokio::test(start_paused = true)]`) and a thousand
//! servers with five-minute boots simulate in milliseconds. Faults are
//! injected with configurable probabilities; the world records violations
//! of the safety invariants it can see (a serving server stopped or
//! terminated, a detach below the capacity floor).
//!
//! ```
//! use phoenix_core::sim::{Faults, SimCloud, SimConfig};
//!
//! let cloud = SimCloud::new(SimConfig {
//!     seed: 7,
//!     faults: Faults { stuck_in_build: 0.05, throttle: 0.02, ..Faults::none() },
//!     ..SimConfig::default()
//! });
//! let phoenix = cloud.phoenix().build().unwrap();
//! # let _ = phoenix;
//! ```

mod balancer;
mod boot;
mod compute;
mod config;
mod crash;
mod fleet;
mod hooks;
mod images;
mod probe;
mod standby;
mod traffic;
mod world;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use balancer::SimBalancer;
pub use boot::SimBootConfig;
pub use compute::SimCompute;
pub use config::{Faults, SimConfig, SimStats};
pub use crash::{CrashOn, CrashPoint, CrashSwitch, CrashingStore};
pub use hooks::SimHooks;
pub use images::SimImages;
pub use probe::SimProbe;
pub use traffic::{ReleaseTraffic, SimTraffic};
pub use world::SurgeWatch;

use crate::id::{DeploymentId, EnvironmentName, ImageId, ReleaseLabel, RoleName};
use crate::memory_store::MemoryStore;
use crate::model::{Deployment, Environment, Image, ImageState, Role, Server, TestEvidence};
use crate::policy::Policy;
use crate::ports::Member;
use crate::time::{Clock, TokioClock};
use crate::{Phoenix, PhoenixBuilder};

use compute::lock;
use world::World;

/// A simulated cloud: one world shared by its ports.
#[derive(Debug, Clone)]
pub struct SimCloud {
    world: Arc<Mutex<World>>,
    store: CrashingStore,
    clock: Arc<TokioClock>,
    boot: SimBootConfig,
}

/// The ground truth about one server, for referees.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTruth {
    /// The server as a describe would show it (visible or not).
    pub server: Server,
    /// Whether the provider lists it yet.
    pub visible: bool,
    /// Whether the provider misled Phoenix about it (invisible beyond the
    /// declared window, or a termination answered but not done).
    pub misreported: bool,
    /// When it really came to be (whatever its reported launch time).
    pub created_at: crate::time::Timestamp,
    /// Whether its application answers now.
    pub alive: bool,
}

impl SimCloud {
    /// A new world. Call it inside a tokio runtime (its clock starts now).
    pub fn new(config: SimConfig) -> Self {
        let clock = Arc::new(TokioClock::fixed());
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let seed = config.seed;
        let (blip, outage) = (config.faults.store_blip, config.faults.store_outage);
        let mut world = World::new(config, rng);
        world.clock = (*clock).clone();
        let store = CrashingStore::over(MemoryStore::new(clock.clone()), seed);
        store.set_outages(blip, outage);
        Self {
            world: Arc::new(Mutex::new(world)),
            store,
            clock,
            boot: SimBootConfig::default(),
        }
    }

    /// Uses this boot configuration (for example with a canary secret).
    pub fn with_boot(mut self, boot: SimBootConfig) -> Self {
        self.boot = boot;
        self
    }

    /// Referees strictly from now on: every change to servers or balancers
    /// must come from an orchestrator holding its lease (ports made by
    /// [`Self::phoenix_as`] say who calls), every stop, terminate and
    /// detach must follow a fresh read of the balancers it depends on, and
    /// production launches need test evidence for the image's digest.
    pub fn strict(&self) {
        lock(&self.world).strict = Some(self.store.inner().clone());
    }

    /// The compute port.
    pub fn compute(&self) -> Arc<SimCompute> {
        self.compute_for(None)
    }

    fn compute_for(&self, holder: Option<&str>) -> Arc<SimCompute> {
        Arc::new(SimCompute {
            world: self.world.clone(),
            holder: holder.map(str::to_owned),
        })
    }

    /// The image port.
    pub fn images(&self) -> Arc<SimImages> {
        Arc::new(SimImages {
            world: self.world.clone(),
        })
    }

    /// A balancer by name (created on first use).
    pub fn balancer_named(&self, name: &str) -> Arc<SimBalancer> {
        self.balancer_for(name, None)
    }

    fn balancer_for(&self, name: &str, holder: Option<&str>) -> Arc<SimBalancer> {
        lock(&self.world)
            .balancers
            .entry(name.to_owned())
            .or_default();
        Arc::new(SimBalancer {
            world: self.world.clone(),
            name: name.to_owned(),
            holder: holder.map(str::to_owned),
        })
    }

    /// The default balancer.
    pub fn balancer(&self) -> Arc<SimBalancer> {
        self.balancer_named("default")
    }

    /// The probe.
    pub fn probe(&self) -> Arc<SimProbe> {
        Arc::new(SimProbe {
            world: self.world.clone(),
        })
    }

    /// Drain and warm-up hooks that take time (up to
    /// [`SimConfig::hook_time`]).
    pub fn hooks(&self) -> Arc<SimHooks> {
        Arc::new(SimHooks {
            world: self.world.clone(),
        })
    }

    /// The store (with crash injection).
    pub fn store(&self) -> &CrashingStore {
        &self.store
    }

    /// The clock every port uses.
    pub fn clock(&self) -> Arc<TokioClock> {
        self.clock.clone()
    }

    /// A policy suited to the simulation: the defaults, with seeded jitter.
    pub fn policy(&self) -> Policy {
        let mut p = Policy::default();
        p.retry.jitter_seed = Some(lock(&self.world).config.seed);
        p.provision.concurrency = 64;
        p
    }

    /// A builder wired to every simulated port, the crashing store, the
    /// simulation's clock and policy, and seeded ids.
    pub fn phoenix(&self) -> PhoenixBuilder {
        self.phoenix_as("sim-orchestrator")
    }

    /// [`Self::phoenix`] for the orchestrator `holder`: its compute and
    /// balancer ports tell the strict referee who calls.
    pub fn phoenix_as(&self, holder: &str) -> PhoenixBuilder {
        let seed = lock(&self.world).config.seed;
        Phoenix::builder()
            .compute(self.compute_for(Some(holder)))
            .images(self.images())
            .balancer(self.balancer_for("default", Some(holder)))
            .boot_config(Arc::new(self.boot.clone()))
            .probe(self.probe())
            .store(Arc::new(self.store.clone()))
            .clock(self.clock.clone())
            .policy(self.policy())
            .holder(holder)
            .id_seed(seed)
    }

    /// [`Self::phoenix_as`] with one balancer per role, named after it (as
    /// a fleet whose roles serve different ports has): the default balancer
    /// serves any other role.
    pub fn phoenix_with_roles(&self, holder: &str, roles: &[&str]) -> PhoenixBuilder {
        let mut b = self.phoenix_as(holder);
        for role in roles {
            if let Ok(name) = RoleName::new(*role) {
                b = b.balancer_for(name, self.balancer_for(role, Some(holder)));
            }
        }
        b
    }

    /// A balancer by name whose calls are attributed to `holder`.
    pub fn balancer_as(&self, name: &str, holder: &str) -> Arc<SimBalancer> {
        self.balancer_for(name, Some(holder))
    }

    /// Replaces the faults from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.store
            .set_outages(faults.store_blip, faults.store_outage);
        lock(&self.world).faults = faults;
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        lock(&self.world).faults.clone()
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        lock(&self.world).stats.clone()
    }

    /// Resets the counters.
    pub fn reset_stats(&self) {
        lock(&self.world).stats = SimStats::default();
    }

    /// Invariant violations the world saw.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.world).violations.clone()
    }

    /// Records a violation found by a referee outside the world.
    pub fn report_violation(&self, violation: String) {
        let mut w = lock(&self.world);
        if !w.violations.contains(&violation) {
            w.violations.push(violation);
        }
    }

    /// Watches that these pools never run more servers than the limit at
    /// once (replacing the watches in force).
    pub fn watch_surge(&self, watches: Vec<SurgeWatch>) {
        lock(&self.world).surge = watches;
    }

    /// Ground truth: every server that exists now and is visible.
    pub fn servers(&self) -> Vec<Server> {
        let now = tokio::time::Instant::now();
        let w = lock(&self.world);
        w.servers
            .values()
            .filter(|s| now >= s.visible_at)
            .filter_map(|s| s.to_server(now))
            .collect()
    }

    /// Ground truth about every server that exists, visible or not.
    pub fn truth(&self) -> Vec<ServerTruth> {
        let now = tokio::time::Instant::now();
        let w = lock(&self.world);
        w.servers
            .values()
            .filter_map(|s| {
                Some(ServerTruth {
                    server: s.to_server(now)?,
                    visible: now >= s.visible_at,
                    misreported: s.misreported,
                    created_at: s.created_at,
                    alive: s.alive(now, &w.faults.unhealthy_releases),
                })
            })
            .collect()
    }

    /// Ground truth: the default balancer's members now (true ids).
    pub fn members(&self) -> Vec<Member> {
        self.members_of("default")
    }

    /// Ground truth: a balancer's members now (true ids).
    pub fn members_of(&self, balancer: &str) -> Vec<Member> {
        let w = lock(&self.world);
        w.true_members_at(balancer, tokio::time::Instant::now())
    }

    /// Kills a server's application now (the cloud still says ACTIVE).
    pub fn kill(&self, server: &crate::id::ServerId) {
        let now = tokio::time::Instant::now();
        let mut w = lock(&self.world);
        if let Some(s) = w.servers.get_mut(server) {
            s.death = Some((now, world::Death::App));
        }
    }

    /// A hand stops every balancer's checks of the server now (HAProxy's
    /// `disable health`): from then on they report the health found last,
    /// and say how long ago that was.
    pub fn stop_checks(&self, server: &crate::id::ServerId) {
        let now = tokio::time::Instant::now();
        let mut w = lock(&self.world);
        for b in w.balancers.values_mut() {
            if let Some(m) = b.members.get_mut(server) {
                m.checks_stopped = Some(now);
            }
        }
    }

    /// The server's host fails now: the cloud reports it in ERROR.
    pub fn fail_host(&self, server: &crate::id::ServerId) {
        let now = tokio::time::Instant::now();
        let mut w = lock(&self.world);
        if let Some(s) = w.servers.get_mut(server) {
            s.death = Some((now, world::Death::Host));
        }
    }

    /// The cloud takes a server back now (spot reclaim, an operator's
    /// delete): it vanishes from every answer; a balancer keeps its member.
    pub fn reclaim(&self, server: &crate::id::ServerId) {
        let now = tokio::time::Instant::now();
        let mut w = lock(&self.world);
        if let Some(s) = w.servers.get_mut(server) {
            s.death = Some((now, world::Death::Reclaimed));
        }
    }

    fn add_image(&self, name: &str, version: &str, state: ImageState, proven: bool) -> Image {
        let mut w = lock(&self.world);
        let id = ImageId::from_valid(format!("img-{:04}", w.next_image));
        w.next_image += 1;
        let now = w.timestamp();
        let digest = crate::fingerprint_of(&format!("{name}:{version}"));
        let mut properties = BTreeMap::new();
        properties.insert("phoenix-image-state".to_owned(), state.to_string());
        let image = Image {
            id: id.clone(),
            name: name.to_owned(),
            version: version.to_owned(),
            base: Some("debian-12".into()),
            digest: Some(digest.clone()),
            state,
            created_at: now,
            evidence: if proven {
                vec![TestEvidence {
                    suite: "image-smoke".into(),
                    at: now,
                    passed: true,
                    details: "sim".into(),
                    digest: Some(digest),
                    log: None,
                }]
            } else {
                Vec::new()
            },
            properties,
        };
        w.images.insert(id, image.clone());
        image
    }

    /// Adds a certified image directly (as a bake pipeline would), with
    /// passing evidence for its digest.
    pub fn certified_image(&self, name: &str, version: &str) -> Image {
        self.add_image(name, version, ImageState::Certified, true)
    }

    /// Adds an image whose provider metadata claims it is certified
    /// although no test ever ran on it (a property set by hand or by a
    /// careless pipeline).
    pub fn claimed_certified_image(&self, name: &str, version: &str) -> Image {
        self.add_image(name, version, ImageState::Certified, false)
    }

    /// Registers deployment `shop` in production with role `web` of
    /// `size` servers on port 8080, and releases `v1`, `v2` and `v3`, each
    /// with its own certified image. The balancer watches the policy's
    /// capacity floor for shop's web members.
    pub async fn demo_deployment(
        &self,
        phoenix: &Phoenix,
        size: usize,
    ) -> Result<(DeploymentId, RoleName), DemoError> {
        let shop = DeploymentId::from_valid("shop".into());
        let web = RoleName::from_valid("web".into());
        let deployment = Deployment::new(
            shop.clone(),
            Environment {
                name: EnvironmentName::from_valid("prod".into()),
                production: true,
                production_like: false,
            },
        )
        .with_role(Role {
            name: web.clone(),
            desired: size,
            flavor: Some("general1-2".into()),
            port: 8080,
        });
        phoenix.register(&deployment).await?;
        for v in ["v1", "v2", "v3"] {
            let image = self.certified_image("web", v);
            phoenix.register_image(&image).await?;
            let mut images = BTreeMap::new();
            images.insert(web.clone(), image.id.clone());
            phoenix
                .create_release(&shop, ReleaseLabel::from_valid(v.into()), images)
                .await?;
        }
        self.balancer().watch_floor_of(
            phoenix.policy().rollout.min_healthy.resolve(size),
            Some("shop"),
            Some("web"),
        );
        Ok((shop, web))
    }

    /// Now, by the simulation's clock.
    pub fn now(&self) -> crate::time::Timestamp {
        self.clock.now()
    }
}

/// Why the demo deployment could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Records.
    #[error(transparent)]
    Records(#[from] crate::records::RecordError),
    /// Images or releases.
    #[error(transparent)]
    Catalog(#[from] crate::phoenix::CatalogError),
    /// A name was refused.
    #[error(transparent)]
    Id(#[from] crate::id::InvalidId),
    /// Planning the first deploy failed.
    #[error(transparent)]
    Planning(#[from] crate::ops::PlanningError),
    /// The first deploy failed.
    #[error(transparent)]
    Exec(#[from] Box<crate::executor::ExecError>),
}

impl From<crate::executor::ExecError> for DemoError {
    fn from(e: crate::executor::ExecError) -> Self {
        Self::Exec(Box::new(e))
    }
}
