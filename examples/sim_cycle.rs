//! The Phoenix cycle on a simulated cloud of 1,000 servers.
//!
//! A deployment of 1,000 web servers goes through: provision and go live
//! (v1), a blue-green switch (v2), a rolling refresh of every server past
//! its maximum age, a rolling replacement by a release that starts failing
//! its smoke test a quarter of the way in and rolls back by itself (v3),
//! and a reap. Boots take four to five minutes and the cloud misbehaves now
//! and then (stuck builds, errors, throttling, lost answers); the clock is
//! tokio's paused clock, so days of operations take seconds.
//!
//! Run it: `cargo run --release --example sim_cycle`.

use std::process::ExitCode;
use std::time::Duration;

use phoenix_core::events::{Event, EventKind, Outcome};
use phoenix_core::executor::ExecError;
use phoenix_core::id::{DeploymentId, ReleaseLabel, RoleName};
use phoenix_core::plan::Plan;
use phoenix_core::ports::StateStore;
use phoenix_core::sim::{Faults, SimCloud, SimConfig, SimStats};
use phoenix_core::time::{elapsed_between, human, Timestamp};
use phoenix_core::Phoenix;

const SERVERS: usize = 1_000;

struct Row {
    name: String,
    started: Timestamp,
    finished: Timestamp,
    outcome: String,
    launched: u64,
    terminated: u64,
    describe: u64,
    other_calls: u64,
    note: String,
}

struct Cycle {
    cloud: SimCloud,
    phoenix: Phoenix,
    shop: DeploymentId,
    web: RoleName,
    origin: Timestamp,
    rows: Vec<Row>,
}

fn release(s: &str) -> ReleaseLabel {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn calls(s: &SimStats) -> u64 {
    s.launch_calls + s.list_calls + s.terminate_calls + s.stop_calls + s.start_calls + s.lb_calls
}

impl Cycle {
    fn clock(&self, t: Timestamp) -> String {
        let d = elapsed_between(self.origin, t).as_secs();
        format!("+{:02}:{:02}:{:02}", d / 3600, d / 60 % 60, d % 60)
    }

    async fn run(&mut self, name: &str, plan: Plan) -> Result<(), String> {
        println!("\n=== {name} ===");
        println!("{}", dry_run(&plan));
        let before = self.cloud.stats();
        let started = self.cloud.now();
        let result = self.phoenix.apply(plan).await;
        let after = self.cloud.stats();
        let (outcome, note) = match &result {
            Ok(r) => (r.outcome, String::new()),
            Err(ExecError::Failed { report, cause }) => (
                report.outcome,
                format!(
                    "{cause}{}\n  ({})",
                    if cause.is_transient() {
                        ", which may pass: try again later"
                    } else {
                        ""
                    },
                    report.error.as_deref().unwrap_or_default()
                ),
            ),
            Err(e) => return Err(format!("{name}: {e}")),
        };
        let finished = self.cloud.now();
        println!(
            "{} {name}: {:?} after {}{}",
            self.clock(finished),
            outcome,
            human(elapsed_between(started, finished)),
            if note.is_empty() {
                String::new()
            } else {
                format!("\n  because {note}")
            }
        );
        let launched = after.servers_launched - before.servers_launched;
        self.rows.push(Row {
            name: name.to_owned(),
            started,
            finished,
            outcome: format!("{outcome:?}"),
            launched,
            terminated: after.terminate_calls - before.terminate_calls,
            describe: after.describe_calls - before.describe_calls,
            other_calls: calls(&after) - calls(&before),
            note,
        });
        Ok(())
    }
}

/// Long plans print their first and last steps.
fn dry_run(plan: &Plan) -> String {
    let text = plan.to_string();
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= 40 {
        return text;
    }
    let mut out: Vec<String> = lines[..24].iter().map(|l| (*l).to_owned()).collect();
    out.push(format!("    … {} more steps …", lines.len() - 36));
    out.extend(lines[lines.len() - 12..].iter().map(|l| (*l).to_owned()));
    out.join("\n")
}

async fn cycle() -> Result<(), String> {
    let faults = Faults {
        stuck_in_build: 0.002,
        boot_error: 0.003,
        throttle: 0.01,
        server_error: 0.005,
        lost_response: 0.002,
        not_found_after_launch: 0.05,
        lb_failure: 0.01,
        ..Faults::none()
    };
    let cloud = SimCloud::new(SimConfig {
        seed: 2026,
        faults: Faults::none(),
        ..SimConfig::default()
    });
    let mut policy = cloud.policy();
    policy.rollout.batch_size = 100;
    policy.rollout.max_surge = 100;
    policy.rollout.bake_time = Duration::from_secs(120);
    policy.rollout.keep_failed = false;
    policy.refresh.max_age = Duration::from_secs(24 * 3600);
    policy.refresh.max_replacements = 500;
    policy.refresh.window = Duration::from_secs(3600);
    policy.provision.concurrency = 100;
    let phoenix = cloud
        .phoenix()
        .policy(policy)
        .build()
        .map_err(|e| e.to_string())?;
    let (shop, web) = cloud
        .demo_deployment(&phoenix, SERVERS)
        .await
        .map_err(|e| e.to_string())?;
    cloud.set_faults(faults.clone());
    println!(
        "Simulated cloud: {SERVERS} servers of role {web} in deployment {shop} (production), \
         boots of 4-5 minutes, faults: stuck builds, boot errors, throttling, 5xx, lost answers, \
         eventual consistency, balancer errors."
    );
    let mut c = Cycle {
        origin: cloud.now(),
        cloud,
        phoenix,
        shop,
        web,
        rows: Vec::new(),
    };

    let plan = c
        .phoenix
        .plan_deploy(&c.shop, &c.web, &release("v1"))
        .await
        .map_err(|e| e.to_string())?;
    c.run("provision v1 and go live", plan).await?;

    let plan = c
        .phoenix
        .plan_deploy(&c.shop, &c.web, &release("v2"))
        .await
        .map_err(|e| e.to_string())?;
    c.run("blue-green switch to v2", plan).await?;

    tokio::time::sleep(Duration::from_secs(25 * 3600)).await;
    let plan = c
        .phoenix
        .plan_refresh(&c.shop, &c.web)
        .await
        .map_err(|e| e.to_string())?;
    c.run("rolling refresh (max age 24h)", plan).await?;

    let mut bad = faults.clone();
    bad.smoke_fails_after.insert(release("v3"), 250);
    c.cloud.set_faults(bad);
    let plan = c
        .phoenix
        .plan_rolling_replace(&c.shop, &c.web, &release("v3"))
        .await
        .map_err(|e| e.to_string())?;
    c.run("rolling replacement by v3 (defective)", plan).await?;
    c.cloud.set_faults(faults);

    let plan = c
        .phoenix
        .plan_reap(&c.shop, &c.web)
        .await
        .map_err(|e| e.to_string())?;
    c.run("reap (keep 1)", plan).await?;

    report(&c).await
}

async fn report(c: &Cycle) -> Result<(), String> {
    println!("\n=== timeline (simulated time) ===");
    println!(
        "{:<40} {:>10} {:>9} {:<11} {:>8} {:>10} {:>9} {:>11}",
        "operation",
        "start",
        "took",
        "outcome",
        "launched",
        "terminated",
        "describes",
        "other calls"
    );
    for r in &c.rows {
        println!(
            "{:<40} {:>10} {:>9} {:<11} {:>8} {:>10} {:>9} {:>11}",
            r.name,
            c.clock(r.started),
            human(elapsed_between(r.started, r.finished)),
            r.outcome,
            r.launched,
            r.terminated,
            r.describe,
            r.other_calls
        );
    }
    for r in c.rows.iter().filter(|r| !r.note.is_empty()) {
        println!("  {}: {}", r.name, r.note);
    }
    let snap = c
        .phoenix
        .snapshot(&c.shop)
        .await
        .map_err(|e| e.to_string())?;
    println!("\n=== pools ===");
    for p in snap.pools_of(&c.web) {
        println!(
            "{:<14} release {:<3} {:<14} {:>5} server(s) running",
            p.id,
            p.release,
            p.state.to_string(),
            p.in_service().count()
        );
    }
    let members = c.cloud.members();
    let healthy = members.iter().filter(|m| m.is_serving_healthy()).count();
    let serving: std::collections::BTreeSet<String> = members
        .iter()
        .filter_map(|m| snap.owner_of(&m.server).map(|(p, _)| p.release.to_string()))
        .collect();
    let stats = c.cloud.stats();
    let (max_per_round, mean_per_round) = stats.describe_per_round();
    let history = c
        .cloud
        .store()
        .inner()
        .events("deployments/shop", 0, usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    let events: Vec<Event> = history
        .iter()
        .filter_map(|e| serde_json::from_slice(&e.payload).ok())
        .collect();
    let replaced = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::LaunchFailed { .. }))
        .count();
    println!("\n=== summary ===");
    println!("serving: {healthy} healthy member(s), release(s) {serving:?}");
    println!(
        "servers launched {}, failed launches replaced {replaced}, faults injected {}",
        stats.servers_launched, stats.faults_injected
    );
    println!(
        "describe calls per polling round: at most {max_per_round}, {mean_per_round:.2} on average ({} rounds)",
        stats.describe_rounds.len()
    );
    println!("events recorded: {}", events.len());
    let violations = c.cloud.violations();
    println!(
        "invariant violations seen by the simulated world: {}",
        violations.len()
    );
    for v in &violations {
        println!("  {v}");
    }
    let rolled_back = c
        .rows
        .iter()
        .any(|r| r.outcome == format!("{:?}", Outcome::RolledBack));
    if !violations.is_empty() || healthy != SERVERS || !rolled_back {
        return Err("the cycle did not end as expected".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = std::time::Instant::now();
    match runtime.block_on(cycle()) {
        Ok(()) => {
            println!("\ndone in {} of real time", human(started.elapsed()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nerror: {e}");
            ExitCode::FAILURE
        }
    }
}
