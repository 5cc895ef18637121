//! The PostgreSQL store against the port's conformance suite, and what the
//! suite cannot see: concurrent transactions (racing writers, appenders,
//! lease grants and fenced commits), migrations raced by several openers,
//! byte-order listing under a linguistic collation, retryable errors and
//! redacted credentials. Each test works in a schema of its own on the
//! server the test script starts.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use pg_common::Schema;
use phoenix_core::conformance::state_store::{run, run_concurrent, RoundRobin, StoreFixture};
use phoenix_core::memory_store::MemoryStore;
use phoenix_core::ports::{Commit, EventAppend, Expect, StateStore, StoreError, Write};
use phoenix_state::{OpenError, PostgresStore, PostgresStoreBuilder};
use secrecy::SecretString;
use sqlx::Connection;

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

fn event(stream: &str, payload: String) -> EventAppend {
    EventAppend {
        stream: stream.into(),
        payload: payload.into_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgresql: run the full test script"]
async fn postgres_store_conforms() {
    let schema = Schema::new("conform");
    let store = schema.open().await;
    run(&store, StoreFixture::real_clock()).await;
    run_concurrent(Arc::new(store.clone())).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgresql: run the full test script"]
async fn three_pools_on_one_schema_conform_together() {
    let schema = Schema::new("pools");
    let all = RoundRobin::new(vec![
        schema.open().await,
        schema.open().await,
        schema.open().await,
    ])
    .unwrap();
    run(&all, StoreFixture::real_clock()).await;
    let all = Arc::new(all);
    run_concurrent(all.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgresql: run the full test script"]
async fn concurrent_appends_to_one_stream_stay_gap_free() {
    let schema = Schema::new("append");
    let stores = [
        schema.open().await,
        schema.open().await,
        schema.open().await,
    ];
    const STREAM: &str = "deployments/shop";
    let mut tasks = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        for t in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut landed = 0usize;
                for n in 0..25 {
                    let id = format!("{i}-{t}-{n}");
                    // Every third commit carries a write that conflicts:
                    // it rolls back, and its events must not leave a gap.
                    let conflicting = n % 3 == 0;
                    let commit = Commit {
                        fence: None,
                        writes: if conflicting {
                            vec![Write {
                                key: "never".into(),
                                expect: Expect::Version(9),
                                value: Some(b"1".to_vec()),
                            }]
                        } else {
                            vec![]
                        },
                        events: vec![
                            event(STREAM, format!("\"{id}/a\"")),
                            event(STREAM, format!("\"{id}/b\"")),
                            event("other", format!("\"{id}\"")),
                        ],
                    };
                    match store.commit(commit).await {
                        Ok(_) => {
                            assert!(!conflicting);
                            landed += 1;
                        }
                        Err(StoreError::Conflict { .. }) => assert!(conflicting),
                        Err(e) => panic!("append failed: {e}"),
                    }
                }
                landed
            }));
        }
    }
    let mut landed = 0;
    for t in tasks {
        landed += t.await.unwrap();
    }
    let events = stores[0].events(STREAM, 0, usize::MAX).await.unwrap();
    assert_eq!(
        events.len(),
        landed * 2,
        "every landed commit's events, no more"
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "gap-free from 1");
    }
    // The two events of one commit are adjacent: commits do not interleave.
    for pair in events.chunks(2) {
        let a = String::from_utf8(pair[0].payload.clone()).unwrap();
        let b = String::from_utf8(pair[1].payload.clone()).unwrap();
        assert_eq!(a.replace("/a", "/b"), b, "{a} and {b} interleaved");
    }
    let other = stores[1].events("other", 0, usize::MAX).await.unwrap();
    assert_eq!(other.len(), landed);
    assert_eq!(other.last().unwrap().seq, landed as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgresql: run the full test script"]
async fn racing_orchestrators_get_one_lease_and_the_loser_names_the_winner() {
    let schema = Schema::new("race");
    let stores = [
        schema.open().await,
        schema.open().await,
        schema.open().await,
    ];
    let ttl = Duration::from_millis(700);
    for round in 1..=3u64 {
        let mut tasks = Vec::new();
        for i in 0..9 {
            let store = stores[i % 3].clone();
            tasks.push(tokio::spawn(async move {
                store
                    .acquire_lease("deployments/shop", &format!("orchestrator-{i}"), ttl)
                    .await
            }));
        }
        let mut winners = Vec::new();
        let mut named = BTreeSet::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(lease) => winners.push(lease),
                Err(StoreError::LeaseHeld {
                    holder, expires_at, ..
                }) => {
                    assert!(expires_at > chrono::Utc::now() - chrono::TimeDelta::seconds(1));
                    named.insert(holder);
                }
                Err(e) => panic!("acquire failed: {e}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one orchestrator wins"
        );
        let winner = &winners[0];
        assert_eq!(winner.token, round, "tokens grow by one per grant");
        assert_eq!(
            named.into_iter().collect::<Vec<_>>(),
            vec![winner.holder.clone()],
            "every loser is told who holds it"
        );
        // Let it expire (round 1, 3) or release it (round 2).
        if round == 2 {
            stores[0].release_lease(winner).await.unwrap();
        } else {
            tokio::time::sleep(ttl + Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgresql: run the full test script"]
async fn a_stale_holder_racing_a_takeover_never_writes_after_it() {
    let schema = Schema::new("fence");
    let a_store = schema.open().await;
    let b_store = schema.open().await;
    const STREAM: &str = "journal";
    let ttl = Duration::from_millis(400);
    let alice = a_store.acquire_lease("d", "alice", ttl).await.unwrap();
    // Alice keeps committing without renewing, as a holder that stalled
    // and came back would.
    let writer = {
        let store = a_store.clone();
        let fence = alice.fence();
        tokio::spawn(async move {
            let mut fenced_at = None;
            for n in 0..2000 {
                let mut c = Commit {
                    fence: Some(fence.clone()),
                    writes: vec![],
                    events: vec![event(STREAM, format!("\"alice-{n}\""))],
                };
                c.writes.push(Write {
                    key: "counter".into(),
                    expect: Expect::Any,
                    value: Some(n.to_string().into_bytes()),
                });
                match store.commit(c).await {
                    Ok(_) => {}
                    Err(StoreError::Fenced { current, .. }) => {
                        fenced_at = Some((n, current));
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            fenced_at
        })
    };
    let bob = loop {
        match b_store
            .acquire_lease("d", "bob", Duration::from_secs(30))
            .await
        {
            Ok(l) => break l,
            Err(StoreError::LeaseHeld { holder, .. }) => {
                assert_eq!(holder, "alice");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    b_store
        .commit(Commit {
            fence: Some(bob.fence()),
            writes: vec![],
            events: vec![event(STREAM, "\"bob-took-over\"".into())],
        })
        .await
        .unwrap();
    let (_, current) = writer
        .await
        .unwrap()
        .expect("alice was fenced once bob held the lease");
    assert_eq!(current, bob.token);
    let events = a_store.events(STREAM, 0, usize::MAX).await.unwrap();
    let takeover = events
        .iter()
        .position(|e| e.payload == b"\"bob-took-over\"")
        .unwrap();
    assert!(takeover > 0, "alice wrote before the takeover");
    assert_eq!(
        takeover,
        events.len() - 1,
        "nothing of alice's landed after bob's grant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgresql: run the full test script"]
async fn migrations_run_once_even_when_openers_race() {
    let schema = Schema::new("migrate");
    let (a, b, c, d) = tokio::join!(
        schema.builder().open(),
        schema.builder().open(),
        schema.builder().open(),
        schema.builder().open()
    );
    let stores = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
    stores[0]
        .commit(put("kept", Expect::Absent, b"1"))
        .await
        .unwrap();
    let mut raw = schema.raw().await;
    let ledger: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, name FROM phoenix_schema_migrations ORDER BY version")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    let versions: Vec<i64> = ledger.iter().map(|r| r.0).collect();
    assert_eq!(
        versions,
        (1..=ledger.len() as i64).collect::<Vec<_>>(),
        "each migration recorded once"
    );
    let index: Option<String> = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() \
         AND indexname = 'phoenix_records_key_bytewise'",
    )
    .fetch_optional(&mut raw)
    .await
    .unwrap();
    assert!(
        index
            .as_deref()
            .is_some_and(|d| d.contains("COLLATE \"C\"")),
        "{index:?}"
    );
    // An edited migration is refused on the next open.
    sqlx::query("UPDATE phoenix_schema_migrations SET checksum = 'edited' WHERE version = 1")
        .execute(&mut raw)
        .await
        .unwrap();
    assert!(matches!(
        schema.builder().open().await,
        Err(OpenError::MigrationChanged { version: 1, .. })
    ));
    raw.close().await.unwrap();
    assert_eq!(stores[3].get("kept").await.unwrap().unwrap().value, b"1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgresql: run the full test script"]
async fn listing_is_in_byte_order_under_a_linguistic_collation() {
    let schema = Schema::new("collate");
    let store = schema.open().await;
    let mut raw = schema.raw().await;
    let (collation, provider): (String, String) = sqlx::query_as(
        "SELECT COALESCE(daticulocale, datcollate), datlocprovider::text FROM pg_database \
         WHERE datname = current_database()",
    )
    .fetch_one(&mut raw)
    .await
    .unwrap();
    eprintln!("database collation: {collation} (provider {provider})");
    // Keys whose linguistic order differs from byte order: punctuation is
    // ignored or weighed differently, and case folds.
    let keys = [
        "p/a/b", "p/a-b", "p/a_b", "p/a.b", "p/ab", "p/aB", "p/A", "p/a", "p/a/", "p/a0", "p/b",
        "p/B/1", "p/é", "p/e", "p/z", "p/~", "p/a/b/c", "p/a-", "q", "p0", "p",
    ];
    let memory = MemoryStore::default();
    for k in keys {
        let c = put(k, Expect::Absent, b"1");
        store.commit(c.clone()).await.unwrap();
        memory.commit(c).await.unwrap();
    }
    for prefix in [
        "", "p", "p/", "p/a", "p/a/", "p/a-", "p/a_", "p/A", "p/B/", "p/é", "p/e", "p/a/b", "q",
    ] {
        let got: Vec<String> = store
            .list(prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let want: Vec<String> = memory
            .list(prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, want, "prefix {prefix:?}");
    }
    raw.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgresql: run the full test script"]
async fn a_lock_held_too_long_is_a_retryable_error_not_a_hang() {
    let schema = Schema::new("locked");
    let store = schema
        .builder()
        .statement_timeout(Duration::from_millis(300))
        .open()
        .await
        .unwrap();
    let lease = store
        .acquire_lease("d", "alice", Duration::from_secs(30))
        .await
        .unwrap();
    // Someone else's transaction holds the lease row.
    let mut raw = schema.raw().await;
    let mut tx = raw.begin().await.unwrap();
    sqlx::query("SELECT token FROM phoenix_leases WHERE name = 'd' FOR UPDATE")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut c = put("k", Expect::Absent, b"1");
    c.fence = Some(lease.fence());
    let err = store.commit(c.clone()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the statement timeout bounded the wait"
    );
    tx.rollback().await.unwrap();
    assert_eq!(store.commit(c).await.unwrap(), vec![1], "a retry succeeds");
    assert_eq!(store.get("k").await.unwrap().unwrap().version, 1);
    raw.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgresql: run the full test script"]
async fn open_picks_the_backend_and_drop_schema_cleans_up() {
    let schema = Schema::new("open");
    let store = phoenix_state::open(&schema.url()).await.unwrap();
    store.commit(put("x", Expect::Absent, b"1")).await.unwrap();
    let direct = schema.open().await;
    assert_eq!(direct.schema(), Some(schema.name.as_str()));
    assert_eq!(direct.get("x").await.unwrap().unwrap().value, b"1");
    assert!(!format!("{direct:?}").contains("password"));
    direct.drop_schema().await.unwrap();
    let mut raw = sqlx::PgConnection::connect(&pg_common::url())
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
        .bind(&schema.name)
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(left, 0);
    raw.close().await.unwrap();
    let no_schema = PostgresStore::connect(&pg_common::url()).await.unwrap();
    assert!(
        no_schema.clone().drop_schema().await.is_err(),
        "a store without its own schema refuses to drop one"
    );
}

#[tokio::test]
async fn errors_and_debug_output_never_show_the_password() {
    // Nothing listens on port 1: connecting fails fast.
    let url = "postgres://ci:topsecret@127.0.0.1:1/phoenix?schema=s";
    let builder = PostgresStoreBuilder::from_url(url)
        .unwrap()
        .acquire_timeout(Duration::from_secs(5))
        .password(SecretString::from("alsosecret"));
    assert!(!format!("{builder:?}").contains("topsecret"));
    let err = builder.open().await.unwrap_err();
    let shown = format!("{} | {err:?}", phoenix_core::error_chain(&err));
    assert!(
        err.is_retryable(),
        "connection refused is retryable: {shown}"
    );
    for secret in ["topsecret", "alsosecret"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
    for bad in [
        "postgres://ci:topsecret@[::1/db",
        "mysql://ci:topsecret@h/db",
        "postgres://ci:topsecret@h/db?schema=Robert');DROP",
    ] {
        let err = match phoenix_state::open(bad).await {
            Ok(_) => panic!("{bad} opened"),
            Err(e) => e,
        };
        let shown = format!("{} | {err:?}", phoenix_core::error_chain(&err));
        assert!(!shown.contains("topsecret"), "{shown}");
    }
}
