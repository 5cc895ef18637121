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
//!
//! The schema is portable SQL (`migrations/*.sql`: TEXT and BIGINT
//! columns, JSON values as UTF-8 TEXT, epoch-millisecond timestamps,
//! `$1, $2…` placeholders), so a PostgreSQL back end can share it.
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

#[cfg(feature = "sqlite")]
mod common;
mod error;
#[cfg(feature = "sqlite")]
mod migrations;
#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(feature = "sqlite")]
pub use common::{InvalidInput, Malformed};
pub use error::OpenError;
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteLocation, SqliteStore, SqliteStoreBuilder};

/// The environment variable that names the state store, as a URL such as
/// `sqlite:///var/lib/phoenix/state.sqlite` or `sqlite::memory:`.
pub const STATE_URL_ENV: &str = "PHOENIX_STATE_URL";

/// The store used when [`STATE_URL_ENV`] is unset: a file under
/// `.phoenix/` in the working directory.
pub const DEFAULT_STATE_URL: &str = "sqlite://.phoenix/state.sqlite";
