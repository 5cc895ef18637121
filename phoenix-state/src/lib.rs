//! # phoenix-state
//!
//! State stores for [`phoenix_core`]'s `StateStore` port: SQLite (the
//! embedded default) and PostgreSQL (shared by many orchestrators), with
//! one portable schema; leases with fencing tokens; and hooks that move
//! server state out before a server leaves (drain) and in before it serves
//! (warm-up).
//!
//! Until those land, [`phoenix_core::memory_store::MemoryStore`] is the
//! reference implementation of the port.
//!
//! ```
//! use phoenix_core::memory_store::MemoryStore;
//! use phoenix_core::ports::StateStore;
//! let _store: &dyn StateStore = &MemoryStore::default();
//! ```
