//! The PostgreSQL server the test script starts (scripts/peers/postgres.sh)
//! and a schema of its own for each test, dropped when the test ends, also
//! when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU32, Ordering};

use phoenix_state::{PostgresStore, PostgresStoreBuilder};
use sqlx::Connection;

/// The reason given to `ignore` on tests that need the server.
pub const NEEDS: &str = "needs postgresql: run the full test script";

/// The server's URL; a test that needs it fails loudly without it (it is
/// only run with `--include-ignored`, by the test script).
pub fn url() -> String {
    std::env::var("PHOENIX_TEST_PG_URL").expect(
        "PHOENIX_TEST_PG_URL is not set: run scripts/test, which starts PostgreSQL \
         (scripts/peers/postgres.sh)",
    )
}

/// A schema for one test, dropped (with everything in it) on drop.
pub struct Schema {
    pub name: String,
}

impl Schema {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "t_{tag}_{}_{nanos:x}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Self { name }
    }

    /// The URL with this schema selected.
    pub fn url(&self) -> String {
        let base = url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}schema={}", self.name)
    }

    pub fn builder(&self) -> PostgresStoreBuilder {
        PostgresStoreBuilder::from_url(&self.url()).unwrap()
    }

    pub async fn open(&self) -> PostgresStore {
        self.builder().open().await.unwrap()
    }

    /// A connection of our own, past the store, in this schema.
    pub async fn raw(&self) -> sqlx::PgConnection {
        let mut conn = sqlx::PgConnection::connect(&url()).await.unwrap();
        sqlx::raw_sql(&format!("SET search_path TO {}", self.name))
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: a thread of its own can
        // block on a runtime of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&url()).await?;
                sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = done {
            eprintln!("could not drop schema {}: {e}", self.name);
        }
    }
}
