//! The embedded balancer and HAProxy side by side, in one run, under the
//! same load.
//!
//! Four in-process hyper backends; a load generator with 32 workers, each
//! with one request in flight at a time and no rate limit (a closed loop),
//! a quarter of the requests on fresh connections and the rest on
//! kept-alive ones. Each balancer gets the same load in alternating rounds
//! (so that whatever else runs on the machine weighs on all of them
//! alike): the embedded balancer, HAProxy in `mode tcp` (a relay, as the
//! embedded balancer is) and HAProxy in `mode http` (what most HAProxy
//! users run), each with one thread and with two (on two shared cores one
//! thread is often faster: the load generator and the backends need the
//! cores too). Then 50 cutovers of a 10-member pool on each: the control
//! time is that of `attach(10 new)` plus `detach(10 old)` returning (the
//! wait for the new members' checks in between is not counted; there is
//! no load during this part, so HAProxy's drains end at their first look).
//!
//! Then 50 rollbacks to a hot standby on each: the standby pool stayed on
//! the balancer under its checks (`standby`), so a rollback is a fresh
//! read that finds every standby member checked within the check
//! interval, `attach(10 standby)` and `standby(10 serving)`: the time
//! from the decision until that last call returns, with no wait for
//! checks.
//!
//! Targets (exit status 1 if one is missed): the embedded balancer's
//! throughput at least 80% of HAProxy's best configuration; HAProxy's cutover
//! control time under 10 ms for 10 members (median); the embedded
//! balancer's under 1 ms (median); a rollback to a hot standby under 5 ms
//! on the embedded balancer and under 20 ms on HAProxy (median); no
//! failed request anywhere. Exit status
//! 2 when the run itself cannot happen (no haproxy: install it or set
//! `PHOENIX_HAPROXY`).
//!
//! `cargo bench -p benches --bench lb_side_by_side`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use phoenix_core::id::ServerId;
use phoenix_core::ports::{LoadBalancer, Member, Target};
use phoenix_lb::embedded::{EmbeddedBalancer, HealthCheck};
use phoenix_lb::haproxy::{ConnectionMode, HaproxyBalancer, LocalHaproxy, Mode, ServerCheck};
use phoenix_lb::loadgen::{LoadGen, LoadGenConfig, LoadReport};
use phoenix_lb::RELEASE_HEADER;
use tokio::net::TcpListener;

const BACKENDS: usize = 4;
const WORKERS: u32 = 32;
const ROUNDS: usize = 2;
const ROUND: Duration = Duration::from_secs(5);
const SWAPS: usize = 50;
const POOL: usize = 10;
const PER_COMMAND_SWAPS: usize = 10;
const CHECK_EVERY: Duration = Duration::from_millis(20);

/// A hyper HTTP/1.1 server on 127.0.0.1: `/health` and everything else
/// answer 200 with the release header.
async fn backend(release: &'static str) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("binding a backend: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("backend address: {e}"))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header(RELEASE_HEADER, release)
                            .body(Full::new(Bytes::from_static(b"ok\n")))
                            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn backends(prefix: &str, n: usize, release: &'static str) -> Result<Vec<Target>, String> {
    let mut targets = Vec::with_capacity(n);
    for i in 0..n {
        let endpoint = backend(release).await?;
        let server = ServerId::new(format!("{prefix}-{i}")).map_err(|e| e.to_string())?;
        targets.push(Target { server, endpoint });
    }
    Ok(targets)
}

async fn wait_healthy(lb: &dyn LoadBalancer, targets: &[Target]) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let members = lb.members().await.map_err(|e| e.chain())?;
        let healthy = targets.iter().all(|t| {
            members
                .iter()
                .any(|m| m.server == t.server && Member::is_serving_healthy(m))
        });
        if healthy {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("members not healthy within 10 s: {members:?}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One balancer under test.
struct Subject {
    name: &'static str,
    addr: SocketAddr,
    lb: Box<dyn LoadBalancer>,
    rounds: Vec<LoadReport>,
    control: Vec<Duration>,
    rollbacks: Vec<Duration>,
    haproxy: Option<LocalHaproxy>,
}

impl Subject {
    fn ok(&self) -> u64 {
        self.rounds.iter().map(|r| r.ok).sum()
    }
    fn failed(&self) -> u64 {
        self.rounds.iter().map(|r| r.failed).sum()
    }
    fn rps(&self) -> f64 {
        let secs: f64 = self.rounds.iter().map(|r| r.elapsed.as_secs_f64()).sum();
        if secs > 0.0 {
            self.ok() as f64 / secs
        } else {
            0.0
        }
    }
    /// Mean of the rounds' medians.
    fn p50(&self) -> Duration {
        let n = self.rounds.len().max(1) as u32;
        self.rounds.iter().map(|r| r.latency.p50).sum::<Duration>() / n
    }
    /// The worst round's 99th percentile.
    fn p99(&self) -> Duration {
        self.rounds
            .iter()
            .map(|r| r.latency.p99)
            .max()
            .unwrap_or_default()
    }
}

fn sorted(mut v: Vec<Duration>) -> Vec<Duration> {
    v.sort();
    v
}

fn median(v: &[Duration]) -> Duration {
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn load(addr: SocketAddr) -> LoadGenConfig {
    LoadGenConfig {
        rate: 1_000_000,
        concurrency: WORKERS,
        duration: ROUND,
        fresh_ratio: 0.25,
        keepalive_max_requests: 100,
        keepalive_max_age: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        ..LoadGenConfig::new(addr)
    }
}

async fn haproxy_subject(
    name: &'static str,
    mode: Mode,
    threads: u32,
    targets: &[Target],
) -> Result<Subject, String> {
    let h = LocalHaproxy::builder()
        .mode(mode)
        .threads(threads)
        .start()
        .await
        .map_err(|e| phoenix_core::error_chain(&e))?;
    let lb = h
        .balancer()
        .check(Some(ServerCheck::new(CHECK_EVERY, 1, 3)))
        .build()
        .map_err(|e| e.to_string())?;
    lb.attach(targets).await.map_err(|e| e.chain())?;
    wait_healthy(&lb, targets).await?;
    Ok(Subject {
        name,
        addr: h.frontend_addr(),
        lb: Box::new(lb),
        rounds: Vec::new(),
        control: Vec::new(),
        rollbacks: Vec::new(),
        haproxy: Some(h),
    })
}

/// `swaps` cutovers between two fresh pools of `POOL` members, after the
/// subject's throughput members are detached; returns the control times.
async fn cutovers(lb: &dyn LoadBalancer, tag: &str, swaps: usize) -> Result<Vec<Duration>, String> {
    let blue = backends(&format!("{tag}-blue"), POOL, "blue").await?;
    let green = backends(&format!("{tag}-green"), POOL, "green").await?;
    let ids = |pool: &[Target]| pool.iter().map(|t| t.server.clone()).collect::<Vec<_>>();
    let drain = Duration::from_secs(5);
    lb.attach(&blue).await.map_err(|e| e.chain())?;
    wait_healthy(lb, &blue).await?;
    let mut control = Vec::with_capacity(swaps);
    for i in 0..swaps {
        let (to, from) = if i % 2 == 0 {
            (&green, &blue)
        } else {
            (&blue, &green)
        };
        let t = Instant::now();
        lb.attach(to).await.map_err(|e| e.chain())?;
        let attach = t.elapsed();
        wait_healthy(lb, to).await?;
        let t = Instant::now();
        lb.detach(&ids(from), drain).await.map_err(|e| e.chain())?;
        control.push(attach + t.elapsed());
    }
    let last = if swaps % 2 == 0 { &blue } else { &green };
    lb.detach(&ids(last), drain).await.map_err(|e| e.chain())?;
    Ok(control)
}

/// Waits until every member of `pool` is a standby whose health is
/// fresh evidence.
async fn wait_checked_standby(lb: &dyn LoadBalancer, pool: &[Target]) -> Result<(), String> {
    let interval = lb
        .capabilities()
        .check_interval
        .ok_or("the balancer declares no check interval")?;
    let start = Instant::now();
    loop {
        let members = lb.members().await.map_err(|e| e.chain())?;
        if pool.iter().all(|t| {
            members
                .iter()
                .any(|m| m.server == t.server && m.is_checked_standby(interval))
        }) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("standby not checked within 10 s: {members:?}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `rollbacks` rollbacks between two pools of `POOL` members, each to the
/// hot standby the other left: the fresh read that shows the standby
/// checked, `attach` of the standby, `standby` of the serving pool.
/// Returns the times from the decision until the traffic has moved.
async fn standby_rollbacks(
    lb: &dyn LoadBalancer,
    tag: &str,
    rollbacks: usize,
) -> Result<Vec<Duration>, String> {
    if !lb.capabilities().keeps_standby {
        return Err("the balancer keeps no standby members".into());
    }
    let blue = backends(&format!("{tag}-sb-blue"), POOL, "blue").await?;
    let green = backends(&format!("{tag}-sb-green"), POOL, "green").await?;
    let ids = |pool: &[Target]| pool.iter().map(|t| t.server.clone()).collect::<Vec<_>>();
    let drain = Duration::from_secs(5);
    lb.attach(&blue).await.map_err(|e| e.chain())?;
    lb.attach(&green).await.map_err(|e| e.chain())?;
    wait_healthy(lb, &blue).await?;
    wait_healthy(lb, &green).await?;
    lb.standby(&ids(&green), drain)
        .await
        .map_err(|e| e.chain())?;
    let interval = lb
        .capabilities()
        .check_interval
        .ok_or("the balancer declares no check interval")?;
    let mut times = Vec::with_capacity(rollbacks);
    for i in 0..rollbacks {
        let (to, from) = if i % 2 == 0 {
            (&green, &blue)
        } else {
            (&blue, &green)
        };
        wait_checked_standby(lb, to).await?;
        let t = Instant::now();
        let members = lb.members().await.map_err(|e| e.chain())?;
        let fresh = to.iter().all(|s| {
            members
                .iter()
                .any(|m| m.server == s.server && m.is_checked_standby(interval))
        });
        if !fresh {
            return Err(format!(
                "standby {tag} not fresh at the decision: {members:?}"
            ));
        }
        lb.attach(to).await.map_err(|e| e.chain())?;
        lb.standby(&ids(from), drain).await.map_err(|e| e.chain())?;
        times.push(t.elapsed());
    }
    lb.detach(&ids(&blue), drain).await.map_err(|e| e.chain())?;
    lb.detach(&ids(&green), drain)
        .await
        .map_err(|e| e.chain())?;
    Ok(times)
}

fn haproxy_version() -> String {
    let binary = phoenix_lb::haproxy::binary_from_env();
    std::process::Command::new(&binary)
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| format!("{} (version unknown)", binary.display()))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.split_whitespace().take(3).collect();
            (f.len() == 3).then(|| f.join(" "))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

async fn bench() -> Result<bool, String> {
    let targets = backends("tp", BACKENDS, "v1").await?;
    let embedded = EmbeddedBalancer::builder()
        .health_check(HealthCheck::http_get("/health"))
        .check_interval(CHECK_EVERY)
        .rise(1)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let embedded_addr = embedded.local_addr();
    embedded.attach(&targets).await.map_err(|e| e.chain())?;
    wait_healthy(&embedded, &targets).await?;
    let mut subjects = vec![
        Subject {
            name: "embedded",
            addr: embedded_addr,
            lb: Box::new(embedded),
            rounds: Vec::new(),
            control: Vec::new(),
            rollbacks: Vec::new(),
            haproxy: None,
        },
        haproxy_subject("haproxy tcp, 1 thread", Mode::Tcp, 1, &targets).await?,
        haproxy_subject("haproxy tcp, 2 threads", Mode::Tcp, 2, &targets).await?,
        haproxy_subject("haproxy http, 1 thread", Mode::Http, 1, &targets).await?,
        haproxy_subject("haproxy http, 2 threads", Mode::Http, 2, &targets).await?,
    ];

    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!("lb_side_by_side: {}", haproxy_version());
    println!(
        "{cpus} CPU cores shared by everything: the load generator ({WORKERS} workers, closed loop, \
         25% fresh connections), {BACKENDS} in-process hyper backends and the balancer \
         (embedded: in this process's 2-thread tokio runtime; HAProxy: its own process, 1 or 2 threads). \
         Load average at start: {}",
        load_average()
    );
    println!(
        "{ROUNDS} alternating rounds of {ROUND:?} per balancer; cutover = attach({POOL} new) + \
         detach({POOL} old) returning, {SWAPS} times, no load; release build"
    );
    for round in 0..ROUNDS {
        for s in &mut subjects {
            let report = LoadGen::run(load(s.addr))
                .await
                .map_err(|e| phoenix_core::error_chain(&e))?;
            eprintln!("round {round} {}: {report}", s.name);
            s.rounds.push(report);
        }
    }
    for (i, s) in subjects.iter_mut().enumerate() {
        let ids: Vec<ServerId> = targets.iter().map(|t| t.server.clone()).collect();
        s.lb.detach(&ids, Duration::from_secs(1))
            .await
            .map_err(|e| e.chain())?;
        s.control = sorted(cutovers(s.lb.as_ref(), &format!("c{i}"), SWAPS).await?);
        s.rollbacks = sorted(standby_rollbacks(s.lb.as_ref(), &format!("r{i}"), SWAPS).await?);
    }
    // The same cutovers with one connection per command, for the record.
    let per_command = {
        let h = LocalHaproxy::builder()
            .start()
            .await
            .map_err(|e| phoenix_core::error_chain(&e))?;
        let lb = HaproxyBalancer::builder()
            .runtime_api(h.runtime_addr())
            .backend(h.backend())
            .connection_mode(ConnectionMode::PerCommand)
            .check(Some(ServerCheck::new(CHECK_EVERY, 1, 3)))
            .build()
            .map_err(|e| e.to_string())?;
        let times = sorted(cutovers(&lb, "pc", PER_COMMAND_SWAPS).await?);
        let _ = h.stop().await;
        times
    };

    println!();
    println!(
        "| {:<23} | {:>9} | {:>9} | {:>9} | {:>6} | {:>16} | {:>13} | {:>17} |",
        "balancer",
        "req/s",
        "p50",
        "p99",
        "failed",
        "cutover median",
        "cutover max",
        "rollback median"
    );
    println!(
        "|{:-<25}|{:->11}|{:->11}|{:->11}|{:->8}|{:->18}|{:->15}|{:->19}|",
        "", "", "", "", "", "", "", ""
    );
    for s in &subjects {
        println!(
            "| {:<23} | {:>9.0} | {:>9} | {:>9} | {:>6} | {:>16} | {:>13} | {:>17} |",
            s.name,
            s.rps(),
            fmt_ms(s.p50()),
            fmt_ms(s.p99()),
            s.failed(),
            fmt_ms(median(&s.control)),
            fmt_ms(s.control.last().copied().unwrap_or_default()),
            fmt_ms(median(&s.rollbacks)),
        );
    }
    println!(
        "(p50: mean of the rounds' medians; p99: the worst round's. HAProxy cutovers with one \
         connection per command instead of the kept-alive session: median {}, max {} over {PER_COMMAND_SWAPS})",
        fmt_ms(median(&per_command)),
        fmt_ms(per_command.last().copied().unwrap_or_default()),
    );

    let embedded = &subjects[0];
    let mut met = true;
    let mut target = |ok: bool, what: String| {
        println!("target {}: {what}", if ok { "met" } else { "MISSED" });
        met &= ok;
    };
    let best = subjects[1..]
        .iter()
        .max_by(|a, b| a.rps().total_cmp(&b.rps()))
        .ok_or("no HAProxy measured")?;
    let ratio = embedded.rps() / best.rps().max(1.0);
    target(
        ratio >= 0.8,
        format!(
            "embedded throughput ≥ 80% of HAProxy's best ({}): {:.0}%",
            best.name,
            ratio * 100.0
        ),
    );
    for h in &subjects[1..] {
        target(
            median(&h.control) < Duration::from_millis(10),
            format!(
                "{} cutover control time < 10 ms for {POOL} members: median {}",
                h.name,
                fmt_ms(median(&h.control))
            ),
        );
    }
    for h in &subjects[1..] {
        target(
            median(&h.rollbacks) < Duration::from_millis(20),
            format!(
                "{} rollback to a hot standby of {POOL} members < 20 ms: median {}",
                h.name,
                fmt_ms(median(&h.rollbacks))
            ),
        );
    }
    target(
        median(&embedded.rollbacks) < Duration::from_millis(5),
        format!(
            "embedded rollback to a hot standby of {POOL} members < 5 ms: median {}",
            fmt_ms(median(&embedded.rollbacks))
        ),
    );
    target(
        median(&embedded.control) < Duration::from_millis(1),
        format!(
            "embedded cutover control time < 1 ms: median {}",
            fmt_ms(median(&embedded.control))
        ),
    );
    let failed: u64 = subjects.iter().map(Subject::failed).sum();
    target(failed == 0, format!("no failed request: {failed} failed"));
    for s in subjects {
        if let Some(h) = s.haproxy {
            let _ = h.stop().await;
        }
    }
    Ok(met)
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; anything else is ignored.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lb_side_by_side: no tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(bench()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("lb_side_by_side could not run: {e}");
            ExitCode::from(2)
        }
    }
}
