use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use phoenix_core::events::{EventKind, Outcome};
use phoenix_core::executor::ExecError;
use phoenix_core::id::ReleaseLabel;
use phoenix_core::model::{PoolState, SlotState};
use phoenix_core::plan::Plan;
use phoenix_core::ports::{LoadBalancer, MemberHealth};
use phoenix_core::time::{elapsed_between, human};
use phoenix_lb::loadgen::{LoadGen, LoadGenConfig, LoadReport};

use super::LocalStack;
use super::StackError;

/// How to run the cycle.
#[derive(Debug, Clone)]
pub struct CycleOptions {
    /// Requests per second of the load generator.
    pub rate: u32,
    /// Where the load goes (default: the in-process balancer).
    pub target: Option<SocketAddr>,
    /// Print progress as it goes.
    pub progress: bool,
}

impl Default for CycleOptions {
    fn default() -> Self {
        Self {
            rate: 200,
            target: None,
            progress: true,
        }
    }
}

/// One phase of the cycle.
#[derive(Debug, Clone)]
pub struct Phase {
    /// What it did.
    pub name: String,
    /// When it started, from the start of the cycle.
    pub started: Duration,
    /// How long it took.
    pub took: Duration,
    /// How it ended.
    pub outcome: String,
    /// Time spent in balancer calls that changed membership (the control
    /// time of a cutover).
    pub control: Option<Duration>,
    /// For a switch: from the start of the phase until the balancer sent
    /// new connections only to the new pool (the old pool detached).
    pub moved: Option<Duration>,
    /// Detail.
    pub note: String,
}

/// A pool at the end.
#[derive(Debug, Clone)]
pub struct PoolLine {
    /// Pool.
    pub pool: String,
    /// Release.
    pub release: String,
    /// State.
    pub state: String,
    /// Running servers and their ages.
    pub servers: Vec<(String, Duration)>,
}

/// What the cycle did, for people.
#[derive(Debug, Clone)]
pub struct CycleReport {
    /// Releases this run introduced.
    pub releases: (String, String),
    /// Whether it continued an earlier run.
    pub continued: bool,
    /// What the restore found, on a continued run.
    pub restored: String,
    /// The phases, in order.
    pub phases: Vec<Phase>,
    /// Traffic.
    pub load: Option<LoadReport>,
    /// Pools at the end.
    pub pools: Vec<PoolLine>,
    /// Where the balancer listened.
    pub listen: Option<SocketAddr>,
}

impl CycleReport {
    /// Requests that failed.
    pub fn failed(&self) -> u64 {
        self.load.as_ref().map_or(0, |l| l.failed)
    }

    /// Whether every phase ended as it should.
    pub fn phases_ok(&self) -> bool {
        self.phases.iter().all(|p| !p.outcome.starts_with("FAILED"))
    }
}

struct Progress {
    origin: Instant,
}

fn spawn_progress(stack: &LocalStack, origin: Instant, print: bool) -> Progress {
    let mut rx = stack.phoenix.subscribe();
    tokio::spawn(async move {
        let mut steps = 0;
        loop {
            let e = match rx.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            };
            if print {
                let t = origin.elapsed().as_secs_f64();
                match &e.kind {
                    EventKind::OperationStarted { steps: n, .. } => steps = *n,
                    EventKind::StepStarted {
                        index,
                        rollback,
                        step,
                    } => println!(
                        "  {t:>7.2}s  {}step {}/{}  {step}",
                        if *rollback { "rollback " } else { "" },
                        index + 1,
                        steps
                    ),
                    EventKind::LaunchFailed {
                        pool, slot, reason, ..
                    } => {
                        println!("  {t:>7.2}s    launch of slot {slot} of {pool} failed: {reason}; replacing")
                    }
                    EventKind::GuardRefused { invariant, detail } => {
                        println!("  {t:>7.2}s    guard {invariant} refused: {detail}")
                    }
                    EventKind::RollbackStarted { reason, .. } => {
                        println!("  {t:>7.2}s    rolling back: {reason}")
                    }
                    EventKind::HookRan {
                        hook,
                        server,
                        ok,
                        detail,
                        ..
                    } => println!(
                        "  {t:>7.2}s    {hook} hook of {server}{}: {detail}",
                        if *ok { "" } else { " FAILED" }
                    ),
                    _ => {}
                }
            }
        }
    });
    Progress { origin }
}

impl Progress {
    fn since(&self) -> Duration {
        self.origin.elapsed()
    }
}

async fn phase<F, Fut>(
    stack: &LocalStack,
    progress: &Progress,
    phases: &mut Vec<Phase>,
    name: String,
    f: F,
) -> Result<(), StackError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<String, StackError>>,
{
    println!("\n{name}");
    let started = progress.since();
    let mark = Instant::now();
    let result = f().await;
    let took = mark.elapsed();
    let calls = stack.balancer.calls_since(mark);
    let control: Duration = calls.iter().map(|c| c.took).sum();
    // Traffic has moved once the serving members have left it: detached,
    // moved to standby (a balancer that keeps them checked), or swapped.
    let moved = calls
        .iter()
        .filter(|c| ["detach", "standby", "swap", "swap_standby"].contains(&c.kind))
        .map(|c| c.at + c.took - mark)
        .max()
        .filter(|_| {
            calls
                .iter()
                .any(|c| ["attach", "swap", "swap_standby"].contains(&c.kind))
        });
    let (outcome, note) = match &result {
        Ok(note) => ("ok".to_owned(), note.clone()),
        Err(StackError::Exec(e)) if matches!(e.as_ref(), ExecError::Failed { .. }) => {
            let report = e.report().map(|r| (r.outcome, r.error.clone()));
            let (outcome, error) = report.unwrap_or((Outcome::Failed, None));
            (
                format!(
                    "FAILED ({})",
                    match outcome {
                        Outcome::RolledBack => "rolled back",
                        _ => "halted",
                    }
                ),
                error.unwrap_or_default(),
            )
        }
        Err(e) => ("FAILED".to_owned(), phoenix_core::error_chain(e)),
    };
    println!(
        "  {:>7.2}s  {outcome} after {}",
        progress.since().as_secs_f64(),
        human(took)
    );
    phases.push(Phase {
        name,
        started,
        took,
        outcome,
        control: (!calls.is_empty()).then_some(control),
        moved,
        note,
    });
    result.map(|_| ())
}

async fn apply(stack: &LocalStack, plan: Plan) -> Result<String, StackError> {
    let summary = plan.summary.clone();
    stack.phoenix.apply(plan).await?;
    Ok(summary)
}

/// Runs the Phoenix cycle under live traffic: bake and release vN, make it
/// live; bake vN+1, switch blue-green; kill a live server (the incident)
/// and roll back to vN; switch to vN+1 again; refresh every live server;
/// reap with keep = 1. A first run starts at v1; a later one continues the
/// release history and re-adopts what still runs.
pub async fn run_cycle(
    stack: &LocalStack,
    options: CycleOptions,
) -> Result<CycleReport, StackError> {
    let origin = Instant::now();
    let progress = spawn_progress(stack, origin, options.progress);
    let mut phases = Vec::new();
    let snap = stack.phoenix.snapshot(&stack.deployment).await?;
    let continued = !snap.pools.is_empty();
    let mut restored = String::new();
    if continued {
        phase(
            stack,
            &progress,
            &mut phases,
            "re-adopt what the last run left".into(),
            || async {
                restored = stack.restore().await?;
                Ok(restored.trim().replace('\n', "; "))
            },
        )
        .await?;
    }
    let target = options
        .target
        .or_else(|| stack.listen_addr())
        .ok_or_else(|| StackError::Unexpected("no address to send traffic to".into()))?;
    let start_load = || {
        LoadGen::start(LoadGenConfig {
            rate: options.rate,
            duration: Duration::from_secs(24 * 3600),
            concurrency: 8,
            fresh_ratio: 0.25,
            keepalive_max_age: Duration::from_secs(1),
            ..LoadGenConfig::new(target)
        })
    };
    let live_now = stack
        .phoenix
        .snapshot(&stack.deployment)
        .await?
        .live_pool(&stack.role)
        .is_some();
    let mut load = if live_now {
        Some(start_load().map_err(load_error)?)
    } else {
        None
    };
    if load.is_some() {
        println!("\ntraffic: {} requests/s through {target}", options.rate);
    }

    let n = stack.next_release_number().await?;
    let (va, vb) = (format!("v{n}"), format!("v{}", n + 1));
    let ra: ReleaseLabel = va
        .parse()
        .map_err(|e| StackError::Unexpected(format!("{e}")))?;
    let rb: ReleaseLabel = vb
        .parse()
        .map_err(|e| StackError::Unexpected(format!("{e}")))?;
    let (d, role) = (&stack.deployment, &stack.role);

    phase(
        stack,
        &progress,
        &mut phases,
        format!("bake and certify {va}"),
        || async {
            let r = stack.release(&va).await?;
            Ok(format!(
                "image {}",
                r.images
                    .values()
                    .next()
                    .map(|i| i.to_string())
                    .unwrap_or_default()
            ))
        },
    )
    .await?;
    let verb = if live_now {
        "blue-green switch to"
    } else {
        "provision, smoke-test and go live:"
    };
    phase(
        stack,
        &progress,
        &mut phases,
        format!("{verb} {va}"),
        || async { apply(stack, stack.phoenix.plan_deploy(d, role, &ra).await?).await },
    )
    .await?;
    if load.is_none() {
        load = Some(start_load().map_err(load_error)?);
        println!("\ntraffic: {} requests/s through {target}", options.rate);
    }
    phase(
        stack,
        &progress,
        &mut phases,
        format!("bake and certify {vb}"),
        || async {
            let r = stack.release(&vb).await?;
            Ok(format!(
                "image {}",
                r.images
                    .values()
                    .next()
                    .map(|i| i.to_string())
                    .unwrap_or_default()
            ))
        },
    )
    .await?;
    phase(
        stack,
        &progress,
        &mut phases,
        format!("blue-green switch to {vb}"),
        || async { apply(stack, stack.phoenix.plan_deploy(d, role, &rb).await?).await },
    )
    .await?;

    phase(
        stack,
        &progress,
        &mut phases,
        format!("incident: a {vb} server is killed (SIGKILL)"),
        || async {
            let snap = stack.phoenix.snapshot(d).await?;
            let victim = snap
                .live_pool(role)
                .and_then(|p| p.attached().next())
                .and_then(|s| s.server.clone())
                .ok_or_else(|| StackError::Unexpected("no live server to kill".into()))?;
            let pid = stack
                .server_pid(&victim)
                .ok_or_else(|| StackError::Unexpected(format!("no pid recorded for {victim}")))?;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .map_err(|e| StackError::Unexpected(format!("cannot kill {pid}: {e}")))?;
            let killed = Instant::now();
            loop {
                let members = stack.balancer.members().await?;
                if members
                    .iter()
                    .any(|m| m.server == victim && m.health == MemberHealth::Unhealthy)
                {
                    break;
                }
                if killed.elapsed() > Duration::from_secs(10) {
                    return Err(StackError::Unexpected(format!(
                        "{victim} was never ejected"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(format!(
                "{victim} (pid {pid}) ejected by the balancer's checks after {}",
                human(killed.elapsed())
            ))
        },
    )
    .await?;
    phase(
        stack,
        &progress,
        &mut phases,
        format!("roll back to {va} (hot standby)"),
        || async { apply(stack, stack.phoenix.plan_rollback(d, role, None).await?).await },
    )
    .await?;
    phase(
        stack,
        &progress,
        &mut phases,
        format!("switch to {vb} again (its dead server replaced)"),
        || async { apply(stack, stack.phoenix.plan_deploy(d, role, &rb).await?).await },
    )
    .await?;
    phase(
        stack,
        &progress,
        &mut phases,
        "rolling refresh of every live server".into(),
        || async {
            let mut policy = stack.phoenix.policy().clone();
            policy.refresh.max_age = Duration::from_millis(1);
            policy.rollout.batch_size = 1;
            policy.rollout.max_surge = 1;
            policy.rollout.bake_time = Duration::from_secs(1);
            apply(
                stack,
                stack.phoenix.plan_refresh_with(d, role, &policy).await?,
            )
            .await
        },
    )
    .await?;
    phase(
        stack,
        &progress,
        &mut phases,
        "reap (keep = 1)".into(),
        || async { apply(stack, stack.phoenix.plan_reap(d, role).await?).await },
    )
    .await?;

    let load = match load {
        Some(l) => Some(l.stop_and_finish().await.map_err(load_error)?),
        None => None,
    };
    let snap = stack.phoenix.snapshot(d).await?;
    let now = chrono::Utc::now();
    let pools = snap
        .pools_of(role)
        .filter(|p| p.state != PoolState::Deleted)
        .map(|p| PoolLine {
            pool: p.id.to_string(),
            release: p.release.to_string(),
            state: p.state.to_string(),
            servers: p
                .slots
                .iter()
                .filter(|s| s.state == SlotState::Running)
                .filter_map(|s| {
                    Some((
                        s.server.as_ref()?.to_string(),
                        elapsed_between(s.launched_at?, now),
                    ))
                })
                .collect(),
        })
        .collect();
    let _ = progress.since();
    Ok(CycleReport {
        releases: (va, vb),
        continued,
        restored,
        phases,
        load,
        pools,
        listen: stack.listen_addr(),
    })
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.2}ms", d.as_secs_f64() * 1000.0)
    } else {
        human(d)
    }
}

impl fmt::Display for CycleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "=== Phoenix local cycle: {} and {} ===",
            self.releases.0, self.releases.1
        )?;
        if self.continued {
            writeln!(
                f,
                "continued an earlier run (history and running servers re-adopted)"
            )?;
        }
        writeln!(f, "\ntimeline")?;
        writeln!(
            f,
            "  {:<50} {:>8} {:>8}  {:<22} {:>9} {:>13}",
            "phase", "start", "took", "outcome", "control", "traffic moved"
        )?;
        for p in &self.phases {
            writeln!(
                f,
                "  {:<50} {:>7.2}s {:>8}  {:<22} {:>9} {:>13}",
                p.name,
                p.started.as_secs_f64(),
                human(p.took),
                p.outcome,
                p.control.map(ms).unwrap_or_default(),
                p.moved.map(human).unwrap_or_default()
            )?;
        }
        for p in self.phases.iter().filter(|p| !p.note.is_empty()) {
            writeln!(f, "  · {}: {}", p.name, p.note)?;
        }
        let switches: Vec<&Phase> = self
            .phases
            .iter()
            .filter(|p| p.moved.is_some() && p.name.contains("switch"))
            .collect();
        let rollback = self.phases.iter().find(|p| p.name.starts_with("roll back"));
        writeln!(f, "\ncutover and rollback")?;
        for s in switches {
            writeln!(
                f,
                "  {:<50} control {} (balancer calls), traffic moved {} into the phase, done in {}",
                s.name,
                s.control.map(ms).unwrap_or_default(),
                s.moved.map(human).unwrap_or_default(),
                human(s.took)
            )?;
        }
        if let Some(r) = rollback {
            writeln!(
                f,
                "  {:<50} control {}, traffic moved {} after the decision, done in {} (incl. drain)",
                r.name,
                r.control.map(ms).unwrap_or_default(),
                r.moved.map(human).unwrap_or_default(),
                human(r.took)
            )?;
        }
        writeln!(f, "\ntraffic")?;
        match &self.load {
            Some(l) => {
                writeln!(
                    f,
                    "  {} requests sent, {} ok, {} FAILED, {} retried after their connection closed before any answer",
                    l.sent,
                    l.ok,
                    l.failed,
                    l.retried()
                )?;
                let by: Vec<String> = l
                    .releases
                    .iter()
                    .map(|(r, n)| format!("{r}: {n}"))
                    .collect();
                writeln!(f, "  served by release: {}", by.join(", "))?;
                writeln!(
                    f,
                    "  latency p50 {} p99 {} max {}",
                    ms(l.latency.p50),
                    ms(l.latency.p99),
                    ms(l.latency.max)
                )?;
                for s in &l.failure_samples {
                    writeln!(f, "  failure: {s}")?;
                }
            }
            None => writeln!(f, "  none")?,
        }
        writeln!(f, "\npools and servers")?;
        for p in &self.pools {
            let ages: Vec<String> = p
                .servers
                .iter()
                .map(|(s, age)| format!("{s} ({})", human(*age)))
                .collect();
            writeln!(
                f,
                "  {:<14} release {:<4} {:<14} {}",
                p.pool,
                p.release,
                p.state,
                if ages.is_empty() {
                    "-".to_owned()
                } else {
                    ages.join(", ")
                }
            )?;
        }
        if let Some(addr) = self.listen {
            writeln!(f, "\nbalancer was at {addr} (it stops with this program)")?;
        }
        let running: usize = self.pools.iter().map(|p| p.servers.len()).sum();
        writeln!(
            f,
            "{running} servers keep running; run again to continue with the next releases, or pass --teardown to remove everything"
        )
    }
}

/// The load generator's failure, as the stack's error.
fn load_error(e: phoenix_lb::loadgen::LoadGenError) -> StackError {
    StackError::Unexpected(format!(
        "the load generator failed: {}",
        phoenix_core::error_chain(&e)
    ))
}
