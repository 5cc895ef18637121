//! An in-memory [`StateStore`]: the reference implementation of the port's
//! semantics, for tests and simulations. Lease expiry follows its
//! [`Clock`](crate::time::Clock), so it works under tokio's paused clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::ports::{Commit, Expect, Lease, StateStore, StoreError, StoredEvent, Versioned};
use crate::time::{SharedClock, Timestamp, TokioClock};

#[derive(Debug, Clone)]
struct LeaseSlot {
    holder: Option<String>,
    token: u64,
    expires_at: Timestamp,
}

/// One stream's events packed into fixed-size chunks: one allocation per
/// megabyte rather than per event, and no reallocation of a huge buffer
/// (histories reach hundreds of thousands of events).
#[derive(Debug, Default)]
struct Stream {
    chunks: Vec<Vec<u8>>,
    /// (chunk, start, end) of each event.
    index: Vec<(u32, u32, u32)>,
}

const CHUNK: usize = 1 << 20;

impl Stream {
    fn push(&mut self, payload: &[u8]) {
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= payload.len());
        if !fits {
            self.chunks
                .push(Vec::with_capacity(CHUNK.max(payload.len())));
        }
        let n = self.chunks.len() - 1;
        let chunk = &mut self.chunks[n];
        let start = chunk.len();
        chunk.extend_from_slice(payload);
        // Chunks are at most max(1 MiB, one payload) long, and a payload
        // never reaches 4 GiB.
        self.index
            .push((n as u32, start as u32, chunk.len() as u32));
    }

    fn get(&self, i: usize) -> &[u8] {
        let (c, start, end) = self.index[i];
        &self.chunks[c as usize][start as usize..end as usize]
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn bytes(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }
}

#[derive(Debug, Default)]
struct Inner {
    records: BTreeMap<String, Versioned>,
    events: BTreeMap<String, Stream>,
    leases: BTreeMap<String, LeaseSlot>,
}

/// An in-memory state store.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    clock: SharedClock,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(Arc::new(TokioClock::fixed()))
    }
}

impl MemoryStore {
    /// An empty store whose leases expire by `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied commit
        // (commits are validated before any mutation), so poisoning is safe
        // to ignore.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every record, for inspection in tests (for example, searching for a
    /// secret that must not be there).
    pub fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let inner = self.lock();
        let mut out: Vec<(String, Vec<u8>)> = inner
            .records
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect();
        for (stream, events) in &inner.events {
            for i in 0..events.len() {
                out.push((format!("events:{stream}#{}", i + 1), events.get(i).to_vec()));
            }
        }
        out
    }

    /// True when `holder` holds some lease that has not expired, by this
    /// store's clock (for referees that check who may act).
    pub fn holds_lease(&self, holder: &str) -> bool {
        let now = self.clock.now();
        self.lock()
            .leases
            .values()
            .any(|l| l.holder.as_deref() == Some(holder) && l.expires_at > now)
    }

    /// One record now, without awaiting (for referees inside a simulated
    /// world).
    pub fn peek(&self, key: &str) -> Option<Versioned> {
        self.lock().records.get(key).cloned()
    }

    /// How many events a stream holds.
    pub fn events_len(&self, stream: &str) -> usize {
        self.lock().events.get(stream).map_or(0, Stream::len)
    }

    /// Total bytes held (records and events), for memory measurements.
    pub fn bytes(&self) -> usize {
        let inner = self.lock();
        inner
            .records
            .iter()
            .map(|(k, v)| k.len() + v.value.len())
            .sum::<usize>()
            + inner.events.values().map(Stream::bytes).sum::<usize>()
    }
}

fn to_duration(ttl: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(ttl).unwrap_or(chrono::TimeDelta::MAX)
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.lock().records.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .records
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn commit(&self, commit: Commit) -> Result<Vec<u64>, StoreError> {
        let mut inner = self.lock();
        if let Some(fence) = &commit.fence {
            let current = inner.leases.get(&fence.lease);
            let held = current.is_some_and(|l| l.token == fence.token && l.holder.is_some());
            if !held {
                return Err(StoreError::Fenced {
                    lease: fence.lease.clone(),
                    token: fence.token,
                    current: current.map_or(0, |l| l.token),
                });
            }
        }
        // Validate every expectation before touching anything.
        let mut pending: BTreeMap<&str, Option<u64>> = BTreeMap::new();
        for w in &commit.writes {
            let found = match pending.get(w.key.as_str()) {
                Some(v) => *v,
                None => inner.records.get(&w.key).map(|v| v.version),
            };
            let ok = match w.expect {
                Expect::Absent => found.is_none(),
                Expect::Version(v) => found == Some(v),
                Expect::Any => true,
            };
            if !ok {
                return Err(StoreError::Conflict {
                    key: w.key.clone(),
                    expected: w.expect,
                    found,
                });
            }
            let next = w.value.as_ref().map(|_| found.unwrap_or(0) + 1);
            pending.insert(&w.key, next);
        }
        let mut versions = Vec::with_capacity(commit.writes.len());
        for w in commit.writes {
            match w.value {
                Some(value) => {
                    let version = inner.records.get(&w.key).map_or(1, |v| v.version + 1);
                    inner.records.insert(w.key, Versioned { version, value });
                    versions.push(version);
                }
                None => {
                    inner.records.remove(&w.key);
                    versions.push(0);
                }
            }
        }
        for e in commit.events {
            inner.events.entry(e.stream).or_default().push(&e.payload);
        }
        Ok(versions)
    }

    async fn events(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let inner = self.lock();
        let Some(events) = inner.events.get(stream) else {
            return Ok(Vec::new());
        };
        let first = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(events.len());
        Ok((first..events.len())
            .take(limit)
            .map(|i| StoredEvent {
                stream: stream.to_owned(),
                seq: i as u64 + 1,
                payload: events.get(i).to_vec(),
            })
            .collect())
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let previous = inner.leases.get(name).cloned();
        if let Some(prev) = &previous {
            if let Some(current) = &prev.holder {
                if prev.expires_at > now {
                    return Err(StoreError::LeaseHeld {
                        name: name.to_owned(),
                        holder: current.clone(),
                        expires_at: prev.expires_at,
                    });
                }
            }
        }
        let token = previous.map_or(1, |p| p.token + 1);
        let expires_at = now + to_duration(ttl);
        inner.leases.insert(
            name.to_owned(),
            LeaseSlot {
                holder: Some(holder.to_owned()),
                token,
                expires_at,
            },
        );
        Ok(Lease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            token,
            expires_at,
        })
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        match inner.leases.get_mut(&lease.name) {
            Some(slot)
                if slot.token == lease.token
                    && slot.holder.as_deref() == Some(lease.holder.as_str()) =>
            {
                slot.expires_at = now + to_duration(ttl);
                Ok(Lease {
                    expires_at: slot.expires_at,
                    ..lease.clone()
                })
            }
            _ => Err(StoreError::LeaseLost {
                name: lease.name.clone(),
                holder: lease.holder.clone(),
                token: lease.token,
            }),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(slot) = inner.leases.get_mut(&lease.name) {
            if slot.token == lease.token {
                slot.holder = None;
            }
        }
        Ok(())
    }

    async fn current_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let now = self.clock.now();
        let inner = self.lock();
        Ok(inner.leases.get(name).and_then(|slot| {
            let holder = slot.holder.clone()?;
            (slot.expires_at > now).then(|| Lease {
                name: name.to_owned(),
                holder,
                token: slot.token,
                expires_at: slot.expires_at,
            })
        }))
    }
}
