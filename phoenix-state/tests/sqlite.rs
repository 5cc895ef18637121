//! The SQLite store against the port's conformance suite, and what the
//! suite cannot see: files, reopening, several pools on one file,
//! migrations, lock contention and damaged data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use phoenix_core::conformance::state_store::{run, run_concurrent, RoundRobin, StoreFixture};
use phoenix_core::ports::{Commit, EventAppend, Expect, Lease, StateStore, StoreError, Write};
use phoenix_state::{InvalidInput, OpenError, SqliteLocation, SqliteStore};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Executor};

fn put(key: &str, expect: Expect, value: &[u8]) -> Commit {
    Commit {
        fence: None,
        writes: vec![Write {
            key: key.into(),
            expect,
            value: Some(value.to_vec()),
        }],
        events: vec![],
    }
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    // A nested path: opening creates the missing directories.
    dir.path().join("nested/dir/state.sqlite")
}

/// A connection of our own, past the store, to inspect or damage the file.
async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(db_path(&dir)).await.unwrap();
    run(&store, StoreFixture::real_clock()).await;
    run_concurrent(Arc::new(store.clone())).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_store_conforms() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    run(&store, StoreFixture::real_clock()).await;
    run_concurrent(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_on_one_file_conform_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let both = RoundRobin::new(vec![
        SqliteStore::open(&path).await.unwrap(),
        SqliteStore::open(&path).await.unwrap(),
    ])
    .unwrap();
    run(&both, StoreFixture::real_clock()).await;
    run_concurrent(Arc::new(both)).await;
}

#[tokio::test]
async fn file_is_in_wal_mode_and_reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.location(), &SqliteLocation::File(path.clone()));
    store
        .commit(Commit {
            fence: None,
            writes: vec![Write {
                key: "d/shop".into(),
                expect: Expect::Absent,
                value: Some(b"{\"v\":1}".to_vec()),
            }],
            events: vec![
                EventAppend {
                    stream: "d/shop".into(),
                    payload: b"{\"e\":1}".to_vec(),
                },
                EventAppend {
                    stream: "d/shop".into(),
                    payload: b"{\"e\":2}".to_vec(),
                },
            ],
        })
        .await
        .unwrap();
    let first = store
        .acquire_lease("d/shop", "alice", Duration::from_secs(60))
        .await
        .unwrap();
    store.release_lease(&first).await.unwrap();
    store.close().await;
    drop(store);

    let mut conn = raw(&path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    conn.close().await.unwrap();

    let store = SqliteStore::open(&path).await.unwrap();
    let got = store.get("d/shop").await.unwrap().unwrap();
    assert_eq!(
        (got.version, got.value.as_slice()),
        (1, b"{\"v\":1}".as_slice())
    );
    store
        .commit(Commit {
            events: vec![EventAppend {
                stream: "d/shop".into(),
                payload: b"{\"e\":3}".to_vec(),
            }],
            ..Commit::default()
        })
        .await
        .unwrap();
    let seqs: Vec<u64> = store
        .events("d/shop", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        seqs,
        vec![1, 2, 3],
        "sequence numbers continue after a reopen"
    );
    let second = store
        .acquire_lease("d/shop", "bob", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        second.token > first.token,
        "tokens are never reused, also across a release and a reopen"
    );
    let mut stale = put("d/shop", Expect::Version(1), b"{}");
    stale.fence = Some(first.fence());
    assert!(matches!(
        store.commit(stale).await,
        Err(StoreError::Fenced { current, .. }) if current == second.token
    ));
}

#[tokio::test]
async fn two_instances_on_one_file_see_and_fence_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let one = SqliteStore::open(&path).await.unwrap();
    let two = SqliteStore::open(&path).await.unwrap();
    let ttl = Duration::from_millis(600);

    let alice = one.acquire_lease("lock", "alice", ttl).await.unwrap();
    assert_eq!(
        two.current_lease("lock").await.unwrap().map(|l| l.token),
        Some(alice.token)
    );
    match two.acquire_lease("lock", "bob", ttl).await {
        Err(StoreError::LeaseHeld {
            holder, expires_at, ..
        }) => assert_eq!((holder.as_str(), expires_at), ("alice", alice.expires_at)),
        other => panic!("expected LeaseHeld, got {other:?}"),
    }
    let mut by_alice = put("k", Expect::Absent, b"\"alice\"");
    by_alice.fence = Some(alice.fence());
    two.commit(by_alice).await.unwrap();
    assert_eq!(one.get("k").await.unwrap().unwrap().value, b"\"alice\"");

    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let bob = two
        .acquire_lease("lock", "bob", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(bob.token > alice.token);
    let mut stale = put("k", Expect::Version(1), b"\"stale alice\"");
    stale.fence = Some(alice.fence());
    match one.commit(stale).await {
        Err(StoreError::Fenced { token, current, .. }) => {
            assert_eq!((token, current), (alice.token, bob.token))
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert!(matches!(
        one.renew_lease(&alice, ttl).await,
        Err(StoreError::LeaseLost { .. })
    ));
    one.release_lease(&alice).await.unwrap();
    assert_eq!(
        two.current_lease("lock").await.unwrap().unwrap().holder,
        "bob",
        "a stale release through another pool frees nothing"
    );
    let mut by_bob = put("k", Expect::Version(1), b"\"bob\"");
    by_bob.fence = Some(bob.fence());
    assert_eq!(one.commit(by_bob).await.unwrap(), vec![2]);
    assert_eq!(two.get("k").await.unwrap().unwrap().value, b"\"bob\"");
}

async fn ledger(path: &Path) -> Vec<(i64, String, i64)> {
    let mut conn = raw(path).await;
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT version, checksum, applied_at FROM phoenix_schema_migrations ORDER BY version",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_even_when_openers_race() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (a, b, c) = tokio::join!(
        SqliteStore::open(&path),
        SqliteStore::open(&path),
        SqliteStore::open(&path)
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    a.commit(put("kept", Expect::Absent, b"1")).await.unwrap();
    for s in [&a, &b, &c] {
        s.close().await;
    }
    let before = ledger(&path).await;
    assert!(!before.is_empty());
    let versions: Vec<i64> = before.iter().map(|r| r.0).collect();
    let contiguous: Vec<i64> = (1..=before.len() as i64).collect();
    assert_eq!(versions, contiguous, "each migration recorded once");

    let again = SqliteStore::open(&path).await.unwrap();
    again.close().await;
    assert_eq!(ledger(&path).await, before, "a re-run applies nothing");
    let again = SqliteStore::open(&path).await.unwrap();
    assert_eq!(again.get("kept").await.unwrap().unwrap().value, b"1");
}

#[tokio::test]
async fn an_edited_or_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    SqliteStore::open(&path).await.unwrap().close().await;

    let mut conn = raw(&path).await;
    conn.execute("UPDATE phoenix_schema_migrations SET checksum = 'edited' WHERE version = 1")
        .await
        .unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(
        matches!(&err, OpenError::MigrationChanged { version: 1, found, .. } if found == "edited"),
        "{err:?}"
    );
    assert!(!err.is_retryable());

    // Restore the ledger from a fresh file's, then add a migration from
    // the future.
    let fresh = tempfile::tempdir().unwrap();
    let fresh_path = db_path(&fresh);
    SqliteStore::open(&fresh_path).await.unwrap().close().await;
    let good = ledger(&fresh_path).await;
    for (version, checksum, _) in &good {
        sqlx::query("UPDATE phoenix_schema_migrations SET checksum = $1 WHERE version = $2")
            .bind(checksum)
            .bind(version)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    SqliteStore::open(&path).await.unwrap().close().await;
    conn.execute(
        "INSERT INTO phoenix_schema_migrations (version, name, checksum, applied_at) \
         VALUES (9999, 'future', 'x', 0)",
    )
    .await
    .unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(
        matches!(err, OpenError::SchemaTooNew { found: 9999, .. }),
        "{err:?}"
    );
}

fn invalid_input(err: &StoreError) -> &InvalidInput {
    std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<InvalidInput>())
        .unwrap_or_else(|| panic!("expected an InvalidInput source, got {err:?}"))
}

#[tokio::test]
async fn values_that_are_not_text_are_refused_whole() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let commit = Commit {
        fence: None,
        writes: vec![
            Write {
                key: "ok".into(),
                expect: Expect::Absent,
                value: Some(b"{}".to_vec()),
            },
            Write {
                key: "binary".into(),
                expect: Expect::Absent,
                value: Some(vec![0x7b, 0xff, 0x7d]),
            },
        ],
        events: vec![EventAppend {
            stream: "s".into(),
            payload: b"{}".to_vec(),
        }],
    };
    let err = store.commit(commit).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }) && !err.is_retryable());
    assert!(
        matches!(invalid_input(&err), InvalidInput::NotUtf8 { what, .. } if what.contains("binary"))
    );
    assert!(
        store.get("ok").await.unwrap().is_none(),
        "nothing of the commit landed"
    );
    assert!(store.events("s", 0, 10).await.unwrap().is_empty());

    let err = store
        .commit(Commit {
            events: vec![EventAppend {
                stream: "s".into(),
                payload: vec![0xc3],
            }],
            ..Commit::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(invalid_input(&err), InvalidInput::NotUtf8 { .. }));

    let err = store
        .commit(put("nul", Expect::Any, b"a\0b"))
        .await
        .unwrap_err();
    assert!(matches!(invalid_input(&err), InvalidInput::Nul { .. }));
    let err = store
        .commit(put("k\0", Expect::Any, b"1"))
        .await
        .unwrap_err();
    assert!(matches!(invalid_input(&err), InvalidInput::Nul { .. }));
    let err = store
        .acquire_lease("l", "a\0", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(invalid_input(&err), InvalidInput::Nul { .. }));
}

#[tokio::test]
async fn damaged_rows_are_corrupt_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = SqliteStore::open(&path).await.unwrap();
    for k in ["p/bytes", "p/negative", "p/text-version", "q/ok"] {
        store.commit(put(k, Expect::Absent, b"1")).await.unwrap();
    }
    store
        .commit(Commit {
            events: vec![EventAppend {
                stream: "s".into(),
                payload: b"{}".to_vec(),
            }],
            ..Commit::default()
        })
        .await
        .unwrap();
    store
        .acquire_lease("far", "alice", Duration::from_secs(60))
        .await
        .unwrap();
    store
        .acquire_lease("zero", "alice", Duration::from_secs(60))
        .await
        .unwrap();

    let mut conn = raw(&path).await;
    // The schema's CHECKs would refuse some of this damage; a broken tool
    // or disk does not ask.
    conn.execute("PRAGMA ignore_check_constraints = ON")
        .await
        .unwrap();
    for sql in [
        "UPDATE phoenix_records SET value = CAST(X'7BFF7D' AS TEXT) WHERE key = 'p/bytes'",
        "UPDATE phoenix_records SET version = -3 WHERE key = 'p/negative'",
        "UPDATE phoenix_records SET version = 'three' WHERE key = 'p/text-version'",
        "INSERT INTO phoenix_records (key, version, value) VALUES (CAST(X'722FFF' AS TEXT), 1, '1')",
        "UPDATE phoenix_events SET payload = CAST(X'FF' AS TEXT) WHERE stream = 's'",
        "UPDATE phoenix_leases SET expires_at = 9223372036854775807 WHERE name = 'far'",
        "UPDATE phoenix_leases SET token = 0 WHERE name = 'zero'",
    ] {
        conn.execute(sql).await.unwrap();
    }

    for key in ["p/bytes", "p/negative", "p/text-version"] {
        match store.get(key).await {
            Err(StoreError::Corrupt { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{key}: expected Corrupt, got {other:?}"),
        }
    }
    assert!(matches!(
        store.list("p/").await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(
        matches!(store.list("r/").await, Err(StoreError::Corrupt { .. })),
        "a key that is not UTF-8 is corrupt"
    );
    assert_eq!(
        store.list("q/").await.unwrap().len(),
        1,
        "sound rows still read"
    );
    match store.events("s", 0, 10).await {
        Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, "events:s#1"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        store.current_lease("far").await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store
            .acquire_lease("zero", "bob", Duration::from_secs(1))
            .await,
        Err(StoreError::Corrupt { .. })
    ));
    let mut fenced = put("x", Expect::Any, b"1");
    fenced.fence = Some(phoenix_core::ports::Fence {
        lease: "zero".into(),
        token: 1,
    });
    assert!(matches!(
        store.commit(fenced).await,
        Err(StoreError::Corrupt { .. })
    ));
    // The failed commits rolled back and left the store writable.
    store
        .commit(put("q/after", Expect::Absent, b"2"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_write_lock_held_elsewhere_makes_writes_unavailable_not_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = SqliteStore::builder(SqliteLocation::File(path.clone()))
        .busy_timeout(Duration::from_millis(200))
        .max_connections(2)
        .open()
        .await
        .unwrap();
    store.commit(put("k", Expect::Absent, b"1")).await.unwrap();

    let mut other = raw(&path).await;
    other.execute("BEGIN IMMEDIATE").await.unwrap();
    let started = tokio::time::Instant::now();
    let err = store
        .commit(put("k", Expect::Version(1), b"2"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable { operation, .. } if operation == "commit"),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "waited for the lock"
    );
    assert!(matches!(
        store.acquire_lease("l", "a", Duration::from_secs(1)).await,
        Err(StoreError::Unavailable { .. })
    ));
    assert_eq!(
        store.get("k").await.unwrap().unwrap().version,
        1,
        "readers do not wait for a writer in WAL mode"
    );
    other.execute("ROLLBACK").await.unwrap();
    assert_eq!(
        store
            .commit(put("k", Expect::Version(1), b"2"))
            .await
            .unwrap(),
        vec![2]
    );
}

#[tokio::test]
async fn in_memory_stores_are_private_and_clones_share() {
    let a = SqliteStore::open_in_memory().await.unwrap();
    let b = SqliteStore::open_in_memory().await.unwrap();
    a.commit(put("k", Expect::Absent, b"1")).await.unwrap();
    assert!(b.get("k").await.unwrap().is_none());
    let clone = a.clone();
    assert_eq!(clone.get("k").await.unwrap().unwrap().version, 1);
    assert_eq!(a.location(), &SqliteLocation::Memory);
    a.close().await;
    let err = clone.get("k").await.unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
}

#[tokio::test]
async fn out_of_range_arguments_are_answered_not_panicked() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.commit(put("k", Expect::Absent, b"1")).await.unwrap();
    assert!(matches!(
        store
            .commit(put("k", Expect::Version(u64::MAX), b"2"))
            .await,
        Err(StoreError::Conflict { found: Some(1), .. })
    ));
    store
        .commit(Commit {
            events: vec![EventAppend {
                stream: "s".into(),
                payload: b"1".to_vec(),
            }],
            ..Commit::default()
        })
        .await
        .unwrap();
    assert!(store
        .events("s", u64::MAX, usize::MAX)
        .await
        .unwrap()
        .is_empty());
    assert!(store.events("s", 0, 0).await.unwrap().is_empty());
    assert_eq!(store.events("s", 0, usize::MAX).await.unwrap().len(), 1);

    let forever = store
        .acquire_lease("l", "alice", Duration::MAX)
        .await
        .unwrap();
    assert_eq!(
        store.current_lease("l").await.unwrap(),
        Some(forever.clone())
    );
    let bogus = Lease {
        token: u64::MAX,
        ..forever.clone()
    };
    assert!(matches!(
        store.renew_lease(&bogus, Duration::from_secs(1)).await,
        Err(StoreError::LeaseLost { .. })
    ));
    store.release_lease(&bogus).await.unwrap();
    assert_eq!(store.current_lease("l").await.unwrap(), Some(forever));
    let mut fenced = put("k", Expect::Any, b"3");
    fenced.fence = Some(bogus.fence());
    assert!(matches!(
        store.commit(fenced).await,
        Err(StoreError::Fenced { .. })
    ));
}

#[tokio::test]
async fn bad_urls_are_refused_before_touching_disk() {
    for url in [
        "postgres://localhost/phoenix",
        "sqlite://x.db?mode=ro",
        "mysql://x",
    ] {
        assert!(matches!(
            SqliteStore::from_url(url).await,
            Err(OpenError::InvalidUrl { .. })
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("via-url.sqlite").display());
    let store = SqliteStore::from_url(&url).await.unwrap();
    store.commit(put("k", Expect::Absent, b"1")).await.unwrap();
    assert!(dir.path().join("via-url.sqlite").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_writers_in_two_pools_queue_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let one = SqliteStore::open(&path).await.unwrap();
    let two = SqliteStore::open(&path).await.unwrap();
    let lease = one
        .acquire_lease("journal", "executor", Duration::from_secs(60))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = if t % 2 == 0 { one.clone() } else { two.clone() };
        let fence = lease.fence();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                // The fence check reads before the writes: without the write
                // lock taken up front, another pool's commit in between
                // would fail this one instead of queueing it.
                store
                    .commit(Commit {
                        fence: Some(fence.clone()),
                        writes: vec![Write {
                            key: format!("steps/{t}/{i}"),
                            expect: Expect::Absent,
                            value: Some(b"{}".to_vec()),
                        }],
                        events: vec![EventAppend {
                            stream: "journal".into(),
                            payload: format!("{{\"t\":{t},\"i\":{i}}}").into_bytes(),
                        }],
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seqs: Vec<u64> = two
        .events("journal", 0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        seqs,
        (1..=160).collect::<Vec<u64>>(),
        "no gaps, no duplicates"
    );
    assert_eq!(one.list("steps/").await.unwrap().len(), 160);
}

/// The outcome of a commit, comparable across stores.
fn outcome(r: Result<Vec<u64>, StoreError>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(StoreError::Conflict {
            key,
            expected,
            found,
        }) => format!("conflict {key} {expected} {found:?}"),
        Err(e) => format!("error {e}"),
    }
}

#[tokio::test]
async fn commits_match_the_reference_store_step_by_step() {
    use phoenix_core::memory_store::MemoryStore;
    let w = |key: &str, expect: Expect, value: Option<&str>| Write {
        key: key.into(),
        expect,
        value: value.map(|v| v.as_bytes().to_vec()),
    };
    let script: Vec<Vec<Write>> = vec![
        vec![
            w("a", Expect::Absent, Some("1")),
            w("a", Expect::Version(1), Some("2")),
        ],
        vec![
            w("a", Expect::Version(2), None),
            w("a", Expect::Absent, Some("3")),
        ],
        vec![w("a", Expect::Absent, None)],
        vec![w("b", Expect::Absent, None), w("b", Expect::Any, None)],
        vec![w("b", Expect::Version(1), None)],
        vec![
            w("b", Expect::Any, Some("x")),
            w("b", Expect::Any, Some("y")),
        ],
        vec![
            w("c", Expect::Absent, Some("1")),
            w("b", Expect::Version(9), Some("z")),
        ],
        vec![w("c", Expect::Absent, Some("1"))],
        vec![
            w("b", Expect::Version(2), None),
            w("b", Expect::Version(2), None),
        ],
        vec![
            w("b", Expect::Version(2), None),
            w("b", Expect::Absent, Some("again")),
        ],
        vec![],
    ];
    let memory = MemoryStore::default();
    let sqlite = SqliteStore::open_in_memory().await.unwrap();
    for (i, writes) in script.into_iter().enumerate() {
        let commit = Commit {
            fence: None,
            writes,
            events: vec![EventAppend {
                stream: format!("s{}", i % 3),
                payload: format!("{i}").into_bytes(),
            }],
        };
        let expected = outcome(memory.commit(commit.clone()).await);
        let got = outcome(sqlite.commit(commit).await);
        assert_eq!(got, expected, "commit #{i}");
        assert_eq!(
            sqlite.list("").await.unwrap(),
            memory.list("").await.unwrap(),
            "records after commit #{i}"
        );
    }
    for s in ["s0", "s1", "s2"] {
        assert_eq!(
            sqlite.events(s, 0, 100).await.unwrap(),
            memory.events(s, 0, 100).await.unwrap(),
            "stream {s}"
        );
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-db.sqlite");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    match SqliteStore::open(&path).await {
        Err(OpenError::Store(StoreError::Backend { operation, .. })) => {
            assert!(operation.contains("not-a-db.sqlite"), "{operation}")
        }
        other => panic!("expected a back-end error, got {other:?}"),
    }
}
