//! The SQLite [`StateStore`]: the embedded default, one file on disk (or a
//! private in-memory database for tests).
//!
//! # Sharing one file between processes
//!
//! Several processes may open the same file at once (an orchestrator killed
//! with SIGKILL and started again, a CLI next to a daemon). That is safe:
//!
//! - the file is in WAL mode, so readers never wait for the writer, and a
//!   process killed mid-transaction leaves only uncommitted WAL frames,
//!   which SQLite discards on the next open;
//! - `synchronous=NORMAL` loses nothing when a process dies; only a power
//!   failure may lose the last transactions (never corrupt the file);
//! - every write takes SQLite's write lock up front (`BEGIN IMMEDIATE`), so
//!   writers in different processes queue on the lock (up to the busy
//!   timeout) instead of failing halfway through a transaction;
//! - leases and fencing tokens live in the file, so a lease held by one
//!   process fences writes from every other.
//!
//! WAL needs shared memory between the processes: keep the file on a local
//! disk, not a network file system.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::ports::{Commit, Lease, StateStore, StoreError, StoredEvent, Versioned};
use phoenix_core::time::{SharedClock, SystemClock};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, Row, Sqlite, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use crate::common::detached;
use crate::common::{
    corrupt, expiry_millis, invalid, no_nul, positive, prefix_successor, to_db, Malformed,
    TextCommit,
};
use crate::migrations::{pending, BOOTSTRAP};
use crate::sql_reads;
use crate::sql_writes::{
    apply_write, check_fence, finish, lease_timestamp, undecodable, SqlBackend,
};
use crate::{OpenError, DEFAULT_STATE_URL, STATE_URL_ENV};

/// Connections in a file store's pool unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4;

/// How long a write waits for another writer (in this process or another)
/// before failing with [`StoreError::Unavailable`], unless configured
/// otherwise.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite takes the busy timeout as an `int` of milliseconds.
const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// Where a SQLite store keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteLocation {
    /// A database file, created (with its directory) when missing.
    File(PathBuf),
    /// A private in-memory database that lives as long as the store.
    Memory,
}

impl SqliteLocation {
    /// Parses `sqlite://PATH`, `sqlite:PATH` or `sqlite::memory:`.
    ///
    /// `sqlite:///var/lib/phoenix/state.sqlite` is an absolute path and
    /// `sqlite://.phoenix/state.sqlite` a relative one. Query parameters
    /// are refused: the store sets the connection options it relies on.
    pub fn parse(url: &str) -> Result<Self, OpenError> {
        let invalid = |reason: &str| OpenError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = url.trim();
        let Some(rest) = trimmed
            .strip_prefix("sqlite://")
            .or_else(|| trimmed.strip_prefix("sqlite:"))
        else {
            return Err(match trimmed.split_once(':') {
                // Named without the rest of the URL, which may hold a
                // password.
                Some((scheme @ ("postgres" | "postgresql"), _)) => OpenError::InvalidUrl {
                    url: format!("{scheme}://…"),
                    reason: if cfg!(feature = "postgres") {
                        "a PostgreSQL URL: open it with phoenix_state::open or PostgresStore".into()
                    } else {
                        "PostgreSQL is not supported by this build of phoenix-state (feature `postgres`)"
                            .into()
                    },
                },
                _ => invalid("expected sqlite://PATH or sqlite::memory:"),
            });
        };
        if rest == ":memory:" {
            return Ok(Self::Memory);
        }
        if rest.is_empty() {
            return Err(invalid("the file path is empty"));
        }
        if rest.contains(['?', '#']) {
            return Err(invalid(
                "query parameters are not supported (the store sets its own options)",
            ));
        }
        Ok(Self::File(PathBuf::from(rest)))
    }

    /// The location named by `PHOENIX_STATE_URL`, or
    /// [`DEFAULT_STATE_URL`] when it is unset or
    /// empty.
    pub fn from_env() -> Result<Self, OpenError> {
        Self::from_env_value(std::env::var_os(STATE_URL_ENV))
    }

    fn from_env_value(value: Option<std::ffi::OsString>) -> Result<Self, OpenError> {
        match value {
            None => Self::parse(DEFAULT_STATE_URL),
            Some(raw) => match raw.into_string() {
                Ok(url) if url.trim().is_empty() => Self::parse(DEFAULT_STATE_URL),
                Ok(url) => Self::parse(&url),
                Err(raw) => Err(OpenError::InvalidUrl {
                    url: raw.to_string_lossy().into_owned(),
                    reason: format!("{STATE_URL_ENV} is not UTF-8"),
                }),
            },
        }
    }
}

impl fmt::Display for SqliteLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "sqlite://{}", path.display()),
            Self::Memory => f.write_str("sqlite::memory:"),
        }
    }
}

/// Configures and opens a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    location: SqliteLocation,
    max_connections: u32,
    busy_timeout: Duration,
    clock: SharedClock,
}

impl SqliteStoreBuilder {
    /// A builder for a store at `location`, with default settings.
    pub fn new(location: SqliteLocation) -> Self {
        Self {
            location,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            clock: Arc::new(SystemClock),
        }
    }

    /// Connections in the pool of a file store (at least 1). Reads run in
    /// parallel up to this number; writes are serialised anyway.
    ///
    /// An in-memory store always uses a single connection: SQLite shares
    /// an in-memory database between connections only in shared-cache
    /// mode, which locks whole tables between them, and a database in
    /// memory gains nothing from parallel readers anyway.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a write waits for the write lock held by another writer
    /// before failing with [`StoreError::Unavailable`] (capped at about 24
    /// days, SQLite's limit).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout.min(MAX_BUSY_TIMEOUT);
        self
    }

    /// The clock that lease expiry follows; the system clock by default.
    /// Processes sharing a file must use clocks that agree, so replace it
    /// only in single-process tests.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Opens the store: creates the file and its directory if missing,
    /// switches it to WAL mode and applies pending migrations.
    pub async fn open(self) -> Result<SqliteStore, OpenError> {
        match self.location.clone() {
            SqliteLocation::File(path) => self.open_file(path).await,
            SqliteLocation::Memory => self.open_memory().await,
        }
    }

    async fn open_file(self, path: PathBuf) -> Result<SqliteStore, OpenError> {
        // Absolute, so that a relative path such as `file:x` is never taken
        // for a SQLite URI, and so that logs name the real file.
        let path = std::path::absolute(&path).map_err(|source| OpenError::Filesystem {
            path: path.clone(),
            source,
        })?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| OpenError::Filesystem {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        let location = SqliteLocation::File(path.clone());
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .busy_timeout(self.busy_timeout)
            .synchronous(SqliteSynchronous::Normal);

        let op = format!("open {location}");
        let mut setup = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| classify(&op, e))?;
        enable_wal(&mut setup, &location, self.busy_timeout).await?;
        migrate(&mut setup, &self.clock).await?;
        if let Err(e) = setup.close().await {
            tracing::debug!(%location, error = %e, "closing the setup connection failed");
        }

        let pool = SqlitePoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(0)
            .acquire_timeout(self.busy_timeout)
            // A local file does not drop connections the way a network
            // peer does; a ping per acquire would only add latency.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| classify(&op, e))?;
        tracing::info!(%location, "state store open");
        Ok(SqliteStore::new(self, location, pool, None))
    }

    async fn open_memory(self) -> Result<SqliteStore, OpenError> {
        let op = "open sqlite::memory:";
        // `:memory:` gets a process-unique name in shared-cache mode, so
        // the anchor and the pool's connection see the same database.
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| classify(op, e))?
            .busy_timeout(self.busy_timeout);
        // The database lives while one connection to it is open; the
        // anchor keeps it alive even if the pool replaces its connection.
        let mut anchor = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| classify(op, e))?;
        migrate(&mut anchor, &self.clock).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(self.busy_timeout)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| classify(op, e))?;
        Ok(SqliteStore::new(
            self,
            SqliteLocation::Memory,
            pool,
            Some(anchor),
        ))
    }
}

/// The SQLite state store. Cloning is cheap and shares the pool.
///
/// Implements [`StateStore`] with the semantics of
/// [`MemoryStore`](phoenix_core::memory_store::MemoryStore): versioned
/// records with compare-and-swap, atomic commits with events and fencing,
/// append-only event streams numbered from 1, and leases whose fencing
/// tokens grow per name across grants (also across releases and
/// restarts). Lease expiry is wall-clock time in epoch milliseconds.
///
/// Errors: a failed expectation is [`StoreError::Conflict`], a stale fence
/// [`StoreError::Fenced`], the write lock still taken after the busy
/// timeout [`StoreError::Unavailable`] (retryable), a stored value that
/// does not decode [`StoreError::Corrupt`], a value that is not UTF-8 text
/// (or holds NUL) [`StoreError::Invalid`] with an
/// [`InvalidInput`](crate::InvalidInput) source, and anything else
/// [`StoreError::Backend`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    location: SqliteLocation,
    max_connections: u32,
    busy_timeout: Duration,
    clock: SharedClock,
    /// Writers through this store (and its clones) queue here, in order,
    /// rather than on SQLite's lock, whose busy handler polls with sleeps
    /// of up to 100 ms; other stores and processes meet on the lock.
    writer: Mutex<()>,
    /// Keeps an in-memory database alive; `None` for files.
    anchor: Mutex<Option<SqliteConnection>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.inner.location)
            .field("max_connections", &self.inner.max_connections)
            .field("busy_timeout", &self.inner.busy_timeout)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    fn new(
        builder: SqliteStoreBuilder,
        location: SqliteLocation,
        pool: SqlitePool,
        anchor: Option<SqliteConnection>,
    ) -> Self {
        let max_connections = if anchor.is_some() {
            1
        } else {
            builder.max_connections
        };
        Self {
            inner: Arc::new(Inner {
                pool,
                location,
                max_connections,
                busy_timeout: builder.busy_timeout,
                clock: builder.clock,
                writer: Mutex::new(()),
                anchor: Mutex::new(anchor),
            }),
        }
    }

    /// Opens (creating if needed) the database file at `path` with default
    /// settings.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, OpenError> {
        SqliteStoreBuilder::new(SqliteLocation::File(path.into()))
            .open()
            .await
    }

    /// A fresh, private in-memory store with default settings, on one
    /// connection (see [`SqliteStoreBuilder::max_connections`]). Its data
    /// is gone when the last clone of the store is dropped.
    pub async fn open_in_memory() -> Result<Self, OpenError> {
        SqliteStoreBuilder::new(SqliteLocation::Memory).open().await
    }

    /// Opens the store named by a URL such as `sqlite://path/state.sqlite`
    /// (see [`SqliteLocation::parse`]).
    pub async fn from_url(url: &str) -> Result<Self, OpenError> {
        SqliteStoreBuilder::new(SqliteLocation::parse(url)?)
            .open()
            .await
    }

    /// Opens the store named by `PHOENIX_STATE_URL`, by default
    /// `sqlite://.phoenix/state.sqlite` in the working directory.
    pub async fn from_env() -> Result<Self, OpenError> {
        SqliteStoreBuilder::new(SqliteLocation::from_env()?)
            .open()
            .await
    }

    /// A builder for a store at `location`.
    pub fn builder(location: SqliteLocation) -> SqliteStoreBuilder {
        SqliteStoreBuilder::new(location)
    }

    /// Where the data lives (files as absolute paths).
    pub fn location(&self) -> &SqliteLocation {
        &self.inner.location
    }

    /// Closes every connection, waiting for those in use. Later calls on
    /// this store (and its clones) fail with [`StoreError::Backend`]. An
    /// in-memory store's data is gone.
    pub async fn close(&self) {
        self.inner.pool.close().await;
        if let Some(anchor) = self.inner.anchor.lock().await.take() {
            if let Err(e) = anchor.close().await {
                tracing::debug!(error = %e, "closing the in-memory anchor failed");
            }
        }
    }

    /// Takes this store's writer slot, then SQLite's write lock.
    async fn write_tx(
        &self,
        operation: &str,
    ) -> Result<(MutexGuard<'_, ()>, Transaction<'static, Sqlite>), StoreError> {
        let timeout = self.inner.busy_timeout;
        let slot = tokio::time::timeout(timeout, self.inner.writer.lock())
            .await
            .map_err(|_| StoreError::Unavailable {
                operation: operation.to_owned(),
                source: Box::new(WriterQueueTimeout(timeout)),
            })?;
        let tx = self
            .inner
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| classify(operation, e))?;
        Ok((slot, tx))
    }

    fn now_millis(&self) -> i64 {
        self.inner.clock.now().timestamp_millis()
    }
}

/// The store's writer queue was not served within the busy timeout.
#[derive(Debug, thiserror::Error)]
#[error("no write slot within {0:?}: other writers through this store hold it")]
struct WriterQueueTimeout(Duration);

/// SQLite's primary result codes for "someone else holds the lock".
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED)),
        _ => false,
    }
}

/// Maps a database error to the port's classes: lock contention and pool
/// exhaustion are retryable, everything else is a back-end failure.
fn classify(operation: &str, e: sqlx::Error) -> StoreError {
    let retryable = is_busy(&e) || matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_));
    let operation = operation.to_owned();
    let source = Box::new(e);
    if retryable {
        StoreError::Unavailable { operation, source }
    } else {
        StoreError::Backend { operation, source }
    }
}

impl SqlBackend for Sqlite {
    fn classify(operation: &str, e: sqlx::Error) -> StoreError {
        classify(operation, e)
    }

    fn text_bytes(row: &SqliteRow, column: &str) -> Result<Vec<u8>, sqlx::Error> {
        row.try_get(column)
    }
}

async fn enable_wal(
    conn: &mut SqliteConnection,
    location: &SqliteLocation,
    busy_timeout: Duration,
) -> Result<(), OpenError> {
    // Switching to WAL needs an exclusive lock that SQLite's busy handler
    // does not wait for, so a process opening the file while another uses
    // it retries here. Once in WAL mode the setting is a no-op.
    let deadline = tokio::time::Instant::now() + busy_timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        match sqlx::query_scalar::<_, String>("PRAGMA journal_mode = WAL")
            .fetch_one(&mut *conn)
            .await
        {
            Ok(mode) => {
                if !mode.eq_ignore_ascii_case("wal") {
                    // Some file systems cannot do WAL; the rollback journal
                    // is still safe across processes, only slower.
                    tracing::warn!(%location, journal_mode = %mode, "WAL mode unavailable");
                }
                return Ok(());
            }
            Err(e) if is_busy(&e) && tokio::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(classify(&format!("enable WAL on {location}"), e).into()),
        }
    }
}

/// Applies pending migrations in one write transaction, so concurrent
/// openers apply each migration exactly once.
async fn migrate(conn: &mut SqliteConnection, clock: &SharedClock) -> Result<(), OpenError> {
    const OP: &str = "migrate the state store schema";
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| classify(OP, e))?;
    sqlx::raw_sql(BOOTSTRAP)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(OP, e))?;
    let rows = sqlx::query("SELECT version, checksum FROM phoenix_schema_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| classify(OP, e))?;
    let mut applied = BTreeMap::new();
    for row in rows {
        let version: i64 = row
            .try_get("version")
            .map_err(|e| undecodable("phoenix_schema_migrations", e))?;
        let checksum: String = row
            .try_get("checksum")
            .map_err(|e| undecodable(format!("phoenix_schema_migrations#{version}"), e))?;
        applied.insert(version, checksum);
    }
    for m in pending(&applied)? {
        let op = format!("apply migration {} ({})", m.version, m.name);
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(&op, e))?;
        sqlx::query(
            "INSERT INTO phoenix_schema_migrations (version, name, checksum, applied_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(m.checksum())
        .bind(clock.now().timestamp_millis())
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(&op, e))?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    tx.commit().await.map_err(|e| classify(OP, e))?;
    Ok(())
}

/// A lease row as stored.
struct LeaseRow {
    holder: Option<String>,
    token: u64,
    expires_ms: i64,
}

async fn lease_row(
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<Option<LeaseRow>, StoreError> {
    let row = sqlx::query("SELECT holder, token, expires_at FROM phoenix_leases WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| classify(&format!("read lease {name:?}"), e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let key = || format!("leases:{name}");
    let holder: Option<String> = row.try_get("holder").map_err(|e| undecodable(key(), e))?;
    let token: i64 = row.try_get("token").map_err(|e| undecodable(key(), e))?;
    let expires_ms: i64 = row
        .try_get("expires_at")
        .map_err(|e| undecodable(key(), e))?;
    Ok(Some(LeaseRow {
        holder,
        token: positive("token", token).map_err(|m| corrupt(key(), m))?,
        expires_ms,
    }))
}

/// Appends events with per-stream sequence numbers. Each stream's head is
/// bumped once by the number of its events, then the events take the
/// numbers in commit order.
async fn append_events(
    conn: &mut SqliteConnection,
    events: &[(&str, &str)],
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for (stream, _) in events {
        *counts.entry(stream).or_default() += 1;
    }
    let mut next: BTreeMap<&str, i64> = BTreeMap::new();
    for (stream, count) in counts {
        let op = || format!("append to stream {stream:?}");
        let last: i64 = sqlx::query_scalar(
            "INSERT INTO phoenix_streams (stream, last_seq) VALUES ($1, $2) \
             ON CONFLICT (stream) DO UPDATE SET last_seq = phoenix_streams.last_seq + excluded.last_seq \
             RETURNING last_seq",
        )
        .bind(stream)
        .bind(count)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| match e {
            sqlx::Error::ColumnDecode { .. } => undecodable(format!("streams:{stream}"), e),
            e => classify(&op(), e),
        })?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Backend {
            operation: op(),
            source: "the stream head upsert returned no row".into(),
        })?;
        let first = last - count + 1;
        if first < 1 {
            return Err(corrupt(
                format!("streams:{stream}"),
                Malformed::OutOfRange {
                    column: "last_seq",
                    value: last,
                },
            ));
        }
        next.insert(stream, first);
    }
    for (stream, payload) in events {
        let op = || format!("append to stream {stream:?}");
        let seq = next.get_mut(stream).ok_or_else(|| StoreError::Backend {
            operation: op(),
            source: "stream missing from its own commit".into(),
        })?;
        sqlx::query(
            "INSERT INTO phoenix_events (stream, seq, payload, appended_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(*stream)
        .bind(*seq)
        .bind(*payload)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map_err(|e| classify(&op(), e))?;
        *seq += 1;
    }
    Ok(())
}

async fn apply_commit(
    conn: &mut SqliteConnection,
    commit: &TextCommit<'_>,
    now_ms: i64,
) -> Result<Vec<u64>, StoreError> {
    if let Some(fence) = commit.fence {
        let row = lease_row(conn, &fence.lease).await?;
        check_fence(fence, row.as_ref().map(|l| (l.token, l.holder.is_some())))?;
    }
    let mut versions = Vec::with_capacity(commit.writes.len());
    for (write, value) in &commit.writes {
        versions.push(apply_write::<Sqlite>(conn, write, *value).await?);
    }
    append_events(conn, &commit.events, now_ms).await?;
    Ok(versions)
}

/// The writes, run by the trait's methods on tasks of their own (see
/// [`detached`]).
impl SqliteStore {
    async fn commit_now(&self, commit: Commit) -> Result<Vec<u64>, StoreError> {
        const OP: &str = "commit";
        let commit = TextCommit::check(&commit)?;

        let (_slot, mut tx) = self.write_tx(OP).await?;
        let now_ms = self.now_millis();
        let result = apply_commit(&mut tx, &commit, now_ms).await;
        finish(OP, tx, result).await
    }

    async fn acquire_lease_now(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        let op = format!("acquire lease {name:?}");
        no_nul(|| format!("lease name {name:?}"), name).map_err(|e| invalid(&op, e))?;
        no_nul(|| format!("lease holder {holder:?}"), holder).map_err(|e| invalid(&op, e))?;
        let (_slot, mut tx) = self.write_tx(&op).await?;
        // Read the clock only once the lock is ours, so time spent waiting
        // for it neither shortens the lease nor misjudges expiry.
        let now = self.inner.clock.now();
        let result = acquire_in(&mut tx, &op, name, holder, now, ttl).await;
        finish(&op, tx, result).await
    }

    async fn renew_lease_now(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        let op = format!("renew lease {:?}", lease.name);
        let lost = || StoreError::LeaseLost {
            name: lease.name.clone(),
            holder: lease.holder.clone(),
            token: lease.token,
        };
        let Some(token) = to_db(lease.token) else {
            return Err(lost());
        };
        let (_slot, mut tx) = self.write_tx(&op).await?;
        let now = self.inner.clock.now();
        let expires_ms = expiry_millis(now, ttl);
        let result = async {
            let done = sqlx::query(
                "UPDATE phoenix_leases SET expires_at = $1 \
                 WHERE name = $2 AND token = $3 AND holder = $4",
            )
            .bind(expires_ms)
            .bind(&lease.name)
            .bind(token)
            .bind(&lease.holder)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(&op, e))?;
            if done.rows_affected() == 0 {
                return Err(lost());
            }
            Ok(Lease {
                expires_at: lease_timestamp(&lease.name, expires_ms)?,
                ..lease.clone()
            })
        }
        .await;
        finish(&op, tx, result).await
    }

    async fn release_lease_now(&self, lease: &Lease) -> Result<(), StoreError> {
        let op = format!("release lease {:?}", lease.name);
        // A token that cannot be stored was never granted: nothing to free.
        let Some(token) = to_db(lease.token) else {
            return Ok(());
        };
        let (_slot, mut tx) = self.write_tx(&op).await?;
        let result =
            sqlx::query("UPDATE phoenix_leases SET holder = NULL WHERE name = $1 AND token = $2")
                .bind(&lease.name)
                .bind(token)
                .execute(&mut *tx)
                .await
                .map(|_| ())
                .map_err(|e| classify(&op, e));
        finish(&op, tx, result).await
    }
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        sql_reads::get(&self.inner.pool, key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        let op = || format!("list {prefix:?}");
        // A key range, not LIKE: `_` and `%` in keys are literal.
        let query = match prefix_successor(prefix) {
            Some(upper) => sqlx::query(
                "SELECT key, version, value FROM phoenix_records \
                 WHERE key >= $1 AND key < $2 ORDER BY key",
            )
            .bind(prefix)
            .bind(upper),
            None => sqlx::query(
                "SELECT key, version, value FROM phoenix_records WHERE key >= $1 ORDER BY key",
            )
            .bind(prefix),
        };
        let rows = query
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| classify(&op(), e))?;
        rows.iter()
            .map(|row| sql_reads::keyed_record::<Sqlite>(prefix, row))
            .collect()
    }

    async fn commit(&self, commit: Commit) -> Result<Vec<u64>, StoreError> {
        let this = self.clone();
        detached("commit", async move { this.commit_now(commit).await }).await
    }

    async fn events(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        sql_reads::events(&self.inner.pool, stream, after, limit).await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        let this = self.clone();
        let (name, holder) = (name.to_owned(), holder.to_owned());
        detached("acquire lease", async move {
            this.acquire_lease_now(&name, &holder, ttl).await
        })
        .await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        let this = self.clone();
        let lease = lease.clone();
        detached("renew lease", async move {
            this.renew_lease_now(&lease, ttl).await
        })
        .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let this = self.clone();
        let lease = lease.clone();
        detached("release lease", async move {
            this.release_lease_now(&lease).await
        })
        .await
    }

    async fn current_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let mut conn = self
            .inner
            .pool
            .acquire()
            .await
            .map_err(|e| classify(&format!("read lease {name:?}"), e))?;
        let row = lease_row(&mut conn, name).await?;
        let now_ms = self.now_millis();
        match row {
            Some(LeaseRow {
                holder: Some(holder),
                token,
                expires_ms,
            }) if expires_ms > now_ms => Ok(Some(Lease {
                name: name.to_owned(),
                holder,
                token,
                expires_at: lease_timestamp(name, expires_ms)?,
            })),
            _ => Ok(None),
        }
    }
}

async fn acquire_in(
    conn: &mut SqliteConnection,
    op: &str,
    name: &str,
    holder: &str,
    now: phoenix_core::time::Timestamp,
    ttl: Duration,
) -> Result<Lease, StoreError> {
    let previous = lease_row(conn, name).await?;
    if let Some(LeaseRow {
        holder: Some(current),
        expires_ms,
        ..
    }) = &previous
    {
        if *expires_ms > now.timestamp_millis() {
            return Err(StoreError::LeaseHeld {
                name: name.to_owned(),
                holder: current.clone(),
                expires_at: lease_timestamp(name, *expires_ms)?,
            });
        }
    }
    let token = match &previous {
        None => 1,
        Some(prev) => prev.token.saturating_add(1),
    };
    let Some(db_token) = to_db(token) else {
        return Err(corrupt(
            format!("leases:{name}"),
            Malformed::OutOfRange {
                column: "token",
                value: i64::MAX,
            },
        ));
    };
    let expires_ms = expiry_millis(now, ttl);
    sqlx::query(
        "INSERT INTO phoenix_leases (name, holder, token, expires_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE \
         SET holder = excluded.holder, token = excluded.token, expires_at = excluded.expires_at",
    )
    .bind(name)
    .bind(holder)
    .bind(db_token)
    .bind(expires_ms)
    .execute(&mut *conn)
    .await
    .map_err(|e| classify(op, e))?;
    Ok(Lease {
        name: name.to_owned(),
        holder: holder.to_owned(),
        token,
        expires_at: lease_timestamp(name, expires_ms)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            SqliteLocation::parse("sqlite::memory:").unwrap(),
            SqliteLocation::Memory
        );
        assert_eq!(
            SqliteLocation::parse("sqlite:///var/lib/phoenix/state.sqlite").unwrap(),
            SqliteLocation::File("/var/lib/phoenix/state.sqlite".into())
        );
        assert_eq!(
            SqliteLocation::parse("sqlite://.phoenix/state.sqlite").unwrap(),
            SqliteLocation::File(".phoenix/state.sqlite".into())
        );
        assert_eq!(
            SqliteLocation::parse(" sqlite:state.db ").unwrap(),
            SqliteLocation::File("state.db".into())
        );
        for bad in [
            "postgres://db/phoenix",
            "state.sqlite",
            "sqlite://",
            "sqlite://x.db?mode=ro",
            "",
        ] {
            assert!(
                matches!(
                    SqliteLocation::parse(bad),
                    Err(OpenError::InvalidUrl { .. })
                ),
                "{bad:?} must be refused"
            );
        }
        let err = SqliteLocation::parse("postgresql://h/db").unwrap_err();
        assert!(err.to_string().contains("PostgreSQL"), "{err}");
    }

    #[test]
    fn env_value_falls_back_to_the_default() {
        let default = SqliteLocation::parse(DEFAULT_STATE_URL).unwrap();
        assert_eq!(SqliteLocation::from_env_value(None).unwrap(), default);
        assert_eq!(
            SqliteLocation::from_env_value(Some("  ".into())).unwrap(),
            default
        );
        assert_eq!(
            SqliteLocation::from_env_value(Some("sqlite::memory:".into())).unwrap(),
            SqliteLocation::Memory
        );
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let raw = std::ffi::OsString::from_vec(vec![b's', 0xff]);
            assert!(matches!(
                SqliteLocation::from_env_value(Some(raw)),
                Err(OpenError::InvalidUrl { .. })
            ));
        }
    }

    #[test]
    fn builder_clamps_settings() {
        let b = SqliteStoreBuilder::new(SqliteLocation::Memory)
            .max_connections(0)
            .busy_timeout(Duration::MAX);
        assert_eq!(b.max_connections, 1);
        assert_eq!(b.busy_timeout, MAX_BUSY_TIMEOUT);
    }

    #[test]
    fn lock_errors_are_retryable() {
        let busy = sqlx::Error::PoolTimedOut;
        assert!(classify("x", busy).is_retryable());
        let other = sqlx::Error::RowNotFound;
        let e = classify("get \"k\"", other);
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("get \"k\""), "{e}");
    }
}
