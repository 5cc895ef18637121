//! Cutovers on the local stack, with real processes under load.
//!
//! Alternates 50 blue-green switches and 50 rollbacks to the hot standby
//! between two releases while a load generator sends 500 requests per
//! second through the embedded balancer, and prints: the cutover control
//! time (the balancer calls that move traffic; target < 1 ms), how long a
//! rollback to a hot standby takes end to end (target < 1 s), and the
//! failed requests across the 100 cutovers (target 0).
//!
//! `cargo bench -p benches --bench local_cutover`

use std::process::ExitCode;
use std::time::{Duration, Instant};

use examples::local::{serve_demo_app_if_asked, LocalStack, StackError, StackOptions};
use phoenix_lb::loadgen::{LoadGen, LoadGenConfig};

const CUTOVERS: usize = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

struct Cutover {
    control: Duration,
    moved: Duration,
    total: Duration,
}

async fn bench() -> Result<bool, StackError> {
    let dir = std::env::temp_dir().join(format!("phoenix-bench-{}", std::process::id()));
    let mut options = StackOptions::here()?;
    options.dir = dir.clone();
    options.holder = "bench".into();
    let mut policy = LocalStack::policy(3);
    policy.rollout.bake_time = Duration::from_millis(200);
    policy.rollout.drain = Duration::from_millis(300);
    options.policy = Some(policy);
    let stack = LocalStack::open(options).await?;
    let result = run(&stack).await;
    let _ = stack.teardown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(stack: &LocalStack) -> Result<bool, StackError> {
    let (d, role) = (stack.deployment.clone(), stack.role.clone());
    let v1 = "v1"
        .parse()
        .map_err(|e| StackError::Unexpected(format!("{e}")))?;
    let v2 = "v2"
        .parse()
        .map_err(|e| StackError::Unexpected(format!("{e}")))?;
    stack.release("v1").await?;
    stack.release("v2").await?;
    let plan = stack.phoenix.plan_deploy(&d, &role, &v1).await?;
    stack.phoenix.apply(plan).await?;
    // Both pools exist from here on: v2 provisioned, v1 its hot standby.
    let plan = stack.phoenix.plan_deploy(&d, &role, &v2).await?;
    stack.phoenix.apply(plan).await?;
    let target = stack
        .listen_addr()
        .ok_or_else(|| StackError::Unexpected("no balancer address".into()))?;
    let gen = LoadGen::start(LoadGenConfig {
        rate: 500,
        duration: Duration::from_secs(3600),
        concurrency: 16,
        fresh_ratio: 0.25,
        keepalive_max_age: Duration::from_millis(250),
        ..LoadGenConfig::new(target)
    })?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut switches = Vec::new();
    let mut rollbacks = Vec::new();
    for i in 0..CUTOVERS {
        // Odd: switch forward to v2; even: roll back to the hot standby.
        let rollback = i % 2 == 0;
        let plan = if rollback {
            stack.phoenix.plan_rollback(&d, &role, None).await?
        } else {
            stack.phoenix.plan_deploy(&d, &role, &v2).await?
        };
        let mark = Instant::now();
        stack.phoenix.apply(plan).await?;
        let total = mark.elapsed();
        let calls = stack.balancer.calls_since(mark);
        let control: Duration = calls.iter().map(|c| c.took).sum();
        let moved = calls
            .iter()
            .filter(|c| c.kind == "detach")
            .map(|c| c.at + c.took - mark)
            .max()
            .unwrap_or(total);
        let c = Cutover {
            control,
            moved,
            total,
        };
        if rollback {
            rollbacks.push(c);
        } else {
            switches.push(c);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let load = gen.stop_and_finish().await?;

    let mut control: Vec<Duration> = switches
        .iter()
        .chain(rollbacks.iter())
        .map(|c| c.control)
        .collect();
    control.sort();
    let mut rb_moved: Vec<Duration> = rollbacks.iter().map(|c| c.moved).collect();
    rb_moved.sort();
    let mut rb_total: Vec<Duration> = rollbacks.iter().map(|c| c.total).collect();
    rb_total.sort();
    let mut sw_total: Vec<Duration> = switches.iter().map(|c| c.total).collect();
    sw_total.sort();

    println!("local stack: 3 demo-app processes per pool, embedded balancer, {} cutovers under {:.0} req/s (2 cores shared by everything)", CUTOVERS, load.achieved_rate());
    println!("| {:<58} | {:>28} | {:>9} |", "measure", "value", "target");
    println!(
        "| {:<58} | {:>28} | {:>9} |",
        "cutover control time (balancer calls), median / p99",
        format!(
            "{} / {}",
            ms(percentile(&control, 0.5)),
            ms(percentile(&control, 0.99))
        ),
        "< 1 ms"
    );
    println!(
        "| {:<58} | {:>28} | {:>9} |",
        "rollback to hot standby: traffic moved, median / max",
        format!(
            "{} / {}",
            ms(percentile(&rb_moved, 0.5)),
            ms(percentile(&rb_moved, 1.0))
        ),
        "< 1 s"
    );
    println!(
        "| {:<58} | {:>28} | {:>9} |",
        "rollback to hot standby: operation incl. drain, median",
        ms(percentile(&rb_total, 0.5)),
        "-"
    );
    println!(
        "| {:<58} | {:>28} | {:>9} |",
        "blue-green switch to a standby pool, median (bake 200 ms)",
        ms(percentile(&sw_total, 0.5)),
        "-"
    );
    println!(
        "| {:<58} | {:>28} | {:>9} |",
        "requests sent / failed across the cutovers",
        format!("{} / {}", load.sent, load.failed),
        "0 failed"
    );
    println!(
        "latency p50 {} p99 {}; retried after a connection closed before any answer: {}",
        ms(load.latency.p50),
        ms(load.latency.p99),
        load.retried()
    );
    Ok(percentile(&control, 0.5) < Duration::from_millis(1)
        && percentile(&rb_moved, 0.5) < Duration::from_secs(1)
        && load.failed == 0)
}

fn main() -> ExitCode {
    if let Some(code) = serve_demo_app_if_asked() {
        return code;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(bench()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("a target was missed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}", phoenix_core::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
