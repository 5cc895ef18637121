-- The ledger of applied migrations. Run before every migration pass, so it
-- must stay idempotent. Portable SQL: SQLite and PostgreSQL run it as is.
CREATE TABLE IF NOT EXISTS phoenix_schema_migrations (
    version    BIGINT NOT NULL PRIMARY KEY,
    name       TEXT   NOT NULL,
    -- SHA-256 of the migration's text, so an edited migration is detected
    -- instead of silently diverging between databases.
    checksum   TEXT   NOT NULL,
    -- Epoch milliseconds, wall clock of the process that applied it.
    applied_at BIGINT NOT NULL
);
