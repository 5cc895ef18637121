//! The `StateStore` contract.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::ports::{
    Commit, EventAppend, Expect, Lease, StateStore, StoreError, StoredEvent, Versioned, Write,
};

/// How the suite treats time.
#[derive(Debug, Clone, Copy)]
pub struct StoreFixture {
    /// A lease TTL short enough to wait out in the test.
    pub short_ttl: Duration,
    /// How long past the TTL to wait before expecting expiry.
    pub margin: Duration,
}

impl StoreFixture {
    /// For stores on the wall clock (SQLite, PostgreSQL).
    pub fn real_clock() -> Self {
        Self {
            short_ttl: Duration::from_millis(400),
            margin: Duration::from_millis(300),
        }
    }

    /// For stores on tokio's (paused) clock.
    pub fn tokio_clock() -> Self {
        Self {
            short_ttl: Duration::from_secs(30),
            margin: Duration::from_secs(1),
        }
    }
}

/// Spreads calls over several handles on one database, turn by turn, the
/// way several orchestrators (or several pools in one) share it: run the
/// suite through it to check that they see each other's writes, leases
/// and events.
#[derive(Debug)]
pub struct RoundRobin<S> {
    stores: Vec<S>,
    next: AtomicUsize,
}

impl<S: StateStore> RoundRobin<S> {
    /// Over these handles; `None` when there are none.
    pub fn new(stores: Vec<S>) -> Option<Self> {
        (!stores.is_empty()).then(|| Self {
            stores,
            next: AtomicUsize::new(0),
        })
    }

    fn pick(&self) -> &S {
        &self.stores[self.next.fetch_add(1, Ordering::Relaxed) % self.stores.len()]
    }
}

#[async_trait]
impl<S: StateStore> StateStore for RoundRobin<S> {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.pick().get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        self.pick().list(prefix).await
    }
    async fn commit(&self, commit: Commit) -> Result<Vec<u64>, StoreError> {
        self.pick().commit(commit).await
    }
    async fn events(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.pick().events(stream, after, limit).await
    }
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        self.pick().acquire_lease(name, holder, ttl).await
    }
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        self.pick().renew_lease(lease, ttl).await
    }
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.pick().release_lease(lease).await
    }
    async fn current_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        self.pick().current_lease(name).await
    }
}

fn delete(key: &str, expect: Expect) -> Commit {
    Commit {
        fence: None,
        writes: vec![Write {
            key: key.into(),
            expect,
            value: None,
        }],
        events: vec![],
    }
}

fn put(key: &str, expect: Expect, value: &str) -> Commit {
    Commit {
        fence: None,
        writes: vec![Write {
            key: key.into(),
            expect,
            value: Some(value.as_bytes().to_vec()),
        }],
        events: vec![],
    }
}

/// Runs every check. The store must be empty of keys starting with the
/// run's prefix (a fresh store, or a shared one: keys are unique per run).
pub async fn run(store: &dyn StateStore, fixture: StoreFixture) {
    let p = super::unique("conformance");
    records(store, &p).await;
    deletes(store, &p).await;
    atomic_commits(store, &p).await;
    literal_prefixes(store, &p).await;
    events(store, &p).await;
    leases_and_fencing(store, &p, fixture).await;
}

/// Runs the concurrency check: many writers racing on one key.
pub async fn run_concurrent(store: Arc<dyn StateStore>) {
    let key = format!("{}/counter", super::unique("conformance"));
    store.commit(put(&key, Expect::Absent, "0")).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = 0u32;
            for _ in 0..10 {
                loop {
                    let cur = store.get(&key).await.unwrap().unwrap();
                    let n: u64 = String::from_utf8(cur.value).unwrap().parse().unwrap();
                    match store
                        .commit(put(
                            &key,
                            Expect::Version(cur.version),
                            &(n + 1).to_string(),
                        ))
                        .await
                    {
                        Ok(_) => {
                            won += 1;
                            break;
                        }
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("unexpected error under contention: {e}"),
                    }
                }
            }
            won
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let last = store.get(&key).await.unwrap().unwrap();
    assert_eq!(total, 80);
    assert_eq!(
        String::from_utf8(last.value).unwrap(),
        "80",
        "lost updates under contention"
    );
    assert_eq!(last.version, 81);
}

async fn records(store: &dyn StateStore, p: &str) {
    let k = format!("{p}/a");
    assert!(
        store.get(&k).await.unwrap().is_none(),
        "a new key reads as absent"
    );
    let v = store.commit(put(&k, Expect::Absent, "one")).await.unwrap();
    assert_eq!(v, vec![1], "first version is 1");
    let got = store.get(&k).await.unwrap().unwrap();
    assert_eq!((got.version, got.value.as_slice()), (1, b"one".as_slice()));
    assert!(
        matches!(
            store.commit(put(&k, Expect::Absent, "dup")).await,
            Err(StoreError::Conflict { found: Some(1), .. })
        ),
        "Absent on an existing key conflicts"
    );
    let v = store
        .commit(put(&k, Expect::Version(1), "two"))
        .await
        .unwrap();
    assert_eq!(v, vec![2]);
    let stale = store.commit(put(&k, Expect::Version(1), "stale")).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { found: Some(2), .. })),
        "a stale version conflicts: {stale:?}"
    );
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b"two");
    let v = store.commit(put(&k, Expect::Any, "three")).await.unwrap();
    assert_eq!(v, vec![3]);
    let v = store
        .commit(Commit {
            fence: None,
            writes: vec![Write {
                key: k.clone(),
                expect: Expect::Version(3),
                value: None,
            }],
            events: vec![],
        })
        .await
        .unwrap();
    assert_eq!(v, vec![0], "a delete reports version 0");
    assert!(store.get(&k).await.unwrap().is_none(), "deleted");
    let v = store
        .commit(put(&k, Expect::Absent, "again"))
        .await
        .unwrap();
    assert_eq!(v, vec![1], "a re-created key starts at version 1 again");
}

/// Deletes honour their expectation like every other write.
async fn deletes(store: &dyn StateStore, p: &str) {
    let k = format!("{p}/deletes/k");
    let absent = format!("{p}/deletes/never-written");
    assert_eq!(
        store.commit(delete(&absent, Expect::Any)).await.unwrap(),
        vec![0],
        "deleting an absent key without expectation succeeds"
    );
    assert_eq!(
        store.commit(delete(&absent, Expect::Absent)).await.unwrap(),
        vec![0],
        "an absent key is absent"
    );
    let missing = store.commit(delete(&absent, Expect::Version(1))).await;
    assert!(
        matches!(missing, Err(StoreError::Conflict { found: None, .. })),
        "a versioned delete of an absent key conflicts: {missing:?}"
    );
    store.commit(put(&k, Expect::Absent, "one")).await.unwrap();
    store
        .commit(put(&k, Expect::Version(1), "two"))
        .await
        .unwrap();
    for expect in [
        Expect::Version(1),
        Expect::Version(u64::MAX),
        Expect::Absent,
    ] {
        let refused = store.commit(delete(&k, expect)).await;
        assert!(
            matches!(refused, Err(StoreError::Conflict { found: Some(2), .. })),
            "a delete expecting {expect:?} conflicts with version 2: {refused:?}"
        );
    }
    assert_eq!(
        store.get(&k).await.unwrap().map(|r| r.value),
        Some(b"two".to_vec()),
        "a refused delete leaves the record"
    );
    let stale_put = store.commit(put(&k, Expect::Version(u64::MAX), "x")).await;
    assert!(
        matches!(stale_put, Err(StoreError::Conflict { found: Some(2), .. })),
        "a version no store can hold conflicts: {stale_put:?}"
    );
    assert_eq!(
        store.commit(delete(&k, Expect::Any)).await.unwrap(),
        vec![0]
    );
    assert!(store.get(&k).await.unwrap().is_none(), "deleted");
}

async fn atomic_commits(store: &dyn StateStore, p: &str) {
    let a = format!("{p}/atomic/a");
    let b = format!("{p}/atomic/b");
    store.commit(put(&a, Expect::Absent, "a1")).await.unwrap();
    let stream = format!("{p}/atomic-events");
    let failing = Commit {
        fence: None,
        writes: vec![
            Write {
                key: b.clone(),
                expect: Expect::Absent,
                value: Some(b"b1".to_vec()),
            },
            Write {
                key: a.clone(),
                expect: Expect::Version(7),
                value: Some(b"a2".to_vec()),
            },
        ],
        events: vec![EventAppend {
            stream: stream.clone(),
            payload: b"{}".to_vec(),
        }],
    };
    assert!(matches!(
        store.commit(failing).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(
        store.get(&b).await.unwrap().is_none(),
        "a failed commit writes nothing"
    );
    assert!(
        store.events(&stream, 0, 10).await.unwrap().is_empty(),
        "a failed commit appends no event"
    );
    let ok = Commit {
        fence: None,
        writes: vec![
            Write {
                key: b.clone(),
                expect: Expect::Absent,
                value: Some(b"b1".to_vec()),
            },
            Write {
                key: a.clone(),
                expect: Expect::Version(1),
                value: Some(b"a2".to_vec()),
            },
        ],
        events: vec![EventAppend {
            stream: stream.clone(),
            payload: b"{\"n\":1}".to_vec(),
        }],
    };
    assert_eq!(store.commit(ok).await.unwrap(), vec![1, 2]);
    assert_eq!(store.events(&stream, 0, 10).await.unwrap().len(), 1);
}

async fn literal_prefixes(store: &dyn StateStore, p: &str) {
    // SQL LIKE wildcards and similar must be matched literally.
    for k in ["x_y/1", "x%y/1", "xzy/1", "x_y/2", "x_yz/1", "x\\y/1"] {
        store
            .commit(put(&format!("{p}/{k}"), Expect::Absent, k))
            .await
            .unwrap();
    }
    let got: Vec<String> = store
        .list(&format!("{p}/x_y/"))
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        got,
        vec![format!("{p}/x_y/1"), format!("{p}/x_y/2")],
        "list matches the prefix literally and in key order"
    );
    let got = store.list(&format!("{p}/x%y/")).await.unwrap();
    assert_eq!(got.len(), 1);
    let got = store.list(&format!("{p}/x\\y/")).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(store
        .list(&format!("{p}/nothing/"))
        .await
        .unwrap()
        .is_empty());
}

async fn events(store: &dyn StateStore, p: &str) {
    let s1 = format!("{p}/stream-1");
    let s2 = format!("{p}/stream-2");
    for i in 1..=5 {
        store
            .commit(Commit {
                fence: None,
                writes: vec![],
                events: vec![
                    EventAppend {
                        stream: s1.clone(),
                        payload: format!("{{\"i\":{i}}}").into_bytes(),
                    },
                    EventAppend {
                        stream: s2.clone(),
                        payload: format!("{{\"j\":{i}}}").into_bytes(),
                    },
                ],
            })
            .await
            .unwrap();
    }
    let all = store.events(&s1, 0, 100).await.unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5], "seq numbers per stream from 1");
    assert_eq!(all[2].payload, b"{\"i\":3}");
    assert!(all.iter().all(|e| e.stream == s1));
    let page = store.events(&s1, 2, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(store.events(&s2, 4, 10).await.unwrap().len(), 1);
    assert!(store
        .events(&format!("{p}/none"), 0, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn leases_and_fencing(store: &dyn StateStore, p: &str, f: StoreFixture) {
    let name = format!("{p}/lease");
    let k = format!("{p}/fenced");
    let a = store
        .acquire_lease(&name, "alice", f.short_ttl)
        .await
        .unwrap();
    assert_eq!(a.holder, "alice");
    match store.acquire_lease(&name, "bob", f.short_ttl).await {
        Err(StoreError::LeaseHeld { holder, .. }) => assert_eq!(holder, "alice"),
        other => panic!("a held lease is refused to others, got {other:?}"),
    }
    let current = store.current_lease(&name).await.unwrap().unwrap();
    assert_eq!((current.holder.as_str(), current.token), ("alice", a.token));
    let mut fenced = put(&k, Expect::Absent, "by alice");
    fenced.fence = Some(a.fence());
    store.commit(fenced).await.unwrap();
    let renewed = store.renew_lease(&a, f.short_ttl).await.unwrap();
    assert_eq!(renewed.token, a.token, "renewal keeps the token");
    assert!(renewed.expires_at >= a.expires_at);

    // Alice stalls past expiry; Bob takes over with a higher token.
    tokio::time::sleep(f.short_ttl + f.margin).await;
    assert!(
        store.current_lease(&name).await.unwrap().is_none(),
        "an expired lease has no current holder"
    );
    let b = store
        .acquire_lease(&name, "bob", f.short_ttl * 20)
        .await
        .unwrap();
    assert!(b.token > a.token, "fencing tokens increase");
    let mut stale = put(&k, Expect::Version(1), "by stale alice");
    stale.fence = Some(a.fence());
    match store.commit(stale).await {
        Err(StoreError::Fenced { token, current, .. }) => {
            assert_eq!((token, current), (a.token, b.token))
        }
        other => panic!("a stale holder's write is fenced off, got {other:?}"),
    }
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b"by alice");
    assert!(matches!(
        store.renew_lease(&a, f.short_ttl).await,
        Err(StoreError::LeaseLost { .. })
    ));
    store.release_lease(&a).await.unwrap();
    assert_eq!(
        store.current_lease(&name).await.unwrap().unwrap().holder,
        "bob",
        "a stale release does not free the new holder's lease"
    );
    let mut good = put(&k, Expect::Version(1), "by bob");
    good.fence = Some(b.fence());
    store.commit(good).await.unwrap();
    store.release_lease(&b).await.unwrap();
    assert!(store.current_lease(&name).await.unwrap().is_none());
    let mut after_release = put(&k, Expect::Version(2), "by bob after release");
    after_release.fence = Some(b.fence());
    assert!(
        matches!(
            store.commit(after_release).await,
            Err(StoreError::Fenced { .. })
        ),
        "a released lease fences its holder's writes"
    );
    let c = store
        .acquire_lease(&name, "carol", f.short_ttl)
        .await
        .unwrap();
    assert!(
        c.token > b.token,
        "a released lease is granted with a higher token"
    );
    store.release_lease(&c).await.unwrap();
}
