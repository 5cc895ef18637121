//! One seed of the simulation: the world, the orchestrators, the random
//! operation mix and the operator's hand actions. The referees live in
//! `referee.rs`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod referee;
mod setup;

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use phoenix_core::events::{Event, EventKind, Outcome};
use phoenix_core::executor::ExecError;
use phoenix_core::id::{DeploymentId, ReleaseLabel, RoleName};
use phoenix_core::ops::{PlanningError, ReconcileOptions};
use phoenix_core::plan::{OperationKind, Plan, Step};
use phoenix_core::policy::Policy;
use phoenix_core::ports::{LoadBalancer, StateStore, Target};
use phoenix_core::sim::{CrashOn, CrashPoint, Faults, SimCloud, SurgeWatch};
use phoenix_core::Phoenix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const CANARY: &str = "canary-sim-9c41-secret";

/// How long an emergency may take to start once asked, whatever runs.
pub const EMERGENCY_BOUND: Duration = Duration::from_secs(180);

#[derive(Debug, Clone)]
pub enum Op {
    Deploy(&'static str),
    Rolling(&'static str),
    Rollback(Option<&'static str>),
    Provision(&'static str),
    Reap,
    Refresh,
    Heal,
    Reconcile,
}

pub struct SeedResult {
    pub trace: String,
    pub faults: u64,
    pub violations: Vec<String>,
    pub ops: usize,
    pub tally: Tally,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub succeeded: usize,
    pub rolled_back: usize,
    pub failed: usize,
    pub preempted: usize,
    pub crashes: usize,
    pub emergencies: usize,
    pub interrupted: usize,
    pub reserved: usize,
    /// Atomic switches that finished.
    pub switches: usize,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.succeeded += o.succeeded;
        self.rolled_back += o.rolled_back;
        self.failed += o.failed;
        self.preempted += o.preempted;
        self.crashes += o.crashes;
        self.emergencies += o.emergencies;
        self.interrupted += o.interrupted;
        self.reserved += o.reserved;
        self.switches += o.switches;
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} succeeded, {} rolled back, {} failed and cleaned up, {} pre-empted by {} emergencies, {} crashes and {} store outages resumed, {} atomic switches",
            self.succeeded,
            self.rolled_back,
            self.failed,
            self.preempted,
            self.emergencies,
            self.crashes,
            self.interrupted,
            self.switches
        )
    }
}

pub fn r(s: &str) -> ReleaseLabel {
    ReleaseLabel::new(s).unwrap()
}

fn random_op(rng: &mut ChaCha8Rng) -> Op {
    let release = ["v1", "v2", "v3"][rng.random_range(0..3)];
    match rng.random_range(0..22) {
        0..=5 => Op::Deploy(release),
        6..=9 => Op::Rolling(release),
        10..=11 => Op::Rollback(if rng.random_bool(0.5) {
            Some(release)
        } else {
            None
        }),
        12 => Op::Provision(release),
        13 => Op::Deploy("v4"),
        14..=15 => Op::Reap,
        16..=17 => Op::Refresh,
        18..=19 => Op::Heal,
        _ => Op::Reconcile,
    }
}

/// One seed's world and what happened in it.
pub struct Sim {
    pub cloud: SimCloud,
    pub phoenix: Phoenix,
    pub shop: DeploymentId,
    pub web: RoleName,
    pub policy: Policy,
    pub hooks: bool,
    pub generation: u64,
    pub seed: u64,
    pub batch: usize,
    pub violations: Vec<String>,
    pub tally: Tally,
    pub ops: usize,
    /// An emergency failed on the store: its reservation may stand until
    /// it lapses.
    pub emergency_failed: bool,
}

impl Sim {
    /// An orchestrator named `name`, wired like every other.
    pub fn orchestrator(&self, name: &str) -> Phoenix {
        let mut b = self
            .cloud
            .phoenix_as(name)
            .watch_balancer(self.cloud.balancer_as("fip", name))
            .policy(self.policy.clone())
            .emergency_wait(Duration::from_secs(300))
            .id_seed(self.seed.wrapping_mul(31).wrapping_add(self.generation));
        if self.hooks {
            b = b.hooks(self.cloud.hooks());
        }
        b.build().unwrap()
    }

    fn successor(&mut self) {
        self.generation += 1;
        self.phoenix = self.orchestrator(&format!("orchestrator-{}", self.generation));
    }

    pub fn violation(&mut self, v: String) {
        if !self.violations.contains(&v) {
            self.violations.push(v);
        }
    }

    async fn plan(&self, op: &Op) -> Result<Plan, PlanningError> {
        let (p, d, w) = (&self.phoenix, &self.shop, &self.web);
        match op {
            Op::Deploy(v) => p.plan_deploy(d, w, &r(v)).await,
            Op::Rolling(v) => p.plan_rolling_replace(d, w, &r(v)).await,
            Op::Rollback(v) => p.plan_rollback(d, w, v.map(r).as_ref()).await,
            Op::Provision(v) => p.plan_provision(d, w, &r(v), None).await,
            Op::Reap => p.plan_reap(d, w).await,
            Op::Refresh => p.plan_refresh(d, w).await,
            Op::Heal => p.plan_heal(d, w).await,
            Op::Reconcile => p
                .plan_reconcile(
                    d,
                    w,
                    ReconcileOptions {
                        remove_orphans: true,
                        record_missing: true,
                        restore_members: true,
                    },
                )
                .await
                .map(|(_, plan)| plan),
        }
    }

    /// Resumes an interrupted operation with a new orchestrator, waiting
    /// out the dead one's lease and any store outage.
    async fn recover(&mut self) {
        self.successor();
        for _ in 0..200 {
            match self.phoenix.resume(&self.shop).await {
                Ok(_) | Err(ExecError::Failed { .. }) | Err(ExecError::Preempted { .. }) => return,
                Err(ExecError::Busy { .. }) => tokio::time::sleep(Duration::from_secs(20)).await,
                Err(ExecError::Interrupted { .. }) | Err(ExecError::Store(_)) => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    self.successor();
                }
                Err(e) => {
                    self.violation(format!("resume failed: {e}"));
                    return;
                }
            }
        }
        self.violation("an unfinished operation could never be resumed".into());
    }

    /// Surge watches for a plan about to run (rolling replacements and
    /// refreshes): the servers of the pools it replaces, old and new, never
    /// exceed desired plus `max_surge`.
    fn watch_surge(&self, plan: &Plan, snap: &phoenix_core::records::Snapshot) {
        let desired = snap.deployment().roles[&self.web].desired;
        let surge = plan.policy.rollout.max_surge;
        let journal = phoenix_core::records::key::operation(&plan.deployment, &plan.id);
        let mut watches = Vec::new();
        match plan.kind {
            OperationKind::RollingReplace => {
                let mut pools = BTreeSet::new();
                for step in &plan.steps {
                    if let Some(p) = step.pool() {
                        let live_or_new = snap
                            .pool(p)
                            .is_none_or(|p| p.state == phoenix_core::model::PoolState::Live);
                        if live_or_new {
                            pools.insert(p.clone());
                        }
                    }
                }
                watches.push(SurgeWatch {
                    pools,
                    limit: desired + surge,
                    what: format!("{} ({})", plan.kind, plan.id),
                    journal: Some(journal.clone()),
                });
            }
            OperationKind::Refresh => {
                let launched: BTreeSet<_> = plan
                    .steps
                    .iter()
                    .filter_map(|s| match s {
                        Step::Launch { pool, .. } => Some(pool.clone()),
                        _ => None,
                    })
                    .collect();
                for p in launched {
                    let size = snap.pool(&p).map_or(desired, |p| p.size);
                    watches.push(SurgeWatch {
                        what: format!("pool {p} in {}", plan.id),
                        pools: [p].into_iter().collect(),
                        limit: size + surge,
                        journal: Some(journal.clone()),
                    });
                }
            }
            _ => {}
        }
        self.cloud.watch_surge(watches);
    }

    /// Applies a plan and referees what it did; with `emergency`, an
    /// emergency rollback is issued by another orchestrator that long after
    /// the operation starts.
    async fn apply_checked(
        &mut self,
        plan: Plan,
        rng: &mut ChaCha8Rng,
        emergency: Option<Duration>,
    ) {
        let before = self.phoenix.snapshot(&self.shop).await.unwrap();
        let ctx = referee::Before::capture(self, &plan, &before);
        self.watch_surge(&plan, &before);
        let events_before = self.cloud.store().inner().events_len("deployments/shop");
        let crash = match (emergency, rng.random_range(0..10)) {
            (Some(_), _) => None,
            (None, 0 | 1) => Some(CrashPoint::at(
                rng.random_range(1..80),
                rng.random_bool(0.5),
            )),
            (None, 2) => Some(CrashPoint {
                commit: 1,
                after_write: rng.random_bool(0.5),
                on: CrashOn::Event(
                    ["step_failed", "rollback_started", "launch_requested"][rng.random_range(0..3)],
                ),
            }),
            // Right after a launch went out, before its answer is recorded.
            (None, 3) => Some(CrashPoint {
                commit: 1,
                after_write: false,
                on: CrashOn::After("launch_requested"),
            }),
            _ => None,
        };
        if let Some(point) = crash {
            self.cloud.store().arm(point);
        }
        let crashed = self.cloud.store().crashed();
        let incident = self.orchestrator(&format!("incident-{}", self.ops));
        let shop = self.shop.clone();
        let web = self.web.clone();
        let phoenix = &self.phoenix;
        let operation = async {
            tokio::time::timeout(Duration::from_secs(3 * 24 * 3600), async {
                tokio::select! {
                    biased;
                    _ = crashed.notified() => None,
                    r = phoenix.apply(plan) => Some(r),
                }
            })
            .await
        };
        let incident_run = async {
            let d = emergency?;
            tokio::time::sleep(d).await;
            let asked = tokio::time::Instant::now();
            let result = incident.emergency_rollback(&shop, &web, None).await;
            Some((asked, result))
        };
        let (bounded, incident_result) = tokio::join!(operation, incident_run);
        self.cloud.store().disarm();
        if let Some((_, result)) = &incident_result {
            self.tally.emergencies += 1;
            match result {
                Err(e @ (ExecError::Busy { .. } | ExecError::Reserved { .. })) => self.violation(
                    format!("invariant 11: an emergency rollback could not pre-empt: {e}"),
                ),
                Err(ExecError::Interrupted { .. }) | Err(ExecError::Store(_)) => {
                    self.emergency_failed = true;
                    self.recover().await
                }
                Ok(_) => {}
                // A failed emergency withdraws its reservation; a store
                // outage at that moment leaves it to lapse by itself.
                Err(ExecError::Failed { .. })
                | Err(ExecError::Planning(_))
                | Err(ExecError::Preempted { .. }) => {
                    let left = phoenix_core::ports::StateStore::get(
                        self.cloud.store().inner(),
                        &phoenix_core::records::key::preempt(&self.shop),
                    )
                    .await
                    .ok()
                    .flatten()
                    .is_some();
                    if left && self.cloud.store().in_outage() {
                        self.emergency_failed = true;
                    }
                }
                Err(e) => self.violation(format!("an emergency rollback failed to run: {e}")),
            }
        }
        let result = match bounded {
            Err(_) => {
                self.violation(format!(
                    "invariant 7: {} did not end within 3 days",
                    ctx.kind
                ));
                return;
            }
            Ok(None) => {
                self.tally.crashes += 1;
                self.recover().await;
                self.referee_after(&ctx, None, events_before).await;
                return;
            }
            Ok(Some(result)) => result,
        };
        self.ops += 1;
        let outcome = match &result {
            Ok(report) => Some(report.outcome),
            Err(ExecError::Failed { report, .. }) | Err(ExecError::Preempted { report }) => {
                Some(report.outcome)
            }
            Err(ExecError::Interrupted { .. }) | Err(ExecError::Store(_)) => {
                // A store outage outlasted the retries: the next
                // orchestrator resumes.
                self.tally.interrupted += 1;
                self.recover().await;
                None
            }
            Err(ExecError::Busy { .. }) | Err(ExecError::Reserved { .. })
                if incident_result.is_some() =>
            {
                None
            }
            // An earlier emergency failed on the store, perhaps after its
            // reservation landed: it holds others off until it lapses,
            // within minutes.
            Err(ExecError::Reserved { until, .. })
                if self.emergency_failed
                    && phoenix_core::time::elapsed_between(self.cloud.now(), *until)
                        <= Duration::from_secs(3600) =>
            {
                self.tally.reserved += 1;
                None
            }
            Err(e) => {
                self.violation(format!("{}: unexpected error: {e}", ctx.kind));
                return;
            }
        };
        match outcome {
            Some(Outcome::Succeeded) => self.tally.succeeded += 1,
            Some(Outcome::RolledBack) => self.tally.rolled_back += 1,
            Some(Outcome::Failed) => self.tally.failed += 1,
            Some(Outcome::Preempted) => self.tally.preempted += 1,
            None => {}
        }
        // What serves after an emergency is the emergency's doing: the
        // operation it pre-empted (or that ended first) is judged on the rest.
        let emergency_ran = incident_result.is_some();
        let judged = if emergency_ran { None } else { outcome };
        self.referee_after(&ctx, judged, events_before).await;
        if let Some((asked, result)) = incident_result {
            referee::emergency_latency(self, asked, events_before).await;
            if let Ok(report) = result {
                referee::emergency_served(self, &report).await;
            }
        }
    }

    /// The operator's hand: points the floating IP at a running server of
    /// the deployment, or takes it away.
    async fn operator(&mut self, rng: &mut ChaCha8Rng) {
        let fip = self.cloud.balancer_named("fip");
        if rng.random_bool(0.3) {
            // Someone drains a member for maintenance and forgets it.
            let members: Vec<_> = self
                .cloud
                .balancer()
                .members_now()
                .into_iter()
                .filter(|m| m.state == phoenix_core::ports::MemberState::Active)
                .filter(|m| {
                    self.cloud.truth().iter().any(|t| {
                        t.server.id == m.server
                            && t.server.labels.get("phoenix-deployment") == Some("shop")
                    })
                })
                .collect();
            if !members.is_empty() {
                let m = &members[rng.random_range(0..members.len())];
                let linger = Duration::from_secs(rng.random_range(3600..6 * 3600));
                self.cloud.balancer().sideline(&m.server, linger);
            }
            return;
        }
        if rng.random_bool(0.5) {
            let members: Vec<_> = fip.members_now().into_iter().map(|m| m.server).collect();
            let _ = fip.detach(&members, Duration::ZERO).await;
            return;
        }
        let candidates: Vec<_> = self
            .cloud
            .truth()
            .into_iter()
            .filter(|t| t.visible && t.alive)
            .filter(|t| t.server.labels.get("phoenix-deployment") == Some("shop"))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let t = &candidates[rng.random_range(0..candidates.len())];
        let Some(endpoint) = t.server.endpoint(8080) else {
            return;
        };
        let _ = fip
            .attach(&[Target {
                server: t.server.id.clone(),
                endpoint,
            }])
            .await;
    }

    async fn converge(&mut self) {
        self.cloud.set_faults(Faults::none());
        self.cloud.watch_surge(Vec::new());
        let fip = self.cloud.balancer_named("fip");
        let members: Vec<_> = fip.members_now().into_iter().map(|m| m.server).collect();
        let _ = fip.detach(&members, Duration::ZERO).await;
        tokio::time::sleep(Duration::from_secs(600)).await;
        let snap = self.phoenix.snapshot(&self.shop).await.unwrap();
        if snap.record.value.active_operation.is_some() {
            self.recover().await;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // Settle on what serves most (or v1 when nothing does): a
        // blue-green deploy of it finishes or reverts anything half-done.
        let snap = self.phoenix.snapshot(&self.shop).await.unwrap();
        let settle: &'static str = snap
            .live_pools(&self.web)
            .max_by_key(|p| p.attached().count())
            .map(|p| match p.release.as_str() {
                "v2" => "v2",
                "v3" => "v3",
                _ => "v1",
            })
            .unwrap_or("v1");
        // A server whose death was drawn before the faults stopped may die
        // during that deploy, which then fails and reverts (as it should):
        // like any reconcile loop, heal and try again, a bounded number of
        // times.
        for _ in 0..3 {
            if let Ok(plan) = self.plan(&Op::Heal).await {
                self.apply_checked(plan, &mut rng, None).await;
            }
            let Ok(plan) = self.plan(&Op::Deploy(settle)).await else {
                break;
            };
            let (failed, rolled_back) = (self.tally.failed, self.tally.rolled_back);
            self.apply_checked(plan, &mut rng, None).await;
            if (self.tally.failed, self.tally.rolled_back) == (failed, rolled_back) {
                break;
            }
        }
        for op in [Op::Heal, Op::Reconcile, Op::Reap, Op::Heal] {
            match self.plan(&op).await {
                Ok(plan) => self.apply_checked(plan, &mut rng, None).await,
                // See referee::converged: a deployment never live has
                // nothing to heal (a known gap).
                Err(PlanningError::NothingLive(_)) if !referee::ever_live(self).await => {}
                Err(e) => self.violation(format!("convergence: planning {op:?} failed: {e}")),
            }
        }
        referee::converged(self).await;
    }

    async fn referee_after(
        &mut self,
        ctx: &referee::Before,
        outcome: Option<Outcome>,
        events_before: usize,
    ) {
        referee::after_operation(self, ctx, outcome, events_before).await;
    }
}

pub async fn run_seed(seed: u64) -> SeedResult {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sim = setup::world(seed, &mut rng).await;
    let n = rng.random_range(3..=7);
    for _ in 0..n {
        let mut op = random_op(&mut rng);
        if rng.random_bool(0.1) {
            // A release that fails its smoke test.
            let mut f = sim.cloud.faults();
            f.bad_releases.insert(r("v3"));
            sim.cloud.set_faults(f);
            op = Op::Deploy("v3");
        }
        let emergency = rng
            .random_bool(0.15)
            .then(|| Duration::from_secs(rng.random_range(1..3 * 3600)));
        match sim.plan(&op).await {
            Ok(plan) => {
                if let Err(e) = plan.validate() {
                    sim.violation(format!("invariant 3: {e}"));
                }
                referee::plan_made(&mut sim, &op, &plan).await;
                sim.apply_checked(plan, &mut rng, emergency).await;
            }
            Err(PlanningError::Unfinished(_)) => sim.recover().await,
            Err(_) => {}
        }
        if rng.random_bool(0.3) {
            sim.operator(&mut rng).await;
        }
        for v in sim.cloud.violations() {
            sim.violation(v);
        }
        let idle = Duration::from_secs(rng.random_range(0..3 * 3600));
        tokio::time::sleep(idle).await;
    }
    sim.converge().await;
    for v in sim.cloud.violations() {
        sim.violation(v);
    }
    referee::history(&mut sim).await;

    let store = sim.cloud.store().inner().clone();
    let history = store
        .events("deployments/shop", 0, usize::MAX)
        .await
        .unwrap();
    let mut trace = String::new();
    for e in &history {
        trace.push_str(&String::from_utf8_lossy(&e.payload));
        trace.push('\n');
    }
    trace.push_str(&format!("{:?}\n", sim.cloud.stats()));
    SeedResult {
        trace,
        faults: sim.cloud.stats().faults_injected,
        violations: sim.violations,
        ops: sim.ops,
        tally: sim.tally,
    }
}

/// The events of the deployment from `after` on.
pub async fn events_since(cloud: &SimCloud, after: usize) -> Vec<Event> {
    cloud
        .store()
        .inner()
        .events("deployments/shop", after as u64, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::from_slice(&e.payload).unwrap())
        .collect()
}

/// True for events of an emergency operation.
pub fn is_emergency_start(e: &Event) -> bool {
    matches!(&e.kind, EventKind::OperationStarted { summary, .. } if summary.starts_with("emergency:"))
}
