//! A second OS process shares the database file, writes under a lease and
//! is killed with SIGKILL mid-stream, the way an orchestrator dies. The
//! file must stay consistent (every commit whole or absent), the parent's
//! own writes must never fail meanwhile, and the dead process's lease must
//! fence it once someone else takes over.
//!
//! The test binary re-executes itself as the child, so it runs without the
//! libtest harness (`harness = false`) and prints libtest's summary line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use phoenix_core::ports::{Commit, EventAppend, Expect, StateStore, StoreError, Write};
use phoenix_state::SqliteStore;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};

const TEST_NAME: &str = "sigkilled_writer_leaves_a_consistent_store";
const CHILD_FLAG: &str = "--phoenix-state-child";
const COUNTER: &str = "child/counter";
const STREAM: &str = "child/increments";
const LEASE: &str = "child/writer";
const CHILD_TTL: Duration = Duration::from_millis(800);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == CHILD_FLAG) {
        let path = PathBuf::from(args.get(i + 1).expect("child needs a path"));
        runtime().block_on(child(&path));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("{TEST_NAME}: test");
        return;
    }
    // Positional arguments are libtest name filters.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| TEST_NAME.contains(f.as_str())) {
        println!("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out\n");
        return;
    }
    println!("\nrunning 1 test");
    runtime().block_on(parent());
    println!("test {TEST_NAME} ... ok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn text(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes).unwrap().parse().unwrap()
}

/// Increments the counter and appends one event per increment, fenced by
/// its lease, until killed (or, should the parent vanish, for 30 s).
async fn child(path: &Path) {
    let store = SqliteStore::open(path).await.unwrap();
    let mut lease = store
        .acquire_lease(LEASE, "child", CHILD_TTL)
        .await
        .unwrap();
    let stop = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut announced = false;
    while tokio::time::Instant::now() < stop {
        let current = store.get(COUNTER).await.unwrap().unwrap();
        let next = text(&current.value) + 1;
        store
            .commit(Commit {
                fence: Some(lease.fence()),
                writes: vec![Write {
                    key: COUNTER.into(),
                    expect: Expect::Version(current.version),
                    value: Some(next.to_string().into_bytes()),
                }],
                events: vec![EventAppend {
                    stream: STREAM.into(),
                    payload: next.to_string().into_bytes(),
                }],
            })
            .await
            .unwrap();
        lease = store.renew_lease(&lease, CHILD_TTL).await.unwrap();
        if !announced {
            println!("ready {}", lease.token);
            announced = true;
        }
    }
}

async fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .commit(Commit {
            writes: vec![Write {
                key: COUNTER.into(),
                expect: Expect::Absent,
                value: Some(b"0".to_vec()),
            }],
            ..Commit::default()
        })
        .await
        .unwrap();

    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .arg(CHILD_FLAG)
        .arg(&path)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("child announced itself in time")
        .unwrap()
        .expect("child wrote a line");
    let child_token: u64 = ready
        .strip_prefix("ready ")
        .expect("ready line")
        .parse()
        .unwrap();

    // Write alongside the child for a while: each process's writes queue on
    // the file's lock and none fails.
    let mut mine = 0u64;
    let until = tokio::time::Instant::now() + Duration::from_millis(400);
    while tokio::time::Instant::now() < until {
        mine += 1;
        store
            .commit(Commit {
                writes: vec![Write {
                    key: format!("parent/{mine}"),
                    expect: Expect::Absent,
                    value: Some(b"1".to_vec()),
                }],
                ..Commit::default()
            })
            .await
            .unwrap();
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child died on its own"
        );
    }
    child.kill().await.unwrap();

    let check = |store: SqliteStore| async move {
        let counter = store.get(COUNTER).await.unwrap().unwrap();
        let n = text(&counter.value);
        assert!(n >= 1, "the child committed");
        assert_eq!(counter.version, n + 1, "one version per increment");
        let events = store.events(STREAM, 0, usize::MAX).await.unwrap();
        assert_eq!(events.len() as u64, n, "one event per increment, none torn");
        for (i, e) in events.iter().enumerate() {
            assert_eq!((e.seq, text(&e.payload)), (i as u64 + 1, i as u64 + 1));
        }
        n
    };
    let n = check(store.clone()).await;
    eprintln!("child committed {n} increments before SIGKILL; the parent {mine} records meanwhile");
    assert_eq!(store.list("parent/").await.unwrap().len() as u64, mine);

    let mut conn = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path))
        .await
        .unwrap();
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    conn.close().await.unwrap();

    // The orchestrator is started again: a new process (here, a new pool)
    // opens the file, waits out the dead holder's lease and fences it.
    let rerun = SqliteStore::open(&path).await.unwrap();
    assert_eq!(check(rerun.clone()).await, n);
    let taken = loop {
        match rerun
            .acquire_lease(LEASE, "rerun", Duration::from_secs(30))
            .await
        {
            Ok(lease) => break lease,
            Err(StoreError::LeaseHeld { holder, .. }) => {
                assert_eq!(holder, "child");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("acquire failed: {e}"),
        }
    };
    assert!(taken.token > child_token);
    let stale = Commit {
        fence: Some(phoenix_core::ports::Fence {
            lease: LEASE.into(),
            token: child_token,
        }),
        writes: vec![Write {
            key: COUNTER.into(),
            expect: Expect::Any,
            value: Some(b"0".to_vec()),
        }],
        events: vec![],
    };
    assert!(matches!(
        rerun.commit(stale).await,
        Err(StoreError::Fenced { current, .. }) if current == taken.token
    ));
    rerun.close().await;
    store.close().await;
}
