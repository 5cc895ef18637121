//! State store throughput and lease latency, SQLite and PostgreSQL side by
//! side, printed as a table:
//!
//! - single-record compare-and-swap commits per second;
//! - commits per second of a realistic executor commit: the deployment
//!   header and a pool record of about 50 KB, both compare-and-swap, and 3
//!   events, fenced by the deployment's lease;
//! - event appends per second (one event per commit);
//! - lease acquire + release latency, p50 and p99.
//!
//! Each is measured over a fixed count, by one writer (as the executor
//! writes). SQLite is a file in WAL mode on the local disk; PostgreSQL is
//! the server `PHOENIX_TEST_PG_URL` names (the test script's, on loopback),
//! in a schema of its own dropped afterwards; without it the table says so.
//!
//! ```text
//! cargo bench -p benches --bench state_store
//! ```

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use phoenix_core::ports::{Commit, EventAppend, Expect, Fence, StateStore, Write};
use phoenix_state::{PostgresStore, SqliteStore};

const CAS_COMMITS: u64 = 2_000;
const EXECUTOR_COMMITS: u64 = 500;
const EVENT_APPENDS: u64 = 3_000;
const LEASE_CYCLES: usize = 1_000;

/// What one back end measured.
struct Results {
    cas_per_s: f64,
    executor_per_s: f64,
    appends_per_s: f64,
    lease_p50: Duration,
    lease_p99: Duration,
}

#[derive(Debug)]
struct BenchError(String);

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

fn fail(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError(format!("{what}: {e}"))
}

/// A pool record of about 50 KB: slots as the executor records them.
fn pool_record(version: u64) -> Vec<u8> {
    let mut s = format!("{{\"id\":\"web-v2-7\",\"version\":{version},\"slots\":[");
    let mut i = 0;
    while s.len() < 50 * 1024 {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"index\":{i},\"attempt\":0,\"token\":\"op-20250101T000000-0000abcd/web-v2-7/{i}/0\",\
             \"state\":\"running\",\"server\":\"srv-{i:016x}\",\"endpoint\":\"10.0.{}.{}:8080\",\
             \"requested_at\":\"2025-01-01T00:00:00Z\",\"launched_at\":\"2025-01-01T00:00:01Z\",\
             \"healthy\":true,\"verified\":true,\"warmed\":true,\"drained\":false,\
             \"traffic\":\"attached\",\"baked_at\":null,\"replaces\":null,\"last_failure\":null}}",
            i / 250,
            i % 250
        );
        i += 1;
    }
    s.push_str("]}");
    s.into_bytes()
}

fn header_record(generation: u64) -> Vec<u8> {
    let ops: Vec<String> = (0..40)
        .map(|i| format!("\"op-20250101T0000{i:02}-0000abcd\""))
        .collect();
    format!(
        "{{\"generation\":{generation},\"active_operation\":\"op-1\",\"pools\":[\"web-v1-1\",\"web-v2-7\"],\
         \"operations\":[{}],\"next_pool_seq\":8,\"replacements\":[]}}",
        ops.join(",")
    )
    .into_bytes()
}

fn event(i: u64, kind: &str) -> EventAppend {
    EventAppend {
        stream: "deployments/bench".into(),
        payload: format!(
            "{{\"at\":\"2025-01-01T00:00:00Z\",\"deployment\":\"bench\",\"operation\":\"op-1\",\
             \"event\":\"{kind}\",\"pool\":\"web-v2-7\",\"slot\":{i},\"server\":\"srv-{i:016x}\"}}"
        )
        .into_bytes(),
    }
}

async fn measure(store: &dyn StateStore) -> Result<Results, BenchError> {
    // Single-record CAS commits.
    let key = "bench/cas";
    let mut version = store
        .commit(Commit {
            writes: vec![Write {
                key: key.into(),
                expect: Expect::Any,
                value: Some(b"0".to_vec()),
            }],
            ..Commit::default()
        })
        .await
        .map_err(|e| fail("seed", e))?[0];
    let started = Instant::now();
    for i in 0..CAS_COMMITS {
        version = store
            .commit(Commit {
                writes: vec![Write {
                    key: key.into(),
                    expect: Expect::Version(version),
                    value: Some(i.to_string().into_bytes()),
                }],
                ..Commit::default()
            })
            .await
            .map_err(|e| fail("CAS commit", e))?[0];
    }
    let cas_per_s = CAS_COMMITS as f64 / started.elapsed().as_secs_f64();

    // Realistic executor commits, fenced.
    let lease = store
        .acquire_lease("deployments/bench", "bench", Duration::from_secs(600))
        .await
        .map_err(|e| fail("acquire", e))?;
    let fence = Fence {
        lease: lease.name.clone(),
        token: lease.token,
    };
    let seeded = store
        .commit(Commit {
            writes: vec![
                Write {
                    key: "deployments/bench".into(),
                    expect: Expect::Any,
                    value: Some(header_record(0)),
                },
                Write {
                    key: "deployments/bench/pools/web-v2-7".into(),
                    expect: Expect::Any,
                    value: Some(pool_record(0)),
                },
            ],
            ..Commit::default()
        })
        .await
        .map_err(|e| fail("seed", e))?;
    let (mut hv, mut pv) = (seeded[0], seeded[1]);
    let started = Instant::now();
    for i in 0..EXECUTOR_COMMITS {
        let v = store
            .commit(Commit {
                fence: Some(fence.clone()),
                writes: vec![
                    Write {
                        key: "deployments/bench".into(),
                        expect: Expect::Version(hv),
                        value: Some(header_record(i + 1)),
                    },
                    Write {
                        key: "deployments/bench/pools/web-v2-7".into(),
                        expect: Expect::Version(pv),
                        value: Some(pool_record(i + 1)),
                    },
                ],
                events: vec![
                    event(i, "step_started"),
                    event(i, "server_attached"),
                    event(i, "step_finished"),
                ],
            })
            .await
            .map_err(|e| fail("executor commit", e))?;
        (hv, pv) = (v[0], v[1]);
    }
    let executor_per_s = EXECUTOR_COMMITS as f64 / started.elapsed().as_secs_f64();
    store
        .release_lease(&lease)
        .await
        .map_err(|e| fail("release", e))?;

    // Event appends, one per commit.
    let started = Instant::now();
    for i in 0..EVENT_APPENDS {
        store
            .commit(Commit {
                events: vec![EventAppend {
                    stream: "bench/appends".into(),
                    ..event(i, "server_healthy")
                }],
                ..Commit::default()
            })
            .await
            .map_err(|e| fail("append", e))?;
    }
    let appends_per_s = EVENT_APPENDS as f64 / started.elapsed().as_secs_f64();

    // Lease acquire + release.
    let mut took = Vec::with_capacity(LEASE_CYCLES);
    for i in 0..LEASE_CYCLES {
        let started = Instant::now();
        let l = store
            .acquire_lease(
                "bench/lease",
                &format!("holder-{}", i % 4),
                Duration::from_secs(60),
            )
            .await
            .map_err(|e| fail("acquire", e))?;
        store
            .release_lease(&l)
            .await
            .map_err(|e| fail("release", e))?;
        took.push(started.elapsed());
    }
    took.sort();
    let pct = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
    Ok(Results {
        cas_per_s,
        executor_per_s,
        appends_per_s,
        lease_p50: pct(0.50),
        lease_p99: pct(0.99),
    })
}

fn rate(r: &Result<Results, String>, f: impl Fn(&Results) -> f64) -> String {
    match r {
        Ok(r) => format!("{:.0}/s", f(r)),
        Err(e) => e.clone(),
    }
}

fn latency(r: &Result<Results, String>, f: impl Fn(&Results) -> Duration) -> String {
    match r {
        Ok(r) => format!("{:.3} ms", f(r).as_secs_f64() * 1000.0),
        Err(e) => e.clone(),
    }
}

async fn sqlite() -> Result<Results, BenchError> {
    let dir = tempfile::tempdir().map_err(|e| fail("temporary directory", e))?;
    let store = SqliteStore::open(dir.path().join("bench.sqlite"))
        .await
        .map_err(|e| fail("open SQLite", e))?;
    let result = measure(&store).await;
    store.close().await;
    result
}

async fn postgres() -> Result<(Results, String), BenchError> {
    let base = std::env::var("PHOENIX_TEST_PG_URL")
        .map_err(|_| BenchError("not measured: PHOENIX_TEST_PG_URL is not set".into()))?;
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}schema=bench_{}", std::process::id());
    let store = PostgresStore::connect(&url)
        .await
        .map_err(|e| fail("open PostgreSQL", phoenix_core::error_chain(&e)))?;
    let target = store.target().to_owned();
    let result = measure(&store).await;
    store
        .drop_schema()
        .await
        .map_err(|e| fail("drop the bench schema", e))?;
    result.map(|r| (r, target))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (lite, pg) = runtime.block_on(async {
        let lite = sqlite().await.map_err(|e| e.to_string());
        let pg = postgres().await.map_err(|e| e.to_string());
        (lite, pg)
    });
    let pg_target = pg
        .as_ref()
        .map_or_else(|_| "-".to_owned(), |(_, t)| t.clone());
    let pg = pg.map(|(r, _)| r);
    println!("\nstate store benchmark (one writer; counts: {CAS_COMMITS} CAS commits, {EXECUTOR_COMMITS} executor commits, {EVENT_APPENDS} appends, {LEASE_CYCLES} lease cycles)");
    println!("PostgreSQL: {pg_target}");
    println!(
        "durability: SQLite synchronous=NORMAL in WAL mode (no fsync per commit); \
         PostgreSQL as configured (by default an fsync of its WAL per commit)\n"
    );
    println!(
        "| {:<46} | {:>20} | {:>20} |",
        "measure", "SQLite (file, WAL)", "PostgreSQL"
    );
    println!("|{:-<48}|{:-<22}|{:-<22}|", "", "", "");
    let rows: Vec<(&str, String, String)> = vec![
        (
            "single-record CAS commits",
            rate(&lite, |r| r.cas_per_s),
            rate(&pg, |r| r.cas_per_s),
        ),
        (
            "executor commits (header + 50 KB pool + 3 ev)",
            rate(&lite, |r| r.executor_per_s),
            rate(&pg, |r| r.executor_per_s),
        ),
        (
            "event appends (1 per commit)",
            rate(&lite, |r| r.appends_per_s),
            rate(&pg, |r| r.appends_per_s),
        ),
        (
            "lease acquire + release, p50",
            latency(&lite, |r| r.lease_p50),
            latency(&pg, |r| r.lease_p50),
        ),
        (
            "lease acquire + release, p99",
            latency(&lite, |r| r.lease_p99),
            latency(&pg, |r| r.lease_p99),
        ),
    ];
    for (name, a, b) in rows {
        println!("| {name:<46} | {a:>20} | {b:>20} |");
    }
    if let Err(e) = &lite {
        return Err(Box::new(BenchError(format!("SQLite: {e}"))));
    }
    Ok(())
}
