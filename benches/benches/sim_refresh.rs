//! Rolling refresh on the simulated cloud at 1,000 and 10,000 servers.
//!
//! For each scenario it reports the simulated completion time against the
//! lower bound `ceil(N / batch) × (boot + health + bake)` (target ≤ 1.05),
//! describe calls per polling round (target: constant, not per server),
//! and the process's peak resident memory (target < 64 MiB at 10,000
//! servers). Each scenario runs in its own process so that its peak memory
//! is its own. A 10,000-server plan is also built and measured alone.
//!
//! `cargo bench -p benches --bench sim_refresh`

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use phoenix_core::sim::{Faults, SimCloud, SimConfig};

const BOOT: Duration = Duration::from_secs(300);
const HEALTH: Duration = Duration::from_secs(10);
const BAKE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Measure {
    servers: usize,
    batch: usize,
    sim_secs: f64,
    bound_secs: f64,
    describe_max: u64,
    describe_mean: f64,
    rounds: usize,
    plan_steps: usize,
    plan_ms: f64,
    plan_json_kib: usize,
    apply_ms: f64,
    peak_provision_mib: f64,
    peak_plan_mib: f64,
    peak_rss_mib: f64,
}

/// Resets the kernel's peak-RSS mark (VmHWM) so the next reading covers
/// one phase only.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn scenario(servers: usize, batch: usize, apply: bool) -> Result<Measure, String> {
    let cloud = SimCloud::new(SimConfig {
        seed: 7,
        boot_time: (BOOT, BOOT),
        health_delay: HEALTH,
        max_launch_batch: 1000,
        max_describe_batch: 1000,
        max_terminate_batch: 1,
        faults: Faults::none(),
        ..SimConfig::default()
    });
    let mut policy = cloud.policy();
    policy.rollout.batch_size = batch;
    policy.rollout.max_surge = batch;
    policy.rollout.bake_time = BAKE;
    policy.refresh.max_age = Duration::from_secs(24 * 3600);
    policy.refresh.max_replacements = servers;
    policy.refresh.window = Duration::from_secs(3600);
    policy.provision.concurrency = 64;
    let phoenix = cloud
        .phoenix()
        .policy(policy)
        .build()
        .map_err(|e| e.to_string())?;
    let (shop, web) = cloud
        .demo_deployment(&phoenix, servers)
        .await
        .map_err(|e| e.to_string())?;
    reset_peak();
    let v1 = "v1".parse().map_err(|e| format!("{e}"))?;
    let plan = phoenix
        .plan_deploy(&shop, &web, &v1)
        .await
        .map_err(|e| e.to_string())?;
    phoenix.apply(plan).await.map_err(|e| e.to_string())?;
    let peak_provision_mib = peak_rss_mib();
    tokio::time::sleep(Duration::from_secs(25 * 3600)).await;

    reset_peak();
    let t = Instant::now();
    let plan = phoenix
        .plan_refresh(&shop, &web)
        .await
        .map_err(|e| e.to_string())?;
    let plan_ms = t.elapsed().as_secs_f64() * 1000.0;
    let plan_steps = plan.steps.len();
    let plan_json_kib = serde_json::to_vec(&plan).map_or(0, |v| v.len() / 1024);
    let bound = (servers.div_ceil(batch) as f64) * (BOOT + HEALTH + BAKE).as_secs_f64();
    let peak_plan_mib = peak_rss_mib();
    if !apply {
        return Ok(Measure {
            servers,
            batch,
            sim_secs: f64::NAN,
            bound_secs: bound,
            describe_max: 0,
            describe_mean: f64::NAN,
            rounds: 0,
            plan_steps,
            plan_ms,
            plan_json_kib,
            apply_ms: f64::NAN,
            peak_provision_mib,
            peak_plan_mib,
            peak_rss_mib: f64::NAN,
        });
    }
    cloud.reset_stats();
    reset_peak();
    let start = cloud.now();
    let t = Instant::now();
    phoenix.apply(plan).await.map_err(|e| e.to_string())?;
    let apply_ms = t.elapsed().as_secs_f64() * 1000.0;
    let sim = phoenix_core::time::elapsed_between(start, cloud.now());
    let stats = cloud.stats();
    let (describe_max, describe_mean) = stats.describe_per_round();
    if !cloud.violations().is_empty() {
        return Err(format!("violations: {:?}", cloud.violations()));
    }
    Ok(Measure {
        servers,
        batch,
        sim_secs: sim.as_secs_f64(),
        bound_secs: bound,
        describe_max,
        describe_mean,
        rounds: stats.describe_rounds.len(),
        plan_steps,
        plan_ms,
        plan_json_kib,
        apply_ms,
        peak_provision_mib,
        peak_plan_mib,
        peak_rss_mib: peak_rss_mib(),
    })
}

fn child(args: &[String]) -> ExitCode {
    let parse = |i: usize| args.get(i).and_then(|s| s.parse::<usize>().ok());
    let (Some(servers), Some(batch)) = (parse(2), parse(3)) else {
        eprintln!("usage: --scenario SERVERS BATCH [plan-only]");
        return ExitCode::FAILURE;
    };
    let apply = args.get(4).map(String::as_str) != Some("plan-only");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(scenario(servers, batch, apply)) {
        Ok(m) => {
            println!(
                "{} {} {} {} {} {} {} {} {} {} {} {} {} {}",
                m.servers,
                m.batch,
                m.sim_secs,
                m.bound_secs,
                m.describe_max,
                m.describe_mean,
                m.rounds,
                m.plan_steps,
                m.plan_ms,
                m.plan_json_kib,
                m.apply_ms,
                m.peak_provision_mib,
                m.peak_plan_mib,
                m.peak_rss_mib
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("scenario failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(servers: usize, batch: usize, plan_only: bool) -> Result<Measure, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("--scenario")
        .arg(servers.to_string())
        .arg(batch.to_string());
    if plan_only {
        cmd.arg("plan-only");
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .map(|x| x.parse::<f64>().unwrap_or(f64::NAN))
        .collect();
    if f.len() != 14 {
        return Err(format!("unexpected output: {text}"));
    }
    Ok(Measure {
        servers: f[0] as usize,
        batch: f[1] as usize,
        sim_secs: f[2],
        bound_secs: f[3],
        describe_max: f[4] as u64,
        describe_mean: f[5],
        rounds: f[6] as usize,
        plan_steps: f[7] as usize,
        plan_ms: f[8],
        plan_json_kib: f[9] as usize,
        apply_ms: f[10],
        peak_provision_mib: f[11],
        peak_plan_mib: f[12],
        peak_rss_mib: f[13],
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--scenario") {
        return child(&args);
    }
    // `cargo bench` passes `--bench`; anything else is ignored.
    let scenarios = [(1_000, 100), (10_000, 500)];
    println!(
        "rolling refresh on the simulated cloud (boot {}s, health {}s, bake {}s; paused clock)",
        BOOT.as_secs(),
        HEALTH.as_secs(),
        BAKE.as_secs()
    );
    println!(
        "| {:>6} | {:>5} | {:>8} | {:>8} | {:>13} | {:>18} | {:>5} | {:>7} | {:>7} | {:>27} |",
        "N",
        "batch",
        "sim time",
        "bound",
        "ratio ≤ 1.05",
        "describes/round",
        "steps",
        "plan ms",
        "apply s",
        "peak RSS MiB: prov/plan/refr"
    );
    let mut ok = true;
    for (servers, batch) in scenarios {
        match run(servers, batch, false) {
            Ok(m) => {
                let ratio = m.sim_secs / m.bound_secs;
                println!(
                    "| {:>6} | {:>5} | {:>7.0}s | {:>7.0}s | {:>13.3} | {:>18} | {:>5} | {:>7.1} | {:>7.1} | {:>27} |",
                    m.servers,
                    m.batch,
                    m.sim_secs,
                    m.bound_secs,
                    ratio,
                    format!("max {} mean {:.2}", m.describe_max, m.describe_mean),
                    m.plan_steps,
                    m.plan_ms,
                    m.apply_ms / 1000.0,
                    format!(
                        "{:.1} / {:.1} / {:.1}",
                        m.peak_provision_mib, m.peak_plan_mib, m.peak_rss_mib
                    ),
                );
                if ratio > 1.05 || m.describe_max > 2 {
                    ok = false;
                }
                if m.servers == 10_000 && m.peak_plan_mib >= 64.0 {
                    ok = false;
                }
            }
            Err(e) => {
                eprintln!("{servers} servers: {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("a target was missed");
        ExitCode::FAILURE
    }
}
