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

/// One stream's events, front-coded and packed into fixed-size chunks.
///
/// A stream holds several events per server and operation (a 10,000-server
/// refresh appends some 90,000), and consecutive events repeat most of
/// their JSON: the time, the deployment, the operation, the kind, the pool.
/// Each event is stored as the length of the prefix it shares with the
/// event before it and the bytes that differ, as sorted-string tables do.
/// Every [`RUN`]th event is stored whole, so reading one decodes at most
/// `RUN` events. Chunks are allocated a megabyte at a time rather than
/// per event, and a huge buffer is never reallocated.
#[derive(Debug, Default)]
struct Stream {
    chunks: Vec<Vec<u8>>,
    /// (chunk, offset) of every `RUN`th event, the ones stored whole.
    restarts: Vec<(u32, u32)>,
    len: usize,
    /// The events' own size, before coding.
    raw: usize,
    /// The last event, whole: the next one is coded against it.
    last: Vec<u8>,
}

const CHUNK: usize = 1 << 20;
/// Events per restart point: reading event `i` decodes from event
/// `i - i % RUN`.
const RUN: usize = 16;

/// Appends `n` as a LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a LEB128 varint at `*at`, advancing it. Only ever reads what
/// [`put_varint`] wrote into the same stream.
fn get_varint(buf: &[u8], at: &mut usize) -> usize {
    let mut n = 0usize;
    let mut shift = 0;
    while let Some(&b) = buf.get(*at) {
        *at += 1;
        n |= usize::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    n
}

impl Stream {
    fn push(&mut self, payload: &[u8]) {
        let shared = if self.len % RUN == 0 {
            0
        } else {
            self.last
                .iter()
                .zip(payload)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let rest = &payload[shared..];
        let mut head = Vec::with_capacity(10);
        put_varint(&mut head, shared);
        put_varint(&mut head, rest.len());
        let need = head.len() + rest.len();
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= need);
        if !fits {
            self.chunks.push(Vec::with_capacity(CHUNK.max(need)));
        }
        let n = self.chunks.len() - 1;
        let chunk = &mut self.chunks[n];
        if self.len % RUN == 0 {
            // Chunks are at most max(1 MiB, one payload) long, and a
            // payload never reaches 4 GiB.
            self.restarts.push((n as u32, chunk.len() as u32));
        }
        chunk.extend_from_slice(&head);
        chunk.extend_from_slice(rest);
        self.last.truncate(shared);
        self.last.extend_from_slice(rest);
        self.len += 1;
        self.raw += payload.len();
    }

    /// Events `from..` in order, each whole.
    fn iter_from(&self, from: usize) -> StreamIter<'_> {
        let (chunk, offset) = self
            .restarts
            .get(from / RUN)
            .map_or((usize::MAX, 0), |&(c, o)| (c as usize, o as usize));
        let mut it = StreamIter {
            stream: self,
            chunk,
            offset,
            next: from - from % RUN,
            current: Vec::new(),
        };
        for _ in 0..from % RUN {
            it.advance();
        }
        it
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Bytes held (what the chunks hold, not their spare capacity).
    fn bytes(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum::<usize>()
            + self.restarts.len() * std::mem::size_of::<(u32, u32)>()
            + self.last.len()
    }
}

/// Decodes a stream's events one after the other.
struct StreamIter<'a> {
    stream: &'a Stream,
    chunk: usize,
    offset: usize,
    /// Index of the event the next `advance` decodes.
    next: usize,
    current: Vec<u8>,
}

impl StreamIter<'_> {
    /// Decodes the next event into `current`; false at the end.
    fn advance(&mut self) -> bool {
        if self.next >= self.stream.len {
            return false;
        }
        let Some(mut chunk) = self.stream.chunks.get(self.chunk) else {
            return false;
        };
        if self.offset >= chunk.len() {
            // An event never spans chunks: it starts the next one.
            self.chunk += 1;
            self.offset = 0;
            match self.stream.chunks.get(self.chunk) {
                Some(c) => chunk = c,
                None => return false,
            }
        }
        let shared = get_varint(chunk, &mut self.offset);
        let len = get_varint(chunk, &mut self.offset);
        let end = (self.offset + len).min(chunk.len());
        self.current.truncate(shared);
        self.current.extend_from_slice(&chunk[self.offset..end]);
        self.offset = end;
        self.next += 1;
        true
    }
}

impl Iterator for StreamIter<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        self.advance().then(|| self.current.clone())
    }
}

#[derive(Debug, Default)]
struct Inner {
    records: BTreeMap<String, Versioned>,
    events: BTreeMap<String, Stream>,
    leases: BTreeMap<String, LeaseSlot>,
}

/// What a [`MemoryStore`] holds, for memory measurements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Records (latest versions only: older ones are not kept).
    pub records: usize,
    /// Their keys and values, in bytes.
    pub record_bytes: usize,
    /// Events, in every stream.
    pub events: usize,
    /// The events' JSON, in bytes.
    pub event_json_bytes: usize,
    /// What holds them (front-coded, with the restart index), in bytes.
    pub event_bytes: usize,
}

impl StoreUsage {
    /// Bytes held, records and events.
    pub fn bytes(&self) -> usize {
        self.record_bytes + self.event_bytes
    }
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
            for (i, e) in events.iter_from(0).enumerate() {
                out.push((format!("events:{stream}#{}", i + 1), e));
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

    /// Total bytes held (records, and events as stored), for memory
    /// measurements.
    pub fn bytes(&self) -> usize {
        self.usage().bytes()
    }

    /// What the store holds, in counts and bytes.
    pub fn usage(&self) -> StoreUsage {
        let inner = self.lock();
        StoreUsage {
            records: inner.records.len(),
            record_bytes: inner
                .records
                .iter()
                .map(|(k, v)| k.len() + v.value.len())
                .sum(),
            events: inner.events.values().map(Stream::len).sum(),
            event_json_bytes: inner.events.values().map(|s| s.raw).sum(),
            event_bytes: inner.events.values().map(Stream::bytes).sum(),
        }
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
        Ok(events
            .iter_from(first)
            .take(limit)
            .zip(first as u64 + 1..)
            .map(|(payload, seq)| StoredEvent {
                stream: stream.to_owned(),
                seq,
                payload,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::EventAppend;

    fn append(events: &[Vec<u8>]) -> Commit {
        Commit {
            fence: None,
            writes: vec![],
            events: events
                .iter()
                .map(|p| EventAppend {
                    stream: "s".into(),
                    payload: p.clone(),
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn front_coded_events_read_back_whole_from_any_position() {
        let store = MemoryStore::default();
        let mut all: Vec<Vec<u8>> = Vec::new();
        for i in 0..200u32 {
            let p = match i % 7 {
                // Empty, a prefix of the one before, one longer than a chunk.
                0 => Vec::new(),
                1 => all
                    .last()
                    .map(|l| l[..l.len() / 2].to_vec())
                    .unwrap_or_default(),
                2 if i == 100 => vec![b'x'; CHUNK + 3],
                _ => format!(r#"{{"at":"2030","event":"server_active","slot":{i}}}"#).into_bytes(),
            };
            all.push(p);
        }
        for batch in all.chunks(13) {
            store.commit(append(batch)).await.unwrap();
        }
        assert_eq!(store.events_len("s"), all.len());
        for after in [0, 1, 15, 16, 17, 99, 100, 101, 199, 200, 500] {
            let got = store.events("s", after, 40).await.unwrap();
            let want: Vec<&Vec<u8>> = all.iter().skip(after as usize).take(40).collect();
            assert_eq!(got.len(), want.len(), "after {after}");
            for (k, (g, w)) in got.iter().zip(want).enumerate() {
                assert_eq!(g.seq, after + k as u64 + 1);
                assert_eq!(&g.payload, w, "event {}", g.seq);
            }
        }
        let dumped: Vec<Vec<u8>> = store.dump().into_iter().map(|(_, v)| v).collect();
        assert_eq!(dumped, all);
    }

    #[tokio::test]
    async fn repetitive_events_take_a_fraction_of_their_size() {
        let store = MemoryStore::default();
        let events: Vec<Vec<u8>> = (0..1000)
            .map(|i| {
                format!(
                    r#"{{"at":"2030-01-01T00:00:00Z","deployment":"shop","operation":"op-1","event":"server_active","pool":"web-v1-1","slot":{i},"server":"srv-{i:06}"}}"#
                )
                .into_bytes()
            })
            .collect();
        let raw: usize = events.iter().map(Vec::len).sum();
        store.commit(append(&events)).await.unwrap();
        let usage = store.usage();
        assert_eq!((usage.events, usage.event_json_bytes), (1000, raw));
        assert!(usage.event_bytes * 3 < raw, "{usage:?}");
    }
}
