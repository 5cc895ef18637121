//! The schema migrations every SQL back end shares. The SQL lives in
//! `migrations/*.sql` and is portable: the same files run on SQLite and,
//! later, PostgreSQL. Each back end applies them in its own transaction.

use sha2::{Digest, Sha256};

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
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

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
