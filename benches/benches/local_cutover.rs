//! Cutovers on the local stack, with real processes under load, on the
//! embedded balancer and on HAProxy.
//!
//! On each balancer, alternates 50 blue-green switches and 50 rollbacks to
//! the hot standby between two releases while a load generator sends 500
//! requests per second through it, and prints: the cutover control time
//! (the balancer calls that move traffic; target < 1 ms embedded), how
//! long after the decision to roll back the traffic has moved to the hot
//! standby (from the call that plans the rollback until the balancer call
//! that takes the last traffic off the other pool returns; target < 5 ms
//! median embedded, < 20 ms HAProxy: the standby stayed on the balancer
//! under its checks, so nothing is checked again), the whole rollback, and
//! the failed requests across the 100 cutovers (target 0). With
//! `PHOENIX_BENCH_CUTOVERS=N`, N cutovers instead of 100. HAProxy is
//! skipped (and said so) when no haproxy binary is found.
//!
//! `cargo bench -p benches --bench local_cutover`

use std::process::ExitCode;
use std::time::{Duration, Instant};

use examples::local::{serve_demo_app_if_asked, BalancerChoice, LocalStack, StackError};
use phoenix_lb::loadgen::{LoadGen, LoadGenConfig};

fn cutovers() -> usize {
    std::env::var("PHOENIX_BENCH_CUTOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// Kinds of balancer calls after which no traffic goes to the pool that
/// leaves.
const MOVES: [&str; 4] = ["detach", "standby", "swap", "swap_standby"];

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

/// One balancer's figures.
struct Figures {
    name: &'static str,
    moved_target: Duration,
    control: Vec<Duration>,
    rb_moved: Vec<Duration>,
    rb_total: Vec<Duration>,
    sw_total: Vec<Duration>,
    sent: u64,
    failed: u64,
    rate: f64,
}

async fn bench(name: &'static str, choice: BalancerChoice) -> Result<Figures, StackError> {
    let dir = std::env::temp_dir().join(format!("phoenix-bench-{}-{name}", std::process::id()));
    let mut options = examples::local::options()?;
    options.dir = dir.clone();
    options.holder = "bench".into();
    options.balancer = choice;
    let mut policy = LocalStack::policy(3);
    policy.rollout.bake_time = Duration::from_millis(200);
    policy.rollout.drain = Duration::from_millis(300);
    options.policy = Some(policy);
    let stack = LocalStack::open(options).await?;
    let result = run(&stack, name).await;
    let _ = stack.teardown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(stack: &LocalStack, name: &'static str) -> Result<Figures, StackError> {
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
    })
    .map_err(|e| StackError::Unexpected(format!("the load generator failed: {e}")))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut switches = Vec::new();
    let mut rollbacks = Vec::new();
    for i in 0..cutovers() {
        // Odd: switch forward to v2; even: roll back to the hot standby.
        let rollback = i % 2 == 0;
        // The decision: from here the traffic must move.
        let mark = Instant::now();
        let plan = if rollback {
            stack.phoenix.plan_rollback(&d, &role, None).await?
        } else {
            stack.phoenix.plan_deploy(&d, &role, &v2).await?
        };
        stack.phoenix.apply(plan).await?;
        let total = mark.elapsed();
        let calls = stack.balancer.calls_since(mark);
        if std::env::var_os("PHOENIX_BENCH_TRACE").is_some() {
            let line: Vec<String> = calls
                .iter()
                .map(|c| {
                    format!(
                        "{}@{:.2}ms+{:.2}",
                        c.kind,
                        (c.at - mark).as_secs_f64() * 1e3,
                        c.took.as_secs_f64() * 1e3
                    )
                })
                .collect();
            eprintln!(
                "{} {}: {}",
                if rollback { "rollback" } else { "switch" },
                name,
                line.join(" ")
            );
        }
        let control: Duration = calls.iter().map(|c| c.took).sum();
        let moved = calls
            .iter()
            .filter(|c| MOVES.contains(&c.kind))
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
    let load = gen
        .stop_and_finish()
        .await
        .map_err(|e| StackError::Unexpected(format!("the load generator failed: {e}")))?;
    let both: Vec<&Cutover> = switches.iter().chain(rollbacks.iter()).collect();
    let by = |f: fn(&Cutover) -> Duration, v: &[&Cutover]| {
        let mut out: Vec<Duration> = v.iter().map(|c| f(c)).collect();
        out.sort();
        out
    };
    let rb: Vec<&Cutover> = rollbacks.iter().collect();
    let sw: Vec<&Cutover> = switches.iter().collect();
    Ok(Figures {
        name,
        moved_target: if name == "embedded" {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(20)
        },
        control: by(|c| c.control, &both),
        rb_moved: by(|c| c.moved, &rb),
        rb_total: by(|c| c.total, &rb),
        sw_total: by(|c| c.total, &sw),
        sent: load.sent,
        failed: load.failed,
        rate: load.achieved_rate(),
    })
}

fn report(figures: &[Figures]) -> bool {
    println!(
        "local stack: 3 demo-app processes per pool, {} cutovers per balancer (half rollbacks to the hot standby) under 500 req/s (2 cores shared by everything)",
        cutovers()
    );
    println!(
        "| {:<10} | {:<52} | {:>24} | {:>9} |",
        "balancer", "measure", "value", "target"
    );
    let mut met = true;
    for f in figures {
        let row = |what: &str, value: String, target: &str| {
            println!(
                "| {:<10} | {:<52} | {:>24} | {:>9} |",
                f.name, what, value, target
            );
        };
        row(
            "cutover control time (balancer calls), median / p99",
            format!(
                "{} / {}",
                ms(percentile(&f.control, 0.5)),
                ms(percentile(&f.control, 0.99))
            ),
            if f.name == "embedded" { "< 1 ms" } else { "-" },
        );
        row(
            "rollback to hot standby: traffic moved after decision, median / max",
            format!(
                "{} / {}",
                ms(percentile(&f.rb_moved, 0.5)),
                ms(percentile(&f.rb_moved, 1.0))
            ),
            &format!("< {} ms", f.moved_target.as_millis()),
        );
        row(
            "rollback to hot standby: whole operation incl. drain, median",
            ms(percentile(&f.rb_total, 0.5)),
            "-",
        );
        row(
            "blue-green switch to a standby pool, median (bake 200 ms)",
            ms(percentile(&f.sw_total, 0.5)),
            "-",
        );
        row(
            "requests sent / failed across the cutovers",
            format!("{} / {} ({:.0} req/s)", f.sent, f.failed, f.rate),
            "0 failed",
        );
        met &= percentile(&f.rb_moved, 0.5) < f.moved_target && f.failed == 0;
        if f.name == "embedded" {
            met &= percentile(&f.control, 0.5) < Duration::from_millis(1);
        }
    }
    met
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
    let result = rt.block_on(async {
        let mut figures = vec![
            bench(
                "embedded",
                BalancerChoice::Embedded {
                    listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                    admin: None,
                },
            )
            .await?,
        ];
        let haproxy = phoenix_lb::haproxy::binary_from_env();
        if std::process::Command::new(&haproxy)
            .arg("-v")
            .output()
            .is_ok()
        {
            figures.push(bench("haproxy", BalancerChoice::Haproxy).await?);
        } else {
            println!(
                "haproxy skipped: {} does not run (set PHOENIX_HAPROXY)",
                haproxy.display()
            );
        }
        Ok::<_, StackError>(figures)
    });
    match result {
        Ok(figures) if report(&figures) => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("a target was missed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}", phoenix_core::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
