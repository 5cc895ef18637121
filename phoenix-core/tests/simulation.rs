//! Randomised simulation: for each seed, a random sequence of operations
//! under a random fault schedule (including orchestrator crashes at random
//! commits), with every invariant checked after every operation and
//! convergence checked once faults stop. Each seed runs twice and the two
//! event traces must be identical (determinism).
//!
//! `PHOENIX_SIM_SEEDS=N` runs N seeds (default 1000); `PHOENIX_SIM_SEED=S`
//! replays one seed with its trace printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use phoenix_core::events::{Event, EventKind, Outcome};
use phoenix_core::executor::ExecError;
use phoenix_core::id::{DeploymentId, ReleaseLabel, RoleName};
use phoenix_core::model::PoolState;
use phoenix_core::ops::{PlanningError, ReconcileOptions};
use phoenix_core::plan::{OperationKind, Plan};
use phoenix_core::policy::Capacity;
use phoenix_core::ports::{MemberState, StateStore};
use phoenix_core::sim::{CrashPoint, Faults, SimBootConfig, SimCloud, SimConfig};
use phoenix_core::Phoenix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CANARY: &str = "canary-sim-9c41-secret";

#[derive(Debug, Clone)]
enum Op {
    Deploy(&'static str),
    Rolling(&'static str),
    Rollback(Option<&'static str>),
    Reap,
    Refresh,
    Heal,
    Reconcile,
}

struct Seed {
    trace: String,
    faults: u64,
    violations: Vec<String>,
    ops: usize,
    tally: Tally,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    succeeded: usize,
    rolled_back: usize,
    failed: usize,
    crashes: usize,
}

fn r(s: &str) -> ReleaseLabel {
    ReleaseLabel::new(s).unwrap()
}

fn random_faults(rng: &mut ChaCha8Rng) -> Faults {
    let mut p = |max: f64| {
        if rng.random_bool(0.5) {
            rng.random_range(0.0..max)
        } else {
            0.0
        }
    };
    Faults {
        launch_failure: p(0.1),
        stuck_in_build: p(0.1),
        boot_error: p(0.1),
        throttle: p(0.1),
        server_error: p(0.1),
        lost_response: p(0.2),
        not_found_after_launch: p(0.3),
        lb_failure: p(0.05),
        lb_slow: Duration::ZERO,
        member_death: p(0.15),
        bad_releases: BTreeSet::new(),
        unhealthy_releases: BTreeSet::new(),
        smoke_fails_after: Default::default(),
    }
}

fn random_op(rng: &mut ChaCha8Rng) -> Op {
    let release = ["v1", "v2", "v3"][rng.random_range(0..3)];
    match rng.random_range(0..10) {
        0..=2 => Op::Deploy(release),
        3 | 4 => Op::Rolling(release),
        5 => Op::Rollback(if rng.random_bool(0.5) {
            Some(release)
        } else {
            None
        }),
        6 => Op::Reap,
        7 => Op::Refresh,
        8 => Op::Heal,
        _ => Op::Reconcile,
    }
}

struct Run {
    cloud: SimCloud,
    phoenix: Phoenix,
    shop: DeploymentId,
    web: RoleName,
    generation: u64,
    seed: u64,
    batch: usize,
    violations: Vec<String>,
    tally: Tally,
    ops: usize,
}

impl Run {
    fn successor(&mut self) {
        self.generation += 1;
        self.phoenix = self
            .cloud
            .phoenix()
            .policy(self.phoenix.policy().clone())
            .holder(format!("orchestrator-{}", self.generation))
            .id_seed(self.seed.wrapping_mul(31).wrapping_add(self.generation))
            .build()
            .unwrap();
    }

    async fn plan(&self, op: &Op) -> Result<Plan, PlanningError> {
        let (p, d, w) = (&self.phoenix, &self.shop, &self.web);
        match op {
            Op::Deploy(v) => p.plan_deploy(d, w, &r(v)).await,
            Op::Rolling(v) => p.plan_rolling_replace(d, w, &r(v)).await,
            Op::Rollback(v) => p.plan_rollback(d, w, v.map(r).as_ref()).await,
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
    /// out the dead one's lease.
    async fn recover(&mut self) {
        self.successor();
        for _ in 0..100 {
            match self.phoenix.resume(&self.shop).await {
                Ok(_) | Err(ExecError::Failed { .. }) => return,
                Err(ExecError::Busy { .. }) => tokio::time::sleep(Duration::from_secs(20)).await,
                Err(ExecError::Interrupted { .. }) => self.successor(),
                Err(e) => {
                    self.violations.push(format!("resume failed: {e}"));
                    return;
                }
            }
        }
        self.violations.push("a lease never lapsed".into());
    }

    fn serving_releases(&self, snap: &phoenix_core::records::Snapshot) -> BTreeSet<String> {
        self.cloud
            .members()
            .iter()
            .filter(|m| m.state == MemberState::Active)
            .map(|m| {
                snap.owner_of(&m.server)
                    .map_or("unknown".into(), |(p, _)| p.release.to_string())
            })
            .collect()
    }

    async fn apply_checked(&mut self, plan: Plan, rng: &mut ChaCha8Rng) {
        let kind = plan.kind;
        let target = plan.target_release.clone();
        let restore = plan.restore.clone();
        let steps = plan.steps.len();
        let snap_before = self.phoenix.snapshot(&self.shop).await.unwrap();
        let standby_before = snap_before
            .pools_of(&self.web)
            .filter(|p| p.state.is_rollback_candidate())
            .count();
        let restore_release = restore
            .as_ref()
            .and_then(|id| snap_before.pool(id))
            .map(|p| p.release.to_string());
        let crash = rng.random_bool(0.2).then(|| CrashPoint {
            commit: rng.random_range(1..80),
            after_write: rng.random_bool(0.5),
        });
        if let Some(point) = crash {
            self.cloud.store().arm(point);
        }
        let crashed = self.cloud.store().crashed();
        let bounded = tokio::time::timeout(Duration::from_secs(3 * 24 * 3600), async {
            tokio::select! {
                biased;
                _ = crashed.notified() => None,
                r = self.phoenix.apply(plan) => Some(r),
            }
        })
        .await;
        self.cloud.store().disarm();
        let result = match bounded {
            Err(_) => {
                self.violations
                    .push(format!("invariant 7: {kind} did not end within 3 days"));
                return;
            }
            Ok(None) => {
                self.tally.crashes += 1;
                self.recover().await;
                return;
            }
            Ok(Some(result)) => result,
        };
        self.ops += 1;
        let outcome = match &result {
            Ok(report) => report.outcome,
            Err(ExecError::Failed { report }) => report.outcome,
            Err(e) => {
                self.violations
                    .push(format!("{kind}: unexpected error: {e}"));
                return;
            }
        };
        match outcome {
            Outcome::Succeeded => self.tally.succeeded += 1,
            Outcome::RolledBack => self.tally.rolled_back += 1,
            Outcome::Failed => self.tally.failed += 1,
        }
        let snap = self.phoenix.snapshot(&self.shop).await.unwrap();
        let serving = self.serving_releases(&snap);
        match outcome {
            Outcome::Succeeded if steps > 0 => {
                if let (Some(t), true) = (
                    &target,
                    matches!(
                        kind,
                        OperationKind::Deploy
                            | OperationKind::RollingReplace
                            | OperationKind::Rollback
                    ),
                ) {
                    let want: BTreeSet<String> = [t.to_string()].into_iter().collect();
                    if serving != want {
                        self.violations.push(format!(
                            "invariant 8: {kind} to {t} succeeded but {serving:?} serve"
                        ));
                    }
                }
                if kind == OperationKind::Reap {
                    let after = snap
                        .pools_of(&self.web)
                        .filter(|p| p.state.is_rollback_candidate())
                        .count();
                    let keep = self.phoenix.policy().retention.keep;
                    if after < keep.min(standby_before) {
                        self.violations.push(format!(
                            "invariant 9: reap left {after} rollback pools of {standby_before} (keep {keep})"
                        ));
                    }
                }
            }
            Outcome::RolledBack => {
                if let Some(rr) = &restore_release {
                    let want: BTreeSet<String> = [rr.clone()].into_iter().collect();
                    if serving != want {
                        self.violations.push(format!(
                            "invariant 4: {kind} rolled back to {rr} but {serving:?} serve"
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    fn check_world(&mut self) {
        for v in self.cloud.violations() {
            if !self.violations.contains(&v) {
                self.violations.push(v);
            }
        }
    }

    async fn converge(&mut self) {
        self.cloud.set_faults(Faults::none());
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
        for op in [Op::Heal, Op::Deploy(settle)] {
            if let Ok(plan) = self.plan(&op).await {
                self.apply_checked(plan, &mut rng).await;
            }
        }
        for op in [Op::Heal, Op::Reconcile, Op::Reap, Op::Heal] {
            match self.plan(&op).await {
                Ok(plan) => self.apply_checked(plan, &mut rng).await,
                Err(e) => self
                    .violations
                    .push(format!("convergence: planning {op:?} failed: {e}")),
            }
        }
        let (report, _) = self
            .phoenix
            .plan_reconcile(&self.shop, &self.web, ReconcileOptions::default())
            .await
            .unwrap();
        if !report.orphans.is_empty() || !report.missing.is_empty() {
            self.violations
                .push(format!("invariant 6: after convergence: {report}"));
        }
        let snap = self.phoenix.snapshot(&self.shop).await.unwrap();
        let servers = self.cloud.servers();
        let tokens: BTreeSet<_> = servers.iter().filter_map(|s| s.labels.token()).collect();
        if tokens.len() != servers.len() {
            self.violations
                .push("invariant 6: two servers share a launch token".into());
        }
        for s in &servers {
            if snap.owner_of(&s.id).is_none() {
                self.violations
                    .push(format!("invariant 6: {} belongs to no recorded pool", s.id));
            }
        }
        match snap.live_pool(&self.web) {
            None => self.violations.push("convergence: nothing is live".into()),
            Some(live) => {
                let desired = snap.deployment().roles[&self.web].desired;
                let members = self.cloud.members();
                let healthy = members.iter().filter(|m| m.is_serving_healthy()).count();
                let serving = self.serving_releases(&snap);
                let want: BTreeSet<String> = [live.release.to_string()].into_iter().collect();
                if healthy != desired || serving != want {
                    self.violations.push(format!(
                        "convergence: {healthy}/{desired} healthy members serving {serving:?}, live pool {} runs {}",
                        live.id, live.release
                    ));
                }
            }
        }
        if snap
            .pools_of(&self.web)
            .any(|p| p.state == PoolState::Failed)
        {
            self.violations
                .push("convergence: a failed pool survived reaping".into());
        }
    }
}

async fn run_seed(seed: u64) -> Seed {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let size = rng.random_range(2..=6usize);
    let batch = rng.random_range(1..=3usize);
    let faults = random_faults(&mut rng);
    let config = SimConfig {
        seed,
        idempotent_launch: rng.random_bool(0.3),
        stop_start: rng.random_bool(0.7),
        death_horizon: Duration::from_secs(4 * 3600),
        faults: faults.clone(),
        ..SimConfig::default()
    };
    let cloud = SimCloud::new(config).with_boot(SimBootConfig::default().with_secret(
        "prod".parse().unwrap(),
        "DB_PASSWORD",
        CANARY,
    ));
    let mut policy = cloud.policy();
    policy.rollout.batch_size = batch;
    policy.rollout.max_surge = batch;
    policy.rollout.min_healthy = if rng.random_bool(0.5) {
        Capacity::Percent(100)
    } else {
        Capacity::Absolute(size - 1)
    };
    policy.rollout.auto_rollback = rng.random_bool(0.8);
    policy.rollout.keep_failed = rng.random_bool(0.5);
    policy.retention.keep = rng.random_range(0..=2);
    policy.retention.hot = rng.random_range(0..=1);
    policy.refresh.max_age = Duration::from_secs(3 * 3600);
    policy.refresh.max_replacements = 4;
    policy.refresh.window = Duration::from_secs(1800);
    let phoenix = cloud.phoenix().policy(policy).build().unwrap();
    // The set-up itself runs without faults.
    cloud.set_faults(Faults::none());
    let (shop, web) = cloud.demo_deployment(&phoenix, size).await.unwrap();
    cloud.set_faults(faults);
    let mut run = Run {
        cloud,
        phoenix,
        shop,
        web,
        generation: 0,
        seed,
        batch,
        violations: Vec::new(),
        tally: Tally::default(),
        ops: 0,
    };
    let n = rng.random_range(3..=7);
    for _ in 0..n {
        let mut op = random_op(&mut rng);
        if rng.random_bool(0.1) {
            // A release that fails its smoke test.
            let mut f = run.cloud.faults();
            f.bad_releases.insert(r("v3"));
            run.cloud.set_faults(f);
            op = Op::Deploy("v3");
        }
        match run.plan(&op).await {
            Ok(plan) => {
                if let Err(e) = plan.validate() {
                    run.violations.push(format!("invariant 3: {e}"));
                }
                run.apply_checked(plan, &mut rng).await;
            }
            Err(PlanningError::Unfinished(_)) => run.recover().await,
            Err(_) => {}
        }
        run.check_world();
        let idle = Duration::from_secs(rng.random_range(0..3 * 3600));
        tokio::time::sleep(idle).await;
    }
    run.converge().await;
    run.check_world();

    // Blast radius, from the full history.
    let store = run.cloud.store().inner().clone();
    let history = store
        .events("deployments/shop", 0, usize::MAX)
        .await
        .unwrap();
    let events: Vec<Event> = history
        .iter()
        .map(|e| serde_json::from_slice(&e.payload).unwrap())
        .collect();
    let mut changes = 0;
    for e in &events {
        match &e.kind {
            EventKind::StepStarted { .. } => changes = 0,
            EventKind::ServerAttached { .. }
            | EventKind::ServerDetached { .. }
            | EventKind::ServerStopped { .. }
            | EventKind::ServerStarted { .. } => {
                changes += 1;
                if changes > run.batch {
                    run.violations
                        .push(format!("invariant 3: a step changed {changes} servers"));
                }
            }
            _ => {}
        }
    }
    // Secrets.
    let mut trace = String::new();
    for (k, v) in store.dump() {
        let text = String::from_utf8_lossy(&v);
        if text.contains(CANARY) || k.contains(CANARY) {
            run.violations
                .push(format!("invariant 10: the secret is stored under {k}"));
        }
    }
    for e in &history {
        trace.push_str(&String::from_utf8_lossy(&e.payload));
        trace.push('\n');
    }
    trace.push_str(&format!("{:?}\n", run.cloud.stats()));
    Seed {
        trace,
        faults: run.cloud.stats().faults_injected,
        violations: run.violations,
        ops: run.ops,
        tally: run.tally,
    }
}

fn run_seed_blocking(seed: u64) -> Seed {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(run_seed(seed))
}

#[test]
fn simulation_keeps_every_invariant() {
    let single: Option<u64> = std::env::var("PHOENIX_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let count: u64 = std::env::var("PHOENIX_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let seeds: Vec<u64> = match single {
        Some(s) => vec![s],
        None => (1..=count).collect(),
    };
    let mut faults = 0;
    let mut ops = 0;
    let mut tally = Tally::default();
    let mut failed: Vec<(u64, Vec<String>)> = Vec::new();
    for &seed in &seeds {
        let first = run_seed_blocking(seed);
        let second = run_seed_blocking(seed);
        let mut violations = first.violations.clone();
        if first.trace != second.trace {
            let at = first
                .trace
                .lines()
                .zip(second.trace.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            violations.push(format!("determinism: the traces differ from event {at}"));
        }
        if single.is_some() {
            println!("{}", first.trace);
        }
        faults += first.faults;
        ops += first.ops;
        tally.succeeded += first.tally.succeeded;
        tally.rolled_back += first.tally.rolled_back;
        tally.failed += first.tally.failed;
        tally.crashes += first.tally.crashes;
        if !violations.is_empty() {
            failed.push((seed, violations));
        }
    }
    let total: usize = failed.iter().map(|(_, v)| v.len()).sum();
    println!(
        "{} seeds, {ops} operations ({} succeeded, {} rolled back, {} failed and cleaned up, {} crashes resumed), {faults} faults injected, {total} violations",
        seeds.len(),
        tally.succeeded,
        tally.rolled_back,
        tally.failed,
        tally.crashes
    );
    if let Some((seed, violations)) = failed.first() {
        for (s, v) in failed.iter().take(10) {
            println!("seed {s}: {v:#?}");
        }
        panic!(
            "{} seed(s) violated invariants; replay the first with:\n  PHOENIX_SIM_SEED={seed} cargo test -p phoenix-core --test simulation -- --nocapture\n{violations:#?}",
            failed.len()
        );
    }
}
