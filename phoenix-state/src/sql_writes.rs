//! The record write path both SQL back ends share. Each write's
//! expectation is checked by the statement itself (a conditional UPDATE,
//! DELETE or INSERT), so the same statements are correct under SQLite's
//! single writer and under PostgreSQL's concurrent transactions; only the
//! classification of errors differs per back end.

use phoenix_core::ports::{Expect, Fence, StoreError, Write};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Transaction, Type};

use crate::common::{corrupt, positive, timestamp, to_db};

/// What a back end adds to the shared write path.
pub(crate) trait SqlBackend: Database {
    /// Maps a database error to the port's classes, so callers can tell
    /// "try again" (lock contention, a lost connection) from "this fails".
    fn classify(operation: &str, e: sqlx::Error) -> StoreError;

    /// The bytes of a text column of `row`: SQLite's TEXT may hold any
    /// bytes (they are checked as UTF-8 afterwards), PostgreSQL's `text`
    /// decodes only as a string.
    fn text_bytes(row: &Self::Row, column: &str) -> Result<Vec<u8>, sqlx::Error>;
}

/// A column that does not decode as its type.
pub(crate) fn undecodable(key: impl Into<String>, e: sqlx::Error) -> StoreError {
    StoreError::Corrupt {
        key: key.into(),
        source: Box::new(e),
    }
}

/// A lease's stored expiry as a timestamp.
pub(crate) fn lease_timestamp(
    name: &str,
    ms: i64,
) -> Result<phoenix_core::time::Timestamp, StoreError> {
    timestamp("expires_at", ms).map_err(|m| corrupt(format!("leases:{name}"), m))
}

/// Refuses a write under `fence` unless its token is the lease's current
/// one and the lease is still held; `current` is the stored token and
/// whether a holder is recorded.
pub(crate) fn check_fence(fence: &Fence, current: Option<(u64, bool)>) -> Result<(), StoreError> {
    // Expiry alone does not fence: until someone else is granted the lease
    // its holder's writes are still the only ones, as in MemoryStore.
    match current {
        Some((token, true)) if token == fence.token => Ok(()),
        _ => Err(StoreError::Fenced {
            lease: fence.lease.clone(),
            token: fence.token,
            current: current.map_or(0, |(token, _)| token),
        }),
    }
}

/// Commits on success, rolls back on failure.
pub(crate) async fn finish<DB: SqlBackend, T>(
    operation: &str,
    tx: Transaction<'static, DB>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(value) => {
            tx.commit().await.map_err(|e| DB::classify(operation, e))?;
            Ok(value)
        }
        Err(e) => {
            // Dropping the transaction would roll back too, but only once
            // the caller lets go of it (and of SQLite's writer slot);
            // rolling back first lets the next writer start at once.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(operation, error = %rollback, "rollback failed");
            }
            Err(e)
        }
    }
}

/// The version `key` has now, read inside the caller's transaction.
pub(crate) async fn current_version<DB>(
    conn: &mut DB::Connection,
    key: &str,
) -> Result<Option<u64>, StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: Type<DB> + for<'r> Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
{
    let version: Vec<i64> =
        sqlx::query_scalar::<DB, i64>("SELECT version FROM phoenix_records WHERE key = $1")
            .bind(key)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| match e {
                sqlx::Error::ColumnDecode { .. } => undecodable(key, e),
                e => DB::classify(&format!("read version of {key:?}"), e),
            })?;
    version
        .into_iter()
        .next()
        .map(|v| positive("version", v).map_err(|m| corrupt(key.to_owned(), m)))
        .transpose()
}

/// Runs a `… RETURNING version` statement to completion; `None` when it
/// touched no row.
async fn returning<'q, DB>(
    query: sqlx::query::QueryScalar<'q, DB, i64, DB::Arguments<'q>>,
    conn: &mut DB::Connection,
    key: &str,
) -> Result<Option<i64>, StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: Type<DB> + for<'r> Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
{
    // `fetch_all`, not `fetch_optional`: the statement must run to its end
    // before the transaction commits.
    let rows = query.fetch_all(&mut *conn).await.map_err(|e| match e {
        sqlx::Error::ColumnDecode { .. } => undecodable(key, e),
        e => DB::classify(&format!("write {key:?}"), e),
    })?;
    Ok(rows.into_iter().next())
}

/// Applies one write inside the caller's transaction, its expectation
/// checked by the statement itself. Returns the new version, 0 for a
/// delete; a failed expectation is a [`StoreError::Conflict`] naming the
/// version found.
pub(crate) async fn apply_write<DB>(
    conn: &mut DB::Connection,
    write: &Write,
    value: Option<&str>,
) -> Result<u64, StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
{
    let key = write.key.as_str();
    let op = || format!("write {key:?}");
    let returned: Option<i64> = match (write.expect, value) {
        (Expect::Absent, Some(value)) => {
            returning(
                sqlx::query_scalar(
                    "INSERT INTO phoenix_records (key, version, value) VALUES ($1, 1, $2) \
                     ON CONFLICT (key) DO NOTHING RETURNING version",
                )
                .bind(key)
                .bind(value),
                conn,
                key,
            )
            .await?
        }
        (Expect::Version(expected), Some(value)) => match to_db(expected) {
            Some(expected) => {
                returning(
                    sqlx::query_scalar(
                        "UPDATE phoenix_records SET version = version + 1, value = $3 \
                         WHERE key = $1 AND version = $2 RETURNING version",
                    )
                    .bind(key)
                    .bind(expected)
                    .bind(value),
                    conn,
                    key,
                )
                .await?
            }
            None => None,
        },
        (Expect::Any, Some(value)) => {
            returning(
                sqlx::query_scalar(
                    "INSERT INTO phoenix_records (key, version, value) VALUES ($1, 1, $2) \
                     ON CONFLICT (key) DO UPDATE \
                     SET version = phoenix_records.version + 1, value = excluded.value \
                     RETURNING version",
                )
                .bind(key)
                .bind(value),
                conn,
                key,
            )
            .await?
        }
        (Expect::Absent, None) => match current_version::<DB>(conn, key).await? {
            None => Some(0),
            Some(_) => None,
        },
        (Expect::Version(expected), None) => match to_db(expected) {
            // The deleted row's version tells "deleted" from "no match".
            Some(expected) => returning(
                sqlx::query_scalar(
                    "DELETE FROM phoenix_records WHERE key = $1 AND version = $2 \
                     RETURNING version",
                )
                .bind(key)
                .bind(expected),
                conn,
                key,
            )
            .await?
            .map(|_| 0),
            None => None,
        },
        (Expect::Any, None) => {
            sqlx::query::<DB>("DELETE FROM phoenix_records WHERE key = $1")
                .bind(key)
                .execute(&mut *conn)
                .await
                .map_err(|e| DB::classify(&op(), e))?;
            Some(0)
        }
    };
    match returned {
        Some(0) => Ok(0),
        Some(version) => positive("version", version).map_err(|m| corrupt(key.to_owned(), m)),
        None => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected: write.expect,
            found: current_version::<DB>(conn, key).await?,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_need_the_current_token_and_a_holder() {
        let fence = Fence {
            lease: "deploy/a".to_owned(),
            token: 4,
        };
        assert!(check_fence(&fence, Some((4, true))).is_ok());
        for current in [None, Some((4, false)), Some((5, true)), Some((3, true))] {
            match check_fence(&fence, current) {
                Err(StoreError::Fenced { token: 4, .. }) => {}
                other => panic!("{current:?}: {other:?}"),
            }
        }
    }
}
