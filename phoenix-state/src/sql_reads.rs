//! The reads both SQL back ends share: one record, the rows of a listing,
//! a page of events. Only how a text column comes out of a row differs
//! per back end ([`SqlBackend::text_bytes`]); every text column is then
//! checked as UTF-8 here, because SQLite keeps whatever bytes were written
//! to a TEXT column.

use phoenix_core::ports::{StoreError, StoredEvent, Versioned};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use crate::common::{corrupt, positive, to_db, utf8};
use crate::sql_writes::{undecodable, SqlBackend};

/// Reads one record.
pub(crate) async fn get<DB>(pool: &Pool<DB>, key: &str) -> Result<Option<Versioned>, StoreError>
where
    DB: SqlBackend,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    i64: Type<DB> + for<'r> Decode<'r, DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    let row = sqlx::query::<DB>("SELECT version, value FROM phoenix_records WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
        .map_err(|e| DB::classify(&format!("get {key:?}"), e))?;
    row.map(|row| record::<DB>(key, &row)).transpose()
}

/// A `key, version, value` row of a listing under `prefix`.
pub(crate) fn keyed_record<DB>(
    prefix: &str,
    row: &DB::Row,
) -> Result<(String, Versioned), StoreError>
where
    DB: SqlBackend,
    i64: Type<DB> + for<'r> Decode<'r, DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    let raw = DB::text_bytes(row, "key").map_err(|e| undecodable(format!("{prefix}…"), e))?;
    let key = String::from_utf8(raw).map_err(|source| {
        corrupt(
            String::from_utf8_lossy(source.as_bytes()).into_owned(),
            crate::common::Malformed::NotUtf8 {
                column: "key",
                source,
            },
        )
    })?;
    let record = record::<DB>(&key, row)?;
    Ok((key, record))
}

/// Events of `stream` with `seq > after`, oldest first, at most `limit`.
pub(crate) async fn events<DB>(
    pool: &Pool<DB>,
    stream: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError>
where
    DB: SqlBackend,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    i64: Type<DB> + for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    // Numbers beyond i64 cannot be stored, so clamping changes nothing.
    let after = to_db(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = sqlx::query::<DB>(
        "SELECT seq, payload FROM phoenix_events \
         WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(stream)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(|e| DB::classify(&format!("read events of {stream:?}"), e))?;
    rows.iter()
        .map(|row| {
            let seq: i64 = row
                .try_get("seq")
                .map_err(|e| undecodable(format!("events:{stream}"), e))?;
            let key = || format!("events:{stream}#{seq}");
            let payload = DB::text_bytes(row, "payload").map_err(|e| undecodable(key(), e))?;
            Ok(StoredEvent {
                stream: stream.to_owned(),
                seq: positive("seq", seq).map_err(|m| corrupt(key(), m))?,
                payload: utf8("payload", payload).map_err(|m| corrupt(key(), m))?,
            })
        })
        .collect()
}

/// The `version, value` of a record row.
fn record<DB>(key: &str, row: &DB::Row) -> Result<Versioned, StoreError>
where
    DB: SqlBackend,
    i64: Type<DB> + for<'r> Decode<'r, DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    let version: i64 = row.try_get("version").map_err(|e| undecodable(key, e))?;
    let value = DB::text_bytes(row, "value").map_err(|e| undecodable(key, e))?;
    Ok(Versioned {
        version: positive("version", version).map_err(|m| corrupt(key.to_owned(), m))?,
        value: utf8("value", value).map_err(|m| corrupt(key.to_owned(), m))?,
    })
}
