//! Rolling refresh on the simulated cloud at 1,000 and 10,000 servers.
//!
//! For each scenario it reports the simulated completion time against the
//! lower bound `ceil(N / batch) × (boot + health + bake)` (target ≤ 1.05),
//! describe calls per polling round (target: constant, not per server),
//! and memory: the peak resident set of the whole run — provisioning, the
//! refresh plan and its apply, with the simulated cloud and the in-memory
//! store in the same process — against its target (< 64 MiB at 10,000
//! servers), and its shares: what is resident once provisioned, how far
//! planning and applying raise the peak above that, and what the store
//! holds (records, and events as stored and as JSON). Each scenario runs
//! in its own process so that its peak memory is its own.
//!
//! `cargo bench -p benches --bench sim_refresh`

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use phoenix_core::sim::{Faults, SimCloud, SimConfig};

const BOOT: Duration = Duration::from_secs(300);
const HEALTH: Duration = Duration::from_secs(10);
const BAKE: Duration = Duration::from_secs(60);

/// Peak-RSS target of the whole run (provision, plan and refresh, with the
/// simulated cloud and the store in the same process) at 10,000 servers.
const TARGET_MIB: f64 = 64.0;
const TARGET_SERVERS: usize = 10_000;

#[derive(Debug, Default)]
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
    plan_json_kib: f64,
    apply_ms: f64,
    /// Resident before anything ran (binary, runtime).
    base_mib: f64,
    /// Peak while the deployment was registered and provisioned.
    peak_provision_mib: f64,
    /// Resident once provisioned: the simulated cloud's 10,000 servers,
    /// the store and the records.
    resident_mib: f64,
    /// Peak while the refresh was planned, and its increment over what
    /// was resident before.
    peak_plan_mib: f64,
    plan_share_mib: f64,
    /// Peak while the refresh was applied, and its increment.
    peak_apply_mib: f64,
    apply_share_mib: f64,
    /// What the store held after the refresh.
    store_mib: f64,
    store_records_mib: f64,
    store_events: usize,
    store_event_json_mib: f64,
    store_events_mib: f64,
}

impl Measure {
    /// The peak of the whole run.
    fn peak_mib(&self) -> f64 {
        self.peak_provision_mib
            .max(self.peak_plan_mib)
            .max(self.peak_apply_mib)
    }

    /// `key=value` pairs, one line, for the parent.
    fn encode(&self) -> String {
        format!(
            "servers={} batch={} sim_secs={} bound_secs={} describe_max={} describe_mean={} \
             rounds={} plan_steps={} plan_ms={} plan_json_kib={} apply_ms={} base_mib={} \
             peak_provision_mib={} resident_mib={} peak_plan_mib={} plan_share_mib={} \
             peak_apply_mib={} apply_share_mib={} store_mib={} \
             store_records_mib={} store_events={} store_event_json_mib={} store_events_mib={}",
            self.servers,
            self.batch,
            self.sim_secs,
            self.bound_secs,
            self.describe_max,
            self.describe_mean,
            self.rounds,
            self.plan_steps,
            self.plan_ms,
            self.plan_json_kib,
            self.apply_ms,
            self.base_mib,
            self.peak_provision_mib,
            self.resident_mib,
            self.peak_plan_mib,
            self.plan_share_mib,
            self.peak_apply_mib,
            self.apply_share_mib,
            self.store_mib,
            self.store_records_mib,
            self.store_events,
            self.store_event_json_mib,
            self.store_events_mib,
        )
    }

    fn decode(line: &str) -> Result<Self, String> {
        let fields: std::collections::BTreeMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let f = |k: &str| -> Result<f64, String> {
            fields
                .get(k)
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("no {k} in {line:?}"))
        };
        Ok(Self {
            servers: f("servers")? as usize,
            batch: f("batch")? as usize,
            sim_secs: f("sim_secs")?,
            bound_secs: f("bound_secs")?,
            describe_max: f("describe_max")? as u64,
            describe_mean: f("describe_mean")?,
            rounds: f("rounds")? as usize,
            plan_steps: f("plan_steps")? as usize,
            plan_ms: f("plan_ms")?,
            plan_json_kib: f("plan_json_kib")?,
            apply_ms: f("apply_ms")?,
            base_mib: f("base_mib")?,
            peak_provision_mib: f("peak_provision_mib")?,
            resident_mib: f("resident_mib")?,
            peak_plan_mib: f("peak_plan_mib")?,
            plan_share_mib: f("plan_share_mib")?,
            peak_apply_mib: f("peak_apply_mib")?,
            apply_share_mib: f("apply_share_mib")?,
            store_mib: f("store_mib")?,
            store_records_mib: f("store_records_mib")?,
            store_events: f("store_events")? as usize,
            store_event_json_mib: f("store_event_json_mib")?,
            store_events_mib: f("store_events_mib")?,
        })
    }
}

/// Resets the kernel's peak-RSS mark (VmHWM) so the next reading covers
/// one phase only.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A `/proc/self/status` field in MiB (`VmHWM`: the peak since the last
/// reset; `VmRSS`: now).
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn scenario(servers: usize, batch: usize, apply: bool) -> Result<Measure, String> {
    let mut m = Measure {
        servers,
        batch,
        base_mib: rss_mib(),
        ..Measure::default()
    };
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
    let v1 = "v1".parse().map_err(|e| format!("{e}"))?;
    let plan = phoenix
        .plan_deploy(&shop, &web, &v1)
        .await
        .map_err(|e| e.to_string())?;
    phoenix.apply(plan).await.map_err(|e| e.to_string())?;
    m.peak_provision_mib = peak_rss_mib();
    tokio::time::sleep(Duration::from_secs(25 * 3600)).await;

    reset_peak();
    m.resident_mib = rss_mib();
    let t = Instant::now();
    let plan = phoenix
        .plan_refresh(&shop, &web)
        .await
        .map_err(|e| e.to_string())?;
    m.plan_ms = t.elapsed().as_secs_f64() * 1000.0;
    m.peak_plan_mib = peak_rss_mib();
    m.plan_share_mib = m.peak_plan_mib - m.resident_mib;
    m.plan_steps = plan.steps.len();
    m.plan_json_kib = serde_json::to_vec(&plan).map_or(0.0, |v| v.len() as f64 / 1024.0);
    m.bound_secs = (servers.div_ceil(batch) as f64) * (BOOT + HEALTH + BAKE).as_secs_f64();
    if !apply {
        return Ok(m);
    }
    cloud.reset_stats();
    reset_peak();
    let before = rss_mib();
    let start = cloud.now();
    let t = Instant::now();
    phoenix.apply(plan).await.map_err(|e| e.to_string())?;
    m.apply_ms = t.elapsed().as_secs_f64() * 1000.0;
    m.peak_apply_mib = peak_rss_mib();
    m.apply_share_mib = m.peak_apply_mib - before;
    m.sim_secs = phoenix_core::time::elapsed_between(start, cloud.now()).as_secs_f64();
    let stats = cloud.stats();
    (m.describe_max, m.describe_mean) = stats.describe_per_round();
    m.rounds = stats.describe_rounds.len();
    let usage = cloud.store().inner().usage();
    m.store_mib = mib(usage.bytes());
    m.store_records_mib = mib(usage.record_bytes);
    m.store_events = usage.events;
    m.store_event_json_mib = mib(usage.event_json_bytes);
    m.store_events_mib = mib(usage.event_bytes);
    if !cloud.violations().is_empty() {
        return Err(format!("violations: {:?}", cloud.violations()));
    }
    Ok(m)
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
            println!("{}", m.encode());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("scenario failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(servers: usize, batch: usize) -> Result<Measure, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .arg("--scenario")
        .arg(servers.to_string())
        .arg(batch.to_string())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Measure::decode(text.lines().last().unwrap_or_default())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--scenario") {
        return child(&args);
    }
    // `cargo bench` passes `--bench`; anything else is ignored.
    let scenarios = [(1_000, 100), (10_000, 500)];
    let mut ok = true;
    let mut done = Vec::new();
    for (servers, batch) in scenarios {
        match run(servers, batch) {
            Ok(m) => done.push(m),
            Err(e) => {
                eprintln!("{servers} servers: {e}");
                ok = false;
            }
        }
    }
    println!(
        "rolling refresh on the simulated cloud (boot {}s, health {}s, bake {}s; paused clock)",
        BOOT.as_secs(),
        HEALTH.as_secs(),
        BAKE.as_secs()
    );
    println!(
        "| {:>6} | {:>5} | {:>8} | {:>8} | {:>12} | {:>18} | {:>5} | {:>7} | {:>8} | {:>7} |",
        "N",
        "batch",
        "sim time",
        "bound",
        "ratio ≤ 1.05",
        "describes/round",
        "steps",
        "plan ms",
        "plan KiB",
        "apply s",
    );
    for m in &done {
        let ratio = m.sim_secs / m.bound_secs;
        println!(
            "| {:>6} | {:>5} | {:>7.0}s | {:>7.0}s | {:>12.3} | {:>18} | {:>5} | {:>7.1} | {:>8.1} | {:>7.1} |",
            m.servers,
            m.batch,
            m.sim_secs,
            m.bound_secs,
            ratio,
            format!("max {} mean {:.2}", m.describe_max, m.describe_mean),
            m.plan_steps,
            m.plan_ms,
            m.plan_json_kib,
            m.apply_ms / 1000.0,
        );
        if ratio.is_nan() || ratio > 1.05 || m.describe_max > 2 {
            ok = false;
        }
    }
    println!();
    println!(
        "memory (MiB; one process each: the simulated cloud, the store and Phoenix; plan and \
         apply are the peak's rise over what was resident before them)"
    );
    println!(
        "| {:>6} | {:>17} | {:>4} | {:>9} | {:>8} | {:>13} | {:>13} | {:>30} |",
        "N",
        "peak RSS (target)",
        "base",
        "provision",
        "resident",
        "plan",
        "apply",
        "store: records + events (JSON)",
    );
    for m in &done {
        let peak = m.peak_mib();
        let verdict = if m.servers != TARGET_SERVERS {
            "    ".to_owned()
        } else if peak < TARGET_MIB {
            format!("< {TARGET_MIB:.0} ok")
        } else {
            ok = false;
            format!("≥ {TARGET_MIB:.0} NO")
        };
        println!(
            "| {:>6} | {:>17} | {:>4.1} | {:>9.1} | {:>8.1} | {:>13} | {:>13} | {:>30} |",
            m.servers,
            format!("{peak:.1} {verdict}"),
            m.base_mib,
            m.peak_provision_mib,
            m.resident_mib,
            format!("+{:.1} ({:.1})", m.plan_share_mib, m.peak_plan_mib),
            format!("+{:.1} ({:.1})", m.apply_share_mib, m.peak_apply_mib),
            format!(
                "{:.1} + {:.1} ({}k ev, {:.1})",
                m.store_records_mib,
                m.store_events_mib,
                m.store_events / 1000,
                m.store_event_json_mib
            ),
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("a target was missed");
        ExitCode::FAILURE
    }
}
