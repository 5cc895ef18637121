//! The schema migrations every SQL back end shares. The SQL lives in
//! `migrations/*.sql` and is portable: the same files run on SQLite and
//! PostgreSQL. Each back end applies them in its own transaction, after
//! taking its own lock (SQLite's write lock, a PostgreSQL advisory lock),
//! and decides what to apply with [`pending`].

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::OpenError;

/// Creates the ledger of applied migrations; idempotent.
pub(crate) const BOOTSTRAP: &str = include_str!("../migrations/bootstrap.sql");

/// One schema migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Position in the sequence, from 1, without gaps.
    pub(crate) version: i64,
    /// Short name, from the file name.
    pub(crate) name: &'static str,
    /// The statements.
    pub(crate) sql: &'static str,
}

impl Migration {
    /// SHA-256 of the statements, hex. Carriage returns are ignored so that
    /// a checkout with Windows line endings does not look edited.
    pub(crate) fn checksum(&self) -> String {
        let mut hasher = Sha256::new();
        for chunk in self.sql.split('\r') {
            hasher.update(chunk.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

/// Every migration, oldest first. Append only: an applied migration is
/// never edited (its checksum is verified on every open).
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    sql: include_str!("../migrations/0001_initial.sql"),
}];

/// The newest schema version this build knows.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Checks the ledger of applied migrations (version → checksum) against
/// this build and returns the migrations still to apply, oldest first.
///
/// Refuses a database migrated by a newer build, and one whose applied
/// migration differs from this build's text.
pub(crate) fn pending(
    applied: &BTreeMap<i64, String>,
) -> Result<Vec<&'static Migration>, OpenError> {
    if let Some(&found) = applied.keys().next_back() {
        if found > latest_version() {
            return Err(OpenError::SchemaTooNew {
                found,
                supported: latest_version(),
            });
        }
    }
    let mut todo = Vec::new();
    for m in MIGRATIONS {
        let expected = m.checksum();
        match applied.get(&m.version) {
            Some(found) if *found == expected => {}
            Some(found) => {
                return Err(OpenError::MigrationChanged {
                    version: m.version,
                    name: m.name.to_owned(),
                    found: found.clone(),
                    expected,
                })
            }
            None => todo.push(m),
        }
    }
    Ok(todo)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pending_checks_the_ledger() {
        let none = BTreeMap::new();
        assert_eq!(pending(&none).unwrap().len(), MIGRATIONS.len());
        let all: BTreeMap<i64, String> = MIGRATIONS
            .iter()
            .map(|m| (m.version, m.checksum()))
            .collect();
        assert!(pending(&all).unwrap().is_empty());
        let mut newer = all.clone();
        newer.insert(latest_version() + 1, "x".into());
        assert!(matches!(
            pending(&newer),
            Err(OpenError::SchemaTooNew { .. })
        ));
        let mut edited = all;
        edited.insert(1, "not the checksum".into());
        assert!(matches!(
            pending(&edited),
            Err(OpenError::MigrationChanged { version: 1, .. })
        ));
    }

    #[test]
    fn versions_are_contiguous_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version,
                i as i64 + 1,
                "migration {} is out of place",
                m.name
            );
        }
        assert_eq!(latest_version(), MIGRATIONS.len() as i64);
    }

    #[test]
    fn checksum_ignores_carriage_returns() {
        let unix = Migration {
            version: 1,
            name: "x",
            sql: "CREATE TABLE t (a TEXT);\nSELECT 1;\n",
        };
        let windows = Migration {
            sql: "CREATE TABLE t (a TEXT);\r\nSELECT 1;\r\n",
            ..unix
        };
        assert_eq!(unix.checksum(), windows.checksum());
        assert_eq!(unix.checksum().len(), 64);
        let edited = Migration {
            sql: "CREATE TABLE t (b TEXT);\n",
            ..unix
        };
        assert_ne!(unix.checksum(), edited.checksum());
    }

    #[test]
    fn shared_sql_avoids_sqlite_only_syntax() {
        // These would make the files unusable on PostgreSQL.
        let forbidden = [
            "AUTOINCREMENT",
            "WITHOUT ROWID",
            "PRAGMA",
            "BLOB",
            "INSERT OR",
            "REPLACE INTO",
            "STRICT",
        ];
        for sql in std::iter::once(BOOTSTRAP).chain(MIGRATIONS.iter().map(|m| m.sql)) {
            let code: String = sql
                .lines()
                .map(|l| l.split("--").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
                .to_uppercase();
            for word in forbidden {
                assert!(!code.contains(word), "shared SQL uses {word}");
            }
        }
    }
}
