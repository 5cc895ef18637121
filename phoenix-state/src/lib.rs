//! # phoenix-state
//!
//! State stores for [`phoenix_core`]'s [`StateStore`] port: versioned
//! records with compare-and-swap, atomic commits that also append events
//! and are fenced by leases, append-only event streams, and leases with
//! fencing tokens. The executor journals every step through this port, so
//! a process killed at any step can restart and converge.
//!
//! - [`SqliteStore`] (feature `sqlite`, on by default): the embedded
//!   default, one file on disk that several processes may share (see
//!   [`sqlite`] for why that is safe), or a private in-memory database for
//!   tests. SQLite is compiled in; nothing needs to be installed.
//! - [`PostgresStore`] (feature `postgres`): one database shared by several
//!   orchestrators on several hosts, with leases judged by the database's
//!   clock (see [`postgres`] for how it stays correct under concurrent
//!   transactions).
//! - [`open`] picks the back end from a URL (`sqlite://…` or
//!   `postgres://…`), and [`open_from_env`] from `PHOENIX_STATE_URL`.
//! - [`hooks`] (feature `hooks`, on by default): drain hooks (an HTTP call
//!   or a command) and warm-up hooks (a list of paths or a sitemap crawl)
//!   for phoenix-core's `ServerHooks` port.
//! - [`history`]: what operators ask about a deployment (releases, pools
//!   over time, operations and who held the lease when) and an operation's
//!   full record, exported as JSON; it reads through the port, so it works
//!   on every store.
//!
//! The schema is portable SQL (`migrations/*.sql`: TEXT and BIGINT
//! columns, JSON values as UTF-8 TEXT, epoch-millisecond timestamps,
//! `$1, $2…` placeholders): SQLite and PostgreSQL run the same files.
//!
//! ```
//! use phoenix_core::ports::{Commit, EventAppend, Expect, StateStore, Write};
//! use phoenix_state::SqliteStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open_in_memory().await?;
//! let versions = store
//!     .commit(Commit {
//!         writes: vec![Write {
//!             key: "deployments/shop".into(),
//!             expect: Expect::Absent,
//!             value: Some(br#"{"release":"v1"}"#.to_vec()),
//!         }],
//!         events: vec![EventAppend {
//!             stream: "deployments/shop".into(),
//!             payload: br#"{"created":"v1"}"#.to_vec(),
//!         }],
//!         ..Commit::default()
//!     })
//!     .await?;
//! assert_eq!(versions, vec![1]);
//!
//! let record = store.get("deployments/shop").await?.ok_or("record missing")?;
//! assert_eq!((record.version, record.value.as_slice()), (1, br#"{"release":"v1"}"#.as_slice()));
//! let history = store.events("deployments/shop", 0, 10).await?;
//! assert_eq!(history[0].seq, 1);
//! # Ok(())
//! # }
//! ```
//!
//! A program usually opens the store its operator configured:
//! [`SqliteStore::from_env`] reads [`STATE_URL_ENV`] (`PHOENIX_STATE_URL`,
//! for example `sqlite:///var/lib/phoenix/state.sqlite`) and falls back to
//! [`DEFAULT_STATE_URL`].
//!
//! [`StateStore`]: phoenix_core::ports::StateStore

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod common;
mod error;
pub mod history;
#[cfg(feature = "hooks")]
pub mod hooks;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migrations;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql_reads;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql_writes;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::sync::Arc;

use phoenix_core::ports::StateStore;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use common::{InvalidInput, Malformed};
pub use error::OpenError;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteLocation, SqliteStore, SqliteStoreBuilder};

/// The environment variable that names the state store, as a URL such as
/// `sqlite:///var/lib/phoenix/state.sqlite`, `sqlite::memory:` or
/// `postgres://phoenix@db.internal/phoenix`.
pub const STATE_URL_ENV: &str = "PHOENIX_STATE_URL";

/// The store used when [`STATE_URL_ENV`] is unset: a file under
/// `.phoenix/` in the working directory.
pub const DEFAULT_STATE_URL: &str = "sqlite://.phoenix/state.sqlite";

/// Opens the store a URL names, whichever back end it is: `sqlite://PATH`
/// or `sqlite::memory:` ([`SqliteStore`]), `postgres://…` or
/// `postgresql://…` ([`PostgresStore`], with `?schema=NAME` to choose a
/// schema). A back end this build leaves out (its feature is off) is an
/// [`OpenError::InvalidUrl`] saying so. Errors never show a password.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), phoenix_state::OpenError> {
/// let store = phoenix_state::open("sqlite::memory:").await?;
/// assert!(store.get("nothing").await?.is_none());
/// # Ok(()) }
/// ```
pub async fn open(url: &str) -> Result<Arc<dyn StateStore>, OpenError> {
    let trimmed = url.trim();
    let scheme = trimmed
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    match scheme.as_str() {
        "sqlite" => open_sqlite(trimmed).await,
        "postgres" | "postgresql" => open_postgres(trimmed).await,
        _ => Err(OpenError::InvalidUrl {
            url: redact(trimmed),
            reason: "expected sqlite://PATH, sqlite::memory: or postgres://…".into(),
        }),
    }
}

/// Opens the store `PHOENIX_STATE_URL` names (see [`open`]), by default
/// [`DEFAULT_STATE_URL`].
pub async fn open_from_env() -> Result<Arc<dyn StateStore>, OpenError> {
    match std::env::var(STATE_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => open(&url).await,
        Ok(_) | Err(std::env::VarError::NotPresent) => open(DEFAULT_STATE_URL).await,
        Err(std::env::VarError::NotUnicode(raw)) => Err(OpenError::InvalidUrl {
            url: redact(&raw.to_string_lossy()),
            reason: format!("{STATE_URL_ENV} is not UTF-8"),
        }),
    }
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(url: &str) -> Result<Arc<dyn StateStore>, OpenError> {
    Ok(Arc::new(SqliteStore::from_url(url).await?))
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(url: &str) -> Result<Arc<dyn StateStore>, OpenError> {
    Err(OpenError::InvalidUrl {
        url: url.to_owned(),
        reason: "SQLite support is not compiled in (feature `sqlite`)".into(),
    })
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Arc<dyn StateStore>, OpenError> {
    Ok(Arc::new(PostgresStore::connect(url).await?))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(url: &str) -> Result<Arc<dyn StateStore>, OpenError> {
    Err(OpenError::InvalidUrl {
        url: redact(url),
        reason: "PostgreSQL support is not compiled in (feature `postgres`)".into(),
    })
}

#[cfg(feature = "postgres")]
fn redact(url: &str) -> String {
    postgres::redact_url(url)
}

/// Without the PostgreSQL back end there is no URL parser to lean on: keep
/// the scheme and drop the rest, which may hold a password.
#[cfg(not(feature = "postgres"))]
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://…"),
        None => url.to_owned(),
    }
}
