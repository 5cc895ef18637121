//! Helpers the fault, crash-safety, lease and hook tests share: the local
//! stack's options, traffic, orchestrator processes (`phoenix-local`), a
//! balancer that outlives them, a monitor of the capacity floor, the
//! no-orphan check, and a PostgreSQL schema per test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    unreachable_pub,
    missing_docs
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use examples::local::{BalancerChoice, LocalStack, StackOptions};
use phoenix_core::labels::LabelSelector;
use phoenix_core::ops::ReconcileOptions;
use phoenix_core::ports::{Compute, LoadBalancer};
use phoenix_lb::embedded::{EmbeddedBalancer, HealthCheck};
use phoenix_lb::loadgen::{LoadGen, LoadGenConfig};
use phoenix_lb::remote::AdminServer;

/// The orchestrator binary (which is also the app baked into images).
pub const APP: &str = env!("CARGO_BIN_EXE_phoenix-local");

/// The reason given to `ignore` on tests that need PostgreSQL.
pub const NEEDS_PG: &str = "needs postgresql: run the full test script";

pub fn options(dir: &Path, balancer: BalancerChoice) -> StackOptions {
    let mut o = examples::local::options().unwrap();
    o.dir = dir.to_path_buf();
    o.app = PathBuf::from(APP);
    o.balancer = balancer;
    o.holder = "fault-test".into();
    let mut policy = LocalStack::policy(3);
    policy.rollout.bake_time = Duration::from_millis(300);
    policy.rollout.drain = Duration::from_millis(500);
    o.policy = Some(policy);
    o.lease_ttl = Duration::from_secs(1);
    o
}

pub fn load(target: SocketAddr) -> LoadGen {
    LoadGen::start(LoadGenConfig {
        rate: 200,
        duration: Duration::from_secs(3600),
        concurrency: 8,
        fresh_ratio: 0.25,
        keepalive_max_age: Duration::from_millis(500),
        ..LoadGenConfig::new(target)
    })
    .unwrap()
}

/// Every labelled process belongs to a recorded pool and every recorded
/// running server exists.
pub async fn assert_no_orphans(stack: &LocalStack) {
    let (report, _) = stack
        .phoenix
        .plan_reconcile(&stack.deployment, &stack.role, ReconcileOptions::default())
        .await
        .unwrap();
    assert!(
        report.orphans.is_empty() && report.missing.is_empty(),
        "{report}"
    );
    let snap = stack.phoenix.snapshot(&stack.deployment).await.unwrap();
    for s in stack
        .compute
        .list(&LabelSelector::deployment(&stack.deployment))
        .await
        .unwrap()
    {
        assert!(snap.owner_of(&s.id).is_some(), "{} is an orphan", s.id);
    }
}

/// `phoenix-local` processes on one working directory, balancer and state
/// store.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// `--state-url`, when not the SQLite file in `dir`.
    pub state: Option<String>,
    /// Flags after the common ones (servers, batch, …).
    pub flags: Vec<String>,
}

impl Orchestrator {
    pub fn new(dir: &Path, socket: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            socket: socket.to_path_buf(),
            state: None,
            flags: Vec::new(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(APP);
        cmd.args(["--dir", &self.dir.display().to_string()])
            .args(["--lb-socket", &self.socket.display().to_string()])
            .args([
                "--lease-ttl-ms",
                "1000",
                "--bake-ms",
                "300",
                "--drain-ms",
                "500",
                // A rerun waits out the lease of the orchestrator it
                // replaces (killed while holding it).
                "--lease-wait-ms",
                "10000",
            ]);
        if let Some(url) = &self.state {
            cmd.args(["--state-url", url]);
        }
        cmd.args(&self.flags)
            .args(args)
            .env_remove("PHOENIX_CRASH_BEFORE_WRITE")
            .env_remove("PHOENIX_CRASH_AT_COMMIT")
            .env_remove("PHOENIX_STOP_AT_COMMIT")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs to the end; killed with SIGKILL at commit `crash` when given.
    pub fn run(&self, args: &[&str], crash: Option<u64>) -> Output {
        let mut cmd = self.command(args);
        if let Some(n) = crash {
            cmd.env("PHOENIX_CRASH_AT_COMMIT", n.to_string());
        }
        cmd.output().unwrap()
    }
}

/// `phoenix-local` on the SQLite file in `dir`, killed at commit `crash`.
pub fn orchestrate(dir: &Path, socket: &Path, args: &[&str], crash: Option<u64>) -> Output {
    Orchestrator::new(dir, socket).run(args, crash)
}

/// The commit count an orchestrator printed when it ended by itself.
pub fn commits(out: &Output) -> u64 {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("commits ")?.trim().parse().ok())
        .unwrap_or(0)
}

pub fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A balancer in this process, served on an admin socket so that
/// orchestrators in other processes drive it (and can die without taking
/// traffic down).
pub struct TestBalancer {
    pub lb: Arc<EmbeddedBalancer>,
    pub socket: PathBuf,
    _admin: AdminServer,
}

impl TestBalancer {
    pub async fn start(socket: &Path) -> Self {
        let lb = Arc::new(
            EmbeddedBalancer::builder()
                .health_check(HealthCheck::http_get("/health"))
                .check_interval(Duration::from_millis(100))
                .rise(2)
                .fall(2)
                .start()
                .await
                .unwrap(),
        );
        let admin = phoenix_lb::remote::serve(
            lb.clone(),
            socket,
            tokio_util::sync::CancellationToken::new(),
        )
        .unwrap();
        Self {
            lb,
            socket: socket.to_path_buf(),
            _admin: admin,
        }
    }

    /// Waits until at least `n` members serve healthy.
    pub async fn wait_healthy(&self, n: usize, within: Duration) {
        let started = Instant::now();
        loop {
            let healthy = self
                .lb
                .members()
                .await
                .unwrap()
                .iter()
                .filter(|m| m.is_serving_healthy())
                .count();
            if healthy >= n {
                return;
            }
            assert!(
                started.elapsed() < within,
                "only {healthy} healthy members after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Samples the balancer's members every 10 ms and remembers the fewest
/// healthy serving members it saw, and when it saw fewer than the floor.
pub struct FloorMonitor {
    floor: usize,
    min: Arc<AtomicUsize>,
    samples: Arc<AtomicU32>,
    below: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FloorMonitor {
    pub fn start(lb: Arc<EmbeddedBalancer>, floor: usize) -> Self {
        let min = Arc::new(AtomicUsize::new(usize::MAX));
        let samples = Arc::new(AtomicU32::new(0));
        let below = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (min, samples, below, stop) =
                (min.clone(), samples.clone(), below.clone(), stop.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let members = match lb.members().await {
                        Ok(m) => m,
                        Err(e) => {
                            below.lock().unwrap().push(format!("members() failed: {e}"));
                            continue;
                        }
                    };
                    let healthy = members.iter().filter(|m| m.is_serving_healthy()).count();
                    min.fetch_min(healthy, Ordering::Relaxed);
                    samples.fetch_add(1, Ordering::Relaxed);
                    if healthy < floor {
                        let states: Vec<String> = members
                            .iter()
                            .map(|m| format!("{}:{:?}/{:?}", m.server, m.state, m.health))
                            .collect();
                        below.lock().unwrap().push(format!(
                            "{:.3}s: {healthy} healthy serving < floor {floor} [{}]",
                            started.elapsed().as_secs_f64(),
                            states.join(" ")
                        ));
                    }
                }
            })
        };
        Self {
            floor,
            min,
            samples,
            below,
            stop,
            task,
        }
    }

    /// The fewest healthy serving members seen so far.
    pub fn min(&self) -> usize {
        self.min.load(Ordering::Relaxed)
    }

    pub fn samples(&self) -> u32 {
        self.samples.load(Ordering::Relaxed)
    }

    /// Panics with what it saw if the floor was ever broken.
    pub fn assert_held(&self, when: &str) {
        let below = self.below.lock().unwrap();
        assert!(
            below.is_empty(),
            "{when}: the capacity floor of {} was broken:\n{}",
            self.floor,
            below
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    pub async fn stop(self) -> (usize, u32) {
        self.stop.store(true, Ordering::Relaxed);
        let (min, samples) = (self.min(), self.samples());
        let _ = self.task.await;
        (min, samples)
    }
}

/// The PostgreSQL server the test script starts, if it is running.
pub fn pg_url() -> Option<String> {
    std::env::var("PHOENIX_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A schema of its own for one test on the script's PostgreSQL, dropped
/// (with everything in it) when the test ends, also when it fails.
pub struct PgSchema {
    pub url: String,
}

impl PgSchema {
    pub fn new(tag: &str) -> Self {
        let base = pg_url()
            .expect("PHOENIX_TEST_PG_URL is not set: run scripts/test, which starts PostgreSQL");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let sep = if base.contains('?') { '&' } else { '?' };
        Self {
            url: format!(
                "{base}{sep}schema=ex_{tag}_{}_{nanos:x}",
                std::process::id()
            ),
        }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let store = phoenix_state::PostgresStore::connect(&url).await?;
                store.drop_schema().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if let Ok(Err(e)) = done {
            eprintln!("could not drop the test schema: {e}");
        }
    }
}

/// Terminates every server of the stack's deployment when dropped, so that
/// a test that fails half-way leaves no process behind.
pub struct ServerReaper {
    compute: Arc<phoenix_providers::local::LocalCompute>,
    deployment: phoenix_core::id::DeploymentId,
}

impl ServerReaper {
    pub fn new(stack: &LocalStack) -> Self {
        Self {
            compute: stack.compute.clone(),
            deployment: stack.deployment.clone(),
        }
    }
}

impl Drop for ServerReaper {
    fn drop(&mut self) {
        let (compute, deployment) = (self.compute.clone(), self.deployment.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(servers) = compute.list(&LabelSelector::deployment(&deployment)).await {
                    for s in servers {
                        let _ = compute.terminate(&s.id).await;
                    }
                }
            });
        })
        .join();
    }
}

/// Counts by key, for messages.
pub fn tally<K: Ord>(items: impl IntoIterator<Item = K>) -> BTreeMap<K, usize> {
    let mut out = BTreeMap::new();
    for k in items {
        *out.entry(k).or_insert(0) += 1;
    }
    out
}
