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
mod crash;
mod images;
mod probe;
mod world;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use balancer::SimBalancer;
pub use boot::SimBootConfig;
pub use compute::SimCompute;
pub use crash::{CrashPoint, CrashSwitch, CrashingStore};
pub use images::SimImages;
pub use probe::SimProbe;

use crate::id::{DeploymentId, EnvironmentName, ImageId, ReleaseLabel, RoleName};
use crate::memory_store::MemoryStore;
use crate::model::{Deployment, Environment, Image, ImageState, Role, Server, TestEvidence};
use crate::policy::Policy;
use crate::ports::{BootFormat, Member};
use crate::time::{Clock, TokioClock};
use crate::{Phoenix, PhoenixBuilder};

use compute::lock;
use world::World;

/// Injected faults; each is a probability per call or per server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// A launch request is refused (quota).
    pub launch_failure: f64,
    /// A server never leaves BUILD.
    pub stuck_in_build: f64,
    /// A server boots into ERROR.
    pub boot_error: f64,
    /// A call is throttled with a Retry-After.
    pub throttle: f64,
    /// A call answers 5xx.
    pub server_error: f64,
    /// A launch creates its servers but the answer is lost.
    pub lost_response: f64,
    /// A new server is invisible for a while (eventual consistency).
    pub not_found_after_launch: f64,
    /// A balancer call fails.
    pub lb_failure: f64,
    /// Every balancer call takes this long.
    pub lb_slow: Duration,
    /// A server dies some time after it boots.
    pub member_death: f64,
    /// Releases whose smoke test fails.
    pub bad_releases: BTreeSet<ReleaseLabel>,
    /// Releases whose servers never pass health checks.
    pub unhealthy_releases: BTreeSet<ReleaseLabel>,
    /// Releases whose smoke test fails once this many of their servers
    /// passed it: a defect that shows only under part of the fleet.
    pub smoke_fails_after: BTreeMap<ReleaseLabel, u64>,
}

impl Faults {
    /// No faults at all.
    pub fn none() -> Self {
        Self::default()
    }
}

/// The simulated cloud's behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Boot time, uniform between the two.
    pub boot_time: (Duration, Duration),
    /// Time from a live server's attach until the balancer calls it healthy.
    pub health_delay: Duration,
    /// Time from a server's death until the balancer calls it unhealthy.
    pub fall_delay: Duration,
    /// Time open connections take to finish once a member drains.
    pub drain_time: Duration,
    /// Latency of every API call.
    pub api_latency: Duration,
    /// How long new servers may be invisible (declared to Phoenix).
    pub consistency_window: Duration,
    /// Dying servers die within this long after booting.
    pub death_horizon: Duration,
    /// Launch requests per call.
    pub max_launch_batch: usize,
    /// Ids per describe call.
    pub max_describe_batch: usize,
    /// Whether servers can be stopped and started.
    pub stop_start: bool,
    /// Whether the provider deduplicates launches by token.
    pub idempotent_launch: bool,
    /// The boot format it takes.
    pub boot_format: BootFormat,
    /// Faults.
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            boot_time: (Duration::from_secs(240), Duration::from_secs(300)),
            health_delay: Duration::from_secs(10),
            fall_delay: Duration::from_secs(10),
            drain_time: Duration::from_secs(5),
            api_latency: Duration::ZERO,
            consistency_window: Duration::from_secs(30),
            death_horizon: Duration::from_secs(3600),
            max_launch_batch: 100,
            max_describe_batch: 1000,
            stop_start: true,
            idempotent_launch: false,
            boot_format: BootFormat::Local,
            faults: Faults::none(),
        }
    }
}

/// Call counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Launch calls.
    pub launch_calls: u64,
    /// Servers created.
    pub servers_launched: u64,
    /// Describe calls.
    pub describe_calls: u64,
    /// Describe calls per moment (ms since start): one entry per polling
    /// round.
    pub describe_rounds: BTreeMap<u64, u64>,
    /// List calls.
    pub list_calls: u64,
    /// Terminate calls.
    pub terminate_calls: u64,
    /// Stop calls.
    pub stop_calls: u64,
    /// Start calls.
    pub start_calls: u64,
    /// Balancer calls.
    pub lb_calls: u64,
    /// Probe calls.
    pub probe_calls: u64,
    /// Faults injected.
    pub faults_injected: u64,
}

impl SimStats {
    /// The most describe calls in one polling round, and the mean.
    pub fn describe_per_round(&self) -> (u64, f64) {
        let max = self.describe_rounds.values().copied().max().unwrap_or(0);
        let n = self.describe_rounds.len().max(1) as f64;
        (max, self.describe_calls as f64 / n)
    }
}

/// A simulated cloud: one world shared by its ports.
#[derive(Debug, Clone)]
pub struct SimCloud {
    world: Arc<Mutex<World>>,
    store: CrashingStore,
    clock: Arc<TokioClock>,
    boot: SimBootConfig,
}

impl SimCloud {
    /// A new world. Call it inside a tokio runtime (its clock starts now).
    pub fn new(config: SimConfig) -> Self {
        let clock = Arc::new(TokioClock::fixed());
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut world = World::new(config, rng);
        world.clock = (*clock).clone();
        let store = CrashingStore::over(MemoryStore::new(clock.clone()));
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

    /// The compute port.
    pub fn compute(&self) -> Arc<SimCompute> {
        Arc::new(SimCompute {
            world: self.world.clone(),
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
        lock(&self.world)
            .balancers
            .entry(name.to_owned())
            .or_default();
        Arc::new(SimBalancer {
            world: self.world.clone(),
            name: name.to_owned(),
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
        let seed = lock(&self.world).config.seed;
        Phoenix::builder()
            .compute(self.compute())
            .images(self.images())
            .balancer(self.balancer())
            .boot_config(Arc::new(self.boot.clone()))
            .probe(self.probe())
            .store(Arc::new(self.store.clone()))
            .clock(self.clock.clone())
            .policy(self.policy())
            .holder("sim-orchestrator")
            .id_seed(seed)
    }

    /// Replaces the faults from now on.
    pub fn set_faults(&self, faults: Faults) {
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

    /// Ground truth: every server that exists now.
    pub fn servers(&self) -> Vec<Server> {
        let now = tokio::time::Instant::now();
        let w = lock(&self.world);
        w.servers
            .values()
            .filter_map(|s| s.to_server(now))
            .collect()
    }

    /// Ground truth: the default balancer's members now.
    pub fn members(&self) -> Vec<Member> {
        let w = lock(&self.world);
        w.members_at("default", tokio::time::Instant::now())
    }

    /// Kills a server's application now (the cloud still says ACTIVE).
    pub fn kill(&self, server: &crate::id::ServerId) {
        let now = tokio::time::Instant::now();
        let mut w = lock(&self.world);
        if let Some(s) = w.servers.get_mut(server) {
            s.death = Some((now, world::Death::App));
        }
    }

    /// Adds a certified image directly (as a bake pipeline would).
    pub fn certified_image(&self, name: &str, version: &str) -> Image {
        let mut w = lock(&self.world);
        let id = ImageId::from_valid(format!("img-{:04}", w.next_image));
        w.next_image += 1;
        let now = w.timestamp();
        let image = Image {
            id: id.clone(),
            name: name.to_owned(),
            version: version.to_owned(),
            base: Some("debian-12".into()),
            digest: Some(crate::fingerprint_of(&format!("{name}:{version}"))),
            state: ImageState::Certified,
            created_at: now,
            evidence: vec![TestEvidence {
                suite: "image-smoke".into(),
                at: now,
                passed: true,
                details: "sim".into(),
            }],
            properties: BTreeMap::new(),
        };
        w.images.insert(id, image.clone());
        image
    }

    /// Registers deployment `shop` in production with role `web` of
    /// `size` servers on port 8080, and releases `v1`, `v2` and `v3`, each
    /// with its own certified image. The balancer watches the policy's
    /// capacity floor.
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
        self.balancer()
            .watch_floor(phoenix.policy().rollout.min_healthy.resolve(size));
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
}
