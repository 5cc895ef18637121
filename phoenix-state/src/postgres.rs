//! The PostgreSQL [`StateStore`] (feature `postgres`): one database shared
//! by several orchestrators on several hosts (CI agents, a daemon and a
//! CLI), with the same schema and semantics as the SQLite store.
//!
//! ```no_run
//! use phoenix_core::ports::StateStore;
//! use phoenix_state::PostgresStore;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // A URL, or the standard PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE/
//! // PGSSLMODE variables with `PostgresStore::from_env()`.
//! let store = PostgresStore::builder_from_url("postgres://phoenix@db.internal/phoenix?schema=shop")?
//!     .max_connections(5)
//!     .open()
//!     .await?;
//! println!("{store:?}"); // the password never appears
//! let lease = store.acquire_lease("deployments/shop", "ci-agent-7", std::time::Duration::from_secs(60)).await?;
//! # let _ = lease;
//! # Ok(()) }
//! ```
//!
//! # How it stays correct with concurrent transactions
//!
//! PostgreSQL runs transactions of different orchestrators at the same
//! time (READ COMMITTED), where SQLite serialises every writer. So:
//!
//! - a commit reads its fence with `SELECT … FOR UPDATE`: a lease grant
//!   (an `UPDATE` of the same row) waits for the commit, and a commit waits
//!   for a grant in progress and then sees the new token, so a stale
//!   holder's commit is either entirely before the takeover or fenced;
//! - every compare-and-swap is checked by the statement that writes
//!   (`UPDATE … WHERE version = $n`, `INSERT … ON CONFLICT DO NOTHING`), which
//!   PostgreSQL re-evaluates on the newest row after waiting for a
//!   concurrent writer;
//! - event sequence numbers come from one upsert of the stream's head row,
//!   which holds that row's lock until the commit ends: appenders of one
//!   stream queue there, and a rolled-back commit gives its numbers back,
//!   so streams stay gap-free;
//! - lease grants are one conditional `UPDATE` (or an `INSERT … ON CONFLICT
//!   DO NOTHING` for a new name), so two orchestrators racing for an
//!   expired lease cannot both win.
//!
//! Lease expiry is judged by the database's clock (`clock_timestamp()`),
//! not the orchestrators', so hosts whose clocks disagree still agree on
//! who holds a lease.
//!
//! Serialization failures, deadlocks, lock and statement timeouts, a
//! server shutting down, connection loss and an exhausted pool are
//! [`StoreError::Unavailable`] (retryable); the executor retries them.
//!
//! # Key order
//!
//! [`StateStore::list`] returns keys in byte order, like the other stores.
//! The shared schema creates `phoenix_records.key` with the database's
//! default collation, which may be linguistic (`en_US.UTF-8`, ICU), where
//! `a-b` sorts after `a/b` and a key range would miss or add keys. The
//! range queries therefore compare `key COLLATE "C"` (byte order), and this
//! back end adds one index on that expression after the shared migrations
//! (SQLite has no `"C"` collation and needs none: its default is already
//! byte order).
//!
//! # Schemas
//!
//! [`PostgresStoreBuilder::schema`] (or `?schema=NAME` in the URL, a
//! Phoenix extension removed before the URL reaches the driver) keeps the
//! tables in their own schema, created when missing: several Phoenix
//! installations, or several tests, can share one database.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use phoenix_core::ports::{Commit, Lease, StateStore, StoreError, StoredEvent, Versioned};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, Row, Transaction};

use crate::common::detached;
use crate::common::{
    corrupt, invalid, no_nul, positive, prefix_successor, to_db, Malformed, TextCommit,
};
use crate::migrations::{pending, BOOTSTRAP};
use crate::sql_reads;
use crate::sql_writes::{
    apply_write, check_fence, finish, lease_timestamp, undecodable, SqlBackend,
};
use crate::{OpenError, STATE_URL_ENV};

/// Connections in the pool unless configured otherwise: enough for an
/// orchestrator (its executor writes one commit at a time; reads and lease
/// renewals run beside it) without crowding a server shared by many.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 5;

/// How long a call waits for a free connection (or a new one to be
/// established) before failing with [`StoreError::Unavailable`].
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one statement may run (including waiting for a row lock)
/// before the server cancels it, which the store reports as
/// [`StoreError::Unavailable`].
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the server lets a session sit idle inside a transaction before
/// it ends the session. The store's transactions never wait on anything
/// but the database, so only a stalled or frozen client (SIGSTOP, a VM
/// paused mid-commit) trips it, and its locks are freed for the others.
pub const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15);

/// Leases longer than this are capped to it (a century), so that expiry
/// arithmetic in the database cannot overflow.
const MAX_LEASE_TTL_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// The advisory lock that serialises migrations of every Phoenix schema on
/// a server ("PHOENIX" in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x5048_4f45_4e49_5801;

/// The database's wall clock in epoch milliseconds. `clock_timestamp()`,
/// not `now()`: the latter is the start of the transaction, which may be
/// long past after a wait for a lock.
const DB_NOW_MS: &str = "CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT)";

/// Replaces the password in a connection URL (user info and a `password`
/// query parameter) with `***`, for messages and logs.
///
/// ```
/// assert_eq!(
///     phoenix_state::postgres::redact_url("postgres://ci:s3cret@db:5432/phoenix?password=x&sslmode=require"),
///     "postgres://ci:***@db:5432/phoenix?password=***&sslmode=require"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => format!("{userinfo}@{host}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// True for `postgres://` and `postgresql://` URLs.
pub fn is_postgres_url(url: &str) -> bool {
    let url = url.trim_start();
    ["postgres://", "postgresql://"].iter().any(|p| {
        url.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    })
}

/// Splits the Phoenix-only `schema` parameter off a URL's query.
fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("schema", value)) => {
                schema = Some(value.to_owned());
                false
            }
            _ => !pair.is_empty(),
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, schema)
}

/// A schema name the store will quote into SQL: lower-case ASCII letters,
/// digits and `_`, not starting with a digit, at most 63 bytes (the
/// server's identifier limit), and not a system schema.
fn check_schema(name: &str) -> Result<(), OpenError> {
    let refuse = |reason: &str| OpenError::InvalidSchema {
        schema: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() || name.len() > 63 {
        return Err(refuse("must be 1 to 63 characters long"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(refuse("only a-z, 0-9 and _ are allowed"));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(refuse("must not start with a digit"));
    }
    if name.starts_with("pg_") || name == "information_schema" {
        return Err(refuse("is reserved by PostgreSQL"));
    }
    Ok(())
}

/// Configures and opens a [`PostgresStore`].
#[derive(Clone)]
pub struct PostgresStoreBuilder {
    options: PgConnectOptions,
    /// Kept apart from `options` (whose `Debug` would print it) until the
    /// store connects.
    password: Option<SecretString>,
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
    statement_timeout: Duration,
    idle_in_transaction_timeout: Duration,
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStoreBuilder")
            .field("target", &describe(&self.options, self.schema.as_deref()))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish_non_exhaustive()
    }
}

/// `postgres://user@host:port/db (schema s)`, never with a password.
fn describe(options: &PgConnectOptions, schema: Option<&str>) -> String {
    let place = match options.get_socket() {
        Some(dir) => format!("{}:{}", dir.display(), options.get_port()),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    let mut s = format!(
        "postgres://{}@{place}/{}",
        options.get_username(),
        options.get_database().unwrap_or_default()
    );
    if let Some(schema) = schema {
        s.push_str(&format!(" (schema {schema})"));
    }
    s
}

impl PostgresStoreBuilder {
    /// A builder for the server `options` describe, with default settings.
    pub fn from_options(options: PgConnectOptions) -> Self {
        Self {
            options,
            password: None,
            schema: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            idle_in_transaction_timeout: DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT,
        }
    }

    /// A builder from `postgres://user:password@host:port/database?…`. The
    /// driver's parameters (`sslmode`, `sslrootcert`, `application_name`,
    /// `options`, …) apply; `schema=NAME` selects the schema. Variables such
    /// as `PGPASSWORD` fill in what the URL leaves out, and so does
    /// `~/.pgpass`. Errors name the URL with its password replaced.
    pub fn from_url(url: &str) -> Result<Self, OpenError> {
        let invalid = |reason: String| OpenError::InvalidUrl {
            url: redact_url(url),
            reason,
        };
        if !is_postgres_url(url) {
            return Err(invalid("expected postgres://…".into()));
        }
        let (driver_url, schema) = split_schema(url.trim());
        let options = PgConnectOptions::from_str(&driver_url)
            // The driver's message describes the URL's syntax, never its
            // password.
            .map_err(|e| invalid(e.to_string()))?;
        let mut builder = Self::from_options(options);
        if let Some(schema) = schema {
            check_schema(&schema)?;
            builder.schema = Some(schema);
        }
        Ok(builder)
    }

    /// A builder from the environment: `PHOENIX_STATE_URL` when it holds a
    /// PostgreSQL URL, else the standard libpq variables (`PGHOST`,
    /// `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`,
    /// `PGAPPNAME`, `PGOPTIONS`) and `~/.pgpass`.
    pub fn from_env() -> Result<Self, OpenError> {
        match std::env::var(STATE_URL_ENV) {
            Ok(url) if is_postgres_url(&url) => Self::from_url(&url),
            _ => Ok(Self::from_options(PgConnectOptions::new())),
        }
    }

    /// The password, kept secret until the store connects (it wins over
    /// one in the URL or `PGPASSWORD`).
    pub fn password(mut self, password: SecretString) -> Self {
        self.password = Some(password);
        self
    }

    /// Keeps the tables in `schema`, created when missing (lower-case
    /// letters, digits and `_`; checked when the store opens).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Connections in the pool (at least 1; default
    /// [`DEFAULT_MAX_CONNECTIONS`]).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a call waits for a connection (default
    /// [`DEFAULT_ACQUIRE_TIMEOUT`]).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How long one statement may run, lock waits included (default
    /// [`DEFAULT_STATEMENT_TIMEOUT`]; at least 1 ms).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long a session may sit idle in a transaction before the server
    /// ends it (default [`DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT`]; at least
    /// 1 ms).
    pub fn idle_in_transaction_timeout(mut self, timeout: Duration) -> Self {
        self.idle_in_transaction_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Where the store connects, without the password.
    pub fn target(&self) -> String {
        describe(&self.options, self.schema.as_deref())
    }

    fn connect_options(&self) -> PgConnectOptions {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut settings: Vec<(&str, String)> = vec![
            ("statement_timeout", ms(self.statement_timeout).to_string()),
            (
                "idle_in_transaction_session_timeout",
                ms(self.idle_in_transaction_timeout).to_string(),
            ),
        ];
        if let Some(schema) = &self.schema {
            // Checked by `check_schema`: no quoting or spaces needed.
            settings.push(("search_path", schema.clone()));
        }
        let mut options = self.options.clone().options(settings);
        if options.get_application_name().is_none() {
            options = options.application_name("phoenix-state");
        }
        if let Some(password) = &self.password {
            options = options.password(password.expose_secret());
        }
        options
    }

    /// Connects, creates the schema if asked for and missing, and applies
    /// pending migrations (once, even when several orchestrators open the
    /// store at the same moment).
    pub async fn open(self) -> Result<PostgresStore, OpenError> {
        if let Some(schema) = &self.schema {
            check_schema(schema)?;
        }
        let target = self.target();
        let options = self.connect_options();
        let op = format!("connect to {target}");
        let mut setup =
            tokio::time::timeout(self.acquire_timeout, PgConnection::connect_with(&options))
                .await
                .map_err(|_| StoreError::Unavailable {
                    operation: op.clone(),
                    source: format!("no connection within {:?}", self.acquire_timeout).into(),
                })?
                .map_err(|e| classify(&op, e))?;
        migrate(&mut setup, self.schema.as_deref()).await?;
        if let Err(e) = setup.close().await {
            tracing::debug!(%target, error = %e, "closing the setup connection failed");
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(0)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(Some(Duration::from_secs(300)))
            // A network peer drops connections (restarts, fail-overs): a
            // ping before reuse turns that into a fresh connection.
            .test_before_acquire(true)
            .connect_lazy_with(options);
        tracing::info!(%target, "state store open");
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                target,
                schema: self.schema,
                max_connections: self.max_connections,
            }),
        })
    }
}

/// The PostgreSQL state store. Cloning is cheap and shares the pool.
///
/// Implements [`StateStore`] with the semantics of
/// [`MemoryStore`](phoenix_core::memory_store::MemoryStore) and
/// [`SqliteStore`](crate::SqliteStore) (the conformance suite checks all
/// three), on the same schema. See the [module documentation](self) for how
/// it stays correct under concurrent transactions.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    target: String,
    schema: Option<String>,
    max_connections: u32,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.inner.target)
            .field("max_connections", &self.inner.max_connections)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Opens the store at `url` with default settings (see
    /// [`PostgresStoreBuilder::from_url`]).
    pub async fn connect(url: &str) -> Result<Self, OpenError> {
        PostgresStoreBuilder::from_url(url)?.open().await
    }

    /// Opens the store the environment names (see
    /// [`PostgresStoreBuilder::from_env`]).
    pub async fn from_env() -> Result<Self, OpenError> {
        PostgresStoreBuilder::from_env()?.open().await
    }

    /// A builder for `url`.
    pub fn builder_from_url(url: &str) -> Result<PostgresStoreBuilder, OpenError> {
        PostgresStoreBuilder::from_url(url)
    }

    /// Where the store is connected, without the password.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// The schema holding the tables, when one was chosen.
    pub fn schema(&self) -> Option<&str> {
        self.inner.schema.as_deref()
    }

    /// Closes every connection, waiting for those in use. Later calls fail
    /// with [`StoreError::Backend`].
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    /// Drops the store's schema and everything in it, then closes the
    /// store: for tests that share a server, and for decommissioning. A
    /// store without a schema of its own (its tables in `public` or the
    /// server's search path) refuses, so this never drops shared tables.
    pub async fn drop_schema(self) -> Result<(), StoreError> {
        let Some(schema) = self.inner.schema.clone() else {
            return Err(StoreError::Invalid {
                operation: "drop schema".into(),
                source: "the store has no schema of its own".into(),
            });
        };
        let op = format!("drop schema {schema}");
        let result = sqlx::raw_sql(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(&schema)
        ))
        .execute(&self.inner.pool)
        .await
        .map(|_| ())
        .map_err(|e| classify(&op, e));
        self.close().await;
        result
    }

    async fn begin(&self, operation: &str) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.inner
            .pool
            .begin()
            .await
            .map_err(|e| classify(operation, e))
    }
}

/// SQLSTATEs after which the same call may succeed: serialization failure,
/// deadlock, lock not available, statement timeout (query canceled), the
/// server shutting down or starting, too many connections or other
/// exhausted resources, and every connection exception (class 08).
fn is_transient_sqlstate(code: &str) -> bool {
    matches!(
        code,
        "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03"
    ) || code.starts_with("08")
        || code.starts_with("53")
}

/// Maps a database error to the port's classes.
fn classify(operation: &str, e: sqlx::Error) -> StoreError {
    let retryable = match &e {
        sqlx::Error::Database(db) => db.code().is_some_and(|c| is_transient_sqlstate(&c)),
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    };
    let operation = operation.to_owned();
    let source = Box::new(e);
    if retryable {
        StoreError::Unavailable { operation, source }
    } else {
        StoreError::Backend { operation, source }
    }
}

impl SqlBackend for Postgres {
    fn classify(operation: &str, e: sqlx::Error) -> StoreError {
        classify(operation, e)
    }

    fn text_bytes(row: &PgRow, column: &str) -> Result<Vec<u8>, sqlx::Error> {
        row.try_get::<String, _>(column).map(String::into_bytes)
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the schema if asked for and applies pending migrations, all
/// under an advisory lock, so racing orchestrators migrate once.
async fn migrate(conn: &mut PgConnection, schema: Option<&str>) -> Result<(), OpenError> {
    const OP: &str = "migrate the state store schema";
    let mut tx = conn.begin().await.map_err(|e| classify(OP, e))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(OP, e))?;
    if let Some(schema) = schema {
        sqlx::raw_sql(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(schema)
        ))
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(&format!("create schema {schema}"), e))?;
    }
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
        sqlx::query(&format!(
            "INSERT INTO phoenix_schema_migrations (version, name, checksum, applied_at) \
             VALUES ($1, $2, $3, {DB_NOW_MS})"
        ))
        .bind(m.version)
        .bind(m.name)
        .bind(m.checksum())
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(&op, e))?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    // Byte-order listing under any default collation (see the module
    // documentation); PostgreSQL-only, so it lives here, not in the shared
    // migration files.
    sqlx::raw_sql(
        "CREATE INDEX IF NOT EXISTS phoenix_records_key_bytewise \
         ON phoenix_records (key COLLATE \"C\")",
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| classify("create the byte-order key index", e))?;
    tx.commit().await.map_err(|e| classify(OP, e))?;
    Ok(())
}

/// A lease row as stored, with the database's clock when it was read.
struct LeaseRow {
    holder: Option<String>,
    token: u64,
    expires_ms: i64,
    now_ms: i64,
}

async fn lease_row(
    conn: &mut PgConnection,
    name: &str,
    for_update: bool,
) -> Result<Option<LeaseRow>, StoreError> {
    let sql = if for_update {
        format!(
            "SELECT holder, token, expires_at, {DB_NOW_MS} AS now_ms FROM phoenix_leases \
             WHERE name = $1 FOR UPDATE"
        )
    } else {
        format!(
            "SELECT holder, token, expires_at, {DB_NOW_MS} AS now_ms FROM phoenix_leases \
             WHERE name = $1"
        )
    };
    let row = sqlx::query(&sql)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| classify(&format!("read lease {name:?}"), e))?;
    row.map(|row| decode_lease(name, &row)).transpose()
}

fn decode_lease(name: &str, row: &PgRow) -> Result<LeaseRow, StoreError> {
    let key = || format!("leases:{name}");
    let holder: Option<String> = row.try_get("holder").map_err(|e| undecodable(key(), e))?;
    let token: i64 = row.try_get("token").map_err(|e| undecodable(key(), e))?;
    let expires_ms: i64 = row
        .try_get("expires_at")
        .map_err(|e| undecodable(key(), e))?;
    let now_ms: i64 = row.try_get("now_ms").map_err(|e| undecodable(key(), e))?;
    Ok(LeaseRow {
        holder,
        token: positive("token", token).map_err(|m| corrupt(key(), m))?,
        expires_ms,
        now_ms,
    })
}

fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis())
        .unwrap_or(i64::MAX)
        .min(MAX_LEASE_TTL_MS)
}

/// Appends events with per-stream sequence numbers: each stream's head is
/// bumped once (locking it until the commit ends), then the events of the
/// commit go in with one statement per stream.
async fn append_events(conn: &mut PgConnection, events: &[(&str, &str)]) -> Result<(), StoreError> {
    let mut by_stream: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (stream, payload) in events {
        by_stream.entry(stream).or_default().push(payload);
    }
    // Streams in key order, so two commits touching the same streams lock
    // their heads in the same order and cannot deadlock on them.
    for (stream, payloads) in by_stream {
        let op = || format!("append to stream {stream:?}");
        let count = i64::try_from(payloads.len()).unwrap_or(i64::MAX);
        let last: i64 = sqlx::query_scalar(
            "INSERT INTO phoenix_streams (stream, last_seq) VALUES ($1, $2) \
             ON CONFLICT (stream) DO UPDATE SET last_seq = phoenix_streams.last_seq + excluded.last_seq \
             RETURNING last_seq",
        )
        .bind(stream)
        .bind(count)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| match e {
            sqlx::Error::ColumnDecode { .. } => undecodable(format!("streams:{stream}"), e),
            e => classify(&op(), e),
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
        // One round trip for all of a stream's events of this commit: the
        // payloads as an array, numbered from `first` in commit order.
        let payloads: Vec<String> = payloads.iter().map(|p| (*p).to_owned()).collect();
        sqlx::query(&format!(
            "INSERT INTO phoenix_events (stream, seq, payload, appended_at) \
             SELECT $1, $2 + p.ord - 1, p.payload, {DB_NOW_MS} \
             FROM UNNEST($3::text[]) WITH ORDINALITY AS p(payload, ord)"
        ))
        .bind(stream)
        .bind(first)
        .bind(&payloads)
        .execute(&mut *conn)
        .await
        .map_err(|e| classify(&op(), e))?;
    }
    Ok(())
}

async fn apply_commit(
    conn: &mut PgConnection,
    commit: &TextCommit<'_>,
) -> Result<Vec<u64>, StoreError> {
    if let Some(fence) = commit.fence {
        // FOR UPDATE: a concurrent grant of this lease waits for us, or we
        // for it (then see its new token).
        let row = lease_row(conn, &fence.lease, true).await?;
        check_fence(fence, row.as_ref().map(|l| (l.token, l.holder.is_some())))?;
    }
    let mut versions = Vec::with_capacity(commit.writes.len());
    for (write, value) in &commit.writes {
        versions.push(apply_write::<Postgres>(conn, write, *value).await?);
    }
    append_events(conn, &commit.events).await?;
    Ok(versions)
}

/// What one attempt at granting a lease found.
enum Grant {
    Granted(Lease),
    Held(StoreError),
    /// Someone changed the row between our statements: try again.
    Raced,
}

async fn try_acquire(
    pool: &PgPool,
    name: &str,
    holder: &str,
    ttl_ms: i64,
) -> Result<Grant, StoreError> {
    let op = || format!("acquire lease {name:?}");
    // Take over a released or expired lease: one statement, so the check
    // and the grant see the same row even when others race for it.
    let taken = sqlx::query(&format!(
        "UPDATE phoenix_leases SET holder = $2, token = token + 1, expires_at = {DB_NOW_MS} + $3 \
         WHERE name = $1 AND (holder IS NULL OR expires_at <= {DB_NOW_MS}) \
         RETURNING token, expires_at"
    ))
    .bind(name)
    .bind(holder)
    .bind(ttl_ms)
    .fetch_optional(pool)
    .await
    .map_err(|e| classify(&op(), e))?;
    if let Some(row) = taken {
        return granted(name, holder, &row).map(Grant::Granted);
    }
    let inserted = sqlx::query(&format!(
        "INSERT INTO phoenix_leases (name, holder, token, expires_at) \
         VALUES ($1, $2, 1, {DB_NOW_MS} + $3) \
         ON CONFLICT (name) DO NOTHING RETURNING token, expires_at"
    ))
    .bind(name)
    .bind(holder)
    .bind(ttl_ms)
    .fetch_optional(pool)
    .await
    .map_err(|e| classify(&op(), e))?;
    if let Some(row) = inserted {
        return granted(name, holder, &row).map(Grant::Granted);
    }
    let mut conn = pool.acquire().await.map_err(|e| classify(&op(), e))?;
    match lease_row(&mut conn, name, false).await? {
        Some(LeaseRow {
            holder: Some(current),
            expires_ms,
            now_ms,
            ..
        }) if expires_ms > now_ms => Ok(Grant::Held(StoreError::LeaseHeld {
            name: name.to_owned(),
            holder: current,
            expires_at: lease_timestamp(name, expires_ms)?,
        })),
        // Released or expired since the UPDATE looked: go again.
        _ => Ok(Grant::Raced),
    }
}

fn granted(name: &str, holder: &str, row: &PgRow) -> Result<Lease, StoreError> {
    let key = || format!("leases:{name}");
    let token: i64 = row.try_get("token").map_err(|e| undecodable(key(), e))?;
    let expires_ms: i64 = row
        .try_get("expires_at")
        .map_err(|e| undecodable(key(), e))?;
    Ok(Lease {
        name: name.to_owned(),
        holder: holder.to_owned(),
        token: positive("token", token).map_err(|m| corrupt(key(), m))?,
        expires_at: lease_timestamp(name, expires_ms)?,
    })
}

/// The writes, run by the trait's methods on tasks of their own (see
/// [`detached`]).
impl PostgresStore {
    async fn commit_now(&self, commit: Commit) -> Result<Vec<u64>, StoreError> {
        const OP: &str = "commit";
        let commit = TextCommit::check(&commit)?;
        let mut tx = self.begin(OP).await?;
        let result = apply_commit(&mut tx, &commit).await;
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
        let ttl_ms = ttl_millis(ttl);
        // Each round either grants, reports the holder, or saw the row
        // change under it (a release or an expiry between two statements);
        // a few rounds settle any real race.
        for _ in 0..5 {
            match try_acquire(&self.inner.pool, name, holder, ttl_ms).await? {
                Grant::Granted(lease) => return Ok(lease),
                Grant::Held(e) => return Err(e),
                Grant::Raced => continue,
            }
        }
        Err(StoreError::Unavailable {
            operation: op,
            source: "the lease changed hands on every attempt; try again".into(),
        })
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
        let expires_ms: Option<i64> = sqlx::query_scalar(&format!(
            "UPDATE phoenix_leases SET expires_at = {DB_NOW_MS} + $1 \
             WHERE name = $2 AND token = $3 AND holder = $4 RETURNING expires_at"
        ))
        .bind(ttl_millis(ttl))
        .bind(&lease.name)
        .bind(token)
        .bind(&lease.holder)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(|e| classify(&op, e))?;
        match expires_ms {
            Some(ms) => Ok(Lease {
                expires_at: lease_timestamp(&lease.name, ms)?,
                ..lease.clone()
            }),
            None => Err(lost()),
        }
    }

    async fn release_lease_now(&self, lease: &Lease) -> Result<(), StoreError> {
        let op = format!("release lease {:?}", lease.name);
        let Some(token) = to_db(lease.token) else {
            return Ok(());
        };
        sqlx::query("UPDATE phoenix_leases SET holder = NULL WHERE name = $1 AND token = $2")
            .bind(&lease.name)
            .bind(token)
            .execute(&self.inner.pool)
            .await
            .map(|_| ())
            .map_err(|e| classify(&op, e))
    }
}

#[async_trait]
impl StateStore for PostgresStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        sql_reads::get(&self.inner.pool, key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>, StoreError> {
        let op = || format!("list {prefix:?}");
        no_nul(|| format!("prefix {prefix:?}"), prefix).map_err(|e| invalid(&op(), e))?;
        // A key range in byte order (COLLATE "C"), not LIKE: `_` and `%`
        // are literal, and a linguistic default collation cannot reorder
        // keys in or out of the range.
        let query = match prefix_successor(prefix) {
            Some(upper) => sqlx::query(
                "SELECT key, version, value FROM phoenix_records \
                 WHERE key COLLATE \"C\" >= $1 AND key COLLATE \"C\" < $2 \
                 ORDER BY key COLLATE \"C\"",
            )
            .bind(prefix)
            .bind(upper),
            None => sqlx::query(
                "SELECT key, version, value FROM phoenix_records \
                 WHERE key COLLATE \"C\" >= $1 ORDER BY key COLLATE \"C\"",
            )
            .bind(prefix),
        };
        let rows = query
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| classify(&op(), e))?;
        rows.iter()
            .map(|row| sql_reads::keyed_record::<Postgres>(prefix, row))
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
        match lease_row(&mut conn, name, false).await? {
            Some(LeaseRow {
                holder: Some(holder),
                token,
                expires_ms,
                now_ms,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_are_redacted() {
        for (url, want) in [
            ("postgres://u:pw@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?password=pw",
                "postgres://h/db?password=***",
            ),
            (
                "postgresql://u:p%40ss@h?sslmode=require&PASSWORD=x",
                "postgresql://u:***@h?sslmode=require&PASSWORD=***",
            ),
            ("postgres://u:pw@h", "postgres://u:***@h"),
        ] {
            assert_eq!(redact_url(url), want);
        }
    }

    #[test]
    fn builder_debug_never_shows_the_password() {
        let b = PostgresStoreBuilder::from_url("postgres://ci:hunter2@127.0.0.1:5/db?schema=s1")
            .unwrap()
            .password(SecretString::from("also-secret"));
        let shown = format!("{b:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("also-secret"),
            "{shown}"
        );
        assert!(
            shown.contains("postgres://ci@127.0.0.1:5/db (schema s1)"),
            "{shown}"
        );
        let err = PostgresStoreBuilder::from_url("postgres://ci:hunter2@[bad/db").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn schema_parameter_is_split_off_and_checked() {
        assert_eq!(
            split_schema("postgres://h/db?schema=a_1&sslmode=disable"),
            (
                "postgres://h/db?sslmode=disable".to_owned(),
                Some("a_1".to_owned())
            )
        );
        assert_eq!(
            split_schema("postgres://h/db?schema=x"),
            ("postgres://h/db".to_owned(), Some("x".to_owned()))
        );
        assert_eq!(
            split_schema("postgres://h/db"),
            ("postgres://h/db".to_owned(), None)
        );
        for bad in ["", "A", "1a", "a-b", "pg_x", "a\"b", &"x".repeat(64)] {
            assert!(check_schema(bad).is_err(), "{bad:?}");
        }
        assert!(check_schema("phoenix_test_1").is_ok());
        assert!(matches!(
            PostgresStoreBuilder::from_url("postgres://h/db?schema=Bad"),
            Err(OpenError::InvalidSchema { .. })
        ));
    }

    #[test]
    fn scheme_detection() {
        assert!(is_postgres_url("postgres://h"));
        assert!(is_postgres_url(" PostgreSQL://h"));
        assert!(!is_postgres_url("sqlite://x"));
        assert!(!is_postgres_url("post"));
    }

    #[test]
    fn transient_states_are_retryable() {
        for code in [
            "40001", "40P01", "55P03", "57014", "57P01", "08006", "53300",
        ] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
        assert!(classify("x", sqlx::Error::PoolTimedOut).is_retryable());
        assert!(!classify("x", sqlx::Error::RowNotFound).is_retryable());
    }

    #[test]
    fn lease_ttls_are_capped() {
        assert_eq!(ttl_millis(Duration::MAX), MAX_LEASE_TTL_MS);
        assert_eq!(ttl_millis(Duration::from_millis(1500)), 1500);
    }
}
