//! Pieces every SQL back end shares: input checks, key ranges, number and
//! time conversions, and the errors they raise.

use std::time::Duration;

use chrono::{DateTime, Utc};
use phoenix_core::ports::{Commit, Fence, StoreError, Write};
use phoenix_core::time::Timestamp;

/// A value the store refuses to write.
#[derive(Debug, thiserror::Error)]
pub enum InvalidInput {
    /// Values and payloads are JSON text, stored as TEXT.
    #[error("{what} is not UTF-8 text (the store keeps JSON as text)")]
    NotUtf8 {
        /// What was being written.
        what: String,
        /// Where decoding failed.
        #[source]
        source: std::str::Utf8Error,
    },
    /// PostgreSQL TEXT cannot hold NUL, and JSON text never contains a raw
    /// one, so both back ends refuse it alike.
    #[error("{what} contains a NUL character")]
    Nul {
        /// What was being written.
        what: String,
    },
}

/// A stored value that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    /// A text column holds bytes that are not UTF-8.
    #[error("{column} is not UTF-8")]
    NotUtf8 {
        /// Column.
        column: &'static str,
        /// Where decoding failed.
        #[source]
        source: std::string::FromUtf8Error,
    },
    /// A number outside the range the schema allows.
    #[error("{column} is {value}, outside its range")]
    OutOfRange {
        /// Column.
        column: &'static str,
        /// The stored number.
        value: i64,
    },
}

/// Checks that `bytes` can be stored as TEXT and returns them as text.
/// Runs a write on a task of its own and waits for it. A caller that gives
/// up (a deadline, a dropped future) then never leaves a transaction
/// half-way on a pooled connection: the write finishes, committed or
/// rolled back, whatever happens to the caller. (A dropped sqlx future can
/// leave its connection inside a transaction, and the next `begin` on it
/// fails.)
pub(crate) async fn detached<T, F>(operation: &str, write: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
{
    tokio::spawn(write).await.map_err(|e| StoreError::Backend {
        operation: operation.to_owned(),
        source: Box::new(e),
    })?
}

pub(crate) fn text(what: impl FnOnce() -> String, bytes: &[u8]) -> Result<&str, InvalidInput> {
    match std::str::from_utf8(bytes) {
        Ok(s) => no_nul(what, s),
        Err(source) => Err(InvalidInput::NotUtf8 {
            what: what(),
            source,
        }),
    }
}

/// Checks that `s` can be stored as TEXT.
pub(crate) fn no_nul(what: impl FnOnce() -> String, s: &str) -> Result<&str, InvalidInput> {
    if s.contains('\0') {
        Err(InvalidInput::Nul { what: what() })
    } else {
        Ok(s)
    }
}

/// The refusal of a write, as the port reports it.
pub(crate) fn invalid(operation: &str, source: InvalidInput) -> StoreError {
    StoreError::Invalid {
        operation: operation.to_owned(),
        source: Box::new(source),
    }
}

/// A commit checked to be storable, its bytes viewed as the text the SQL
/// back ends keep.
pub(crate) struct TextCommit<'a> {
    /// The lease the writes are fenced by.
    pub fence: Option<&'a Fence>,
    /// Each write with its value as text (`None` deletes).
    pub writes: Vec<(&'a Write, Option<&'a str>)>,
    /// Each event as (stream, payload).
    pub events: Vec<(&'a str, &'a str)>,
}

impl<'a> TextCommit<'a> {
    /// Refuses, before any lock is taken, what cannot be stored: keys,
    /// stream names and JSON text with NUL, bytes that are not UTF-8.
    pub(crate) fn check(commit: &'a Commit) -> Result<Self, StoreError> {
        const OP: &str = "commit";
        let writes = commit
            .writes
            .iter()
            .map(|w| {
                no_nul(|| format!("key {:?}", w.key), &w.key)?;
                let value = w
                    .value
                    .as_deref()
                    .map(|v| text(|| format!("value of key {:?}", w.key), v))
                    .transpose()?;
                Ok((w, value))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(OP, e))?;
        let events = commit
            .events
            .iter()
            .map(|e| {
                let stream = no_nul(|| format!("stream name {:?}", e.stream), &e.stream)?;
                let payload = text(
                    || format!("event payload for stream {:?}", e.stream),
                    &e.payload,
                )?;
                Ok((stream, payload))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(OP, e))?;
        Ok(Self {
            fence: commit.fence.as_ref(),
            writes,
            events,
        })
    }
}

/// The smallest string greater than every string that starts with
/// `prefix`, in code point order (which is UTF-8 byte order); `None` when
/// no such string exists (the empty prefix, or one made of `char::MAX`).
///
/// Listing by `key >= prefix AND key < successor` matches the prefix
/// literally, unlike `LIKE`, whose `_` and `%` are wildcards.
pub(crate) fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            // Skips the surrogate gap, which holds no `char`.
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A stored version, sequence number or token: at least 1.
pub(crate) fn positive(column: &'static str, value: i64) -> Result<u64, Malformed> {
    match u64::try_from(value) {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(Malformed::OutOfRange { column, value }),
    }
}

/// A stored text column.
pub(crate) fn utf8(column: &'static str, bytes: Vec<u8>) -> Result<Vec<u8>, Malformed> {
    String::from_utf8(bytes)
        .map(String::into_bytes)
        .map_err(|source| Malformed::NotUtf8 { column, source })
}

/// A stored epoch-milliseconds timestamp.
pub(crate) fn timestamp(column: &'static str, ms: i64) -> Result<Timestamp, Malformed> {
    DateTime::<Utc>::from_timestamp_millis(ms).ok_or(Malformed::OutOfRange { column, value: ms })
}

/// `now + ttl` in epoch milliseconds, saturating at the latest instant a
/// [`Timestamp`] can hold, so an absurd TTL means "practically forever"
/// rather than an overflow.
// The PostgreSQL store computes expiry in the database, by its clock.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) fn expiry_millis(now: Timestamp, ttl: Duration) -> i64 {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    now.timestamp_millis()
        .saturating_add(ttl_ms)
        .min(DateTime::<Utc>::MAX_UTC.timestamp_millis())
}

/// A caller's number in the database's signed 64-bit range, or `None` when
/// it is too large to have been stored (so it cannot match anything).
pub(crate) fn to_db(n: u64) -> Option<i64> {
    i64::try_from(n).ok()
}

/// Where a corrupt stored value lives, for [`StoreError::Corrupt`]: record
/// keys as they are, and other rows named like `MemoryStore::dump` does.
pub(crate) fn corrupt(key: String, source: Malformed) -> StoreError {
    StoreError::Corrupt {
        key,
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn successor_bounds_exactly_the_prefixed_strings() {
        assert_eq!(prefix_successor("a/").as_deref(), Some("a0"));
        assert_eq!(prefix_successor("x_y/").as_deref(), Some("x_y0"));
        assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("\u{10FFFF}\u{10FFFF}"), None);
        let prefix = "p/x_y/";
        let upper = prefix_successor(prefix).unwrap();
        for (key, inside) in [
            ("p/x_y/", true),
            ("p/x_y/1", true),
            ("p/x_y/\u{10FFFF}", true),
            ("p/x_y0", false),
            ("p/x_y", false),
            ("p/x_yz/1", false),
            ("p/x%y/1", false),
        ] {
            let in_range = key >= prefix && key < upper.as_str();
            assert_eq!(in_range, inside, "{key}");
            assert_eq!(key.starts_with(prefix), inside, "{key}");
        }
    }

    #[test]
    fn text_checks() {
        assert_eq!(text(|| "v".into(), b"{\"a\":1}").unwrap(), "{\"a\":1}");
        assert!(matches!(
            text(|| "v".into(), &[0xff, 0xfe]),
            Err(InvalidInput::NotUtf8 { .. })
        ));
        assert!(matches!(
            text(|| "v".into(), b"a\0b"),
            Err(InvalidInput::Nul { .. })
        ));
    }

    #[test]
    fn numbers_and_times() {
        assert_eq!(positive("version", 1).unwrap(), 1);
        assert!(positive("version", 0).is_err());
        assert!(positive("version", -5).is_err());
        assert_eq!(to_db(u64::MAX), None);
        assert_eq!(to_db(7), Some(7));
        let now = timestamp("t", 1_000).unwrap();
        assert_eq!(expiry_millis(now, Duration::from_millis(500)), 1_500);
        let far = expiry_millis(now, Duration::MAX);
        assert!(
            timestamp("t", far).is_ok(),
            "a saturated expiry still decodes"
        );
        assert!(timestamp("t", i64::MAX).is_err());
        assert!(utf8("value", vec![0xff]).is_err());
    }
}
