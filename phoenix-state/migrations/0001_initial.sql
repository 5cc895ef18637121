-- Phoenix state store schema, version 1.
--
-- Portable SQL only: SQLite and PostgreSQL run this file unchanged. Types are
-- TEXT and BIGINT; JSON values are stored as TEXT (UTF-8); timestamps are
-- epoch milliseconds in BIGINT. No AUTOINCREMENT, no WITHOUT ROWID, no JSONB.
--
-- Key order: `phoenix_records.key` is listed by prefix with a key range
-- (`key >= prefix AND key < successor(prefix)`), which is exact only under a
-- byte-wise (code point) collation. SQLite's default BINARY collation is
-- byte-wise. A PostgreSQL database created with a linguistic default
-- collation must compare these columns with COLLATE "C" in its queries.

-- Versioned records: compare-and-swap on `version`, which starts at 1 and
-- grows by one per write. A delete removes the row, so a re-created key
-- starts at 1 again.
CREATE TABLE phoenix_records (
    key     TEXT   NOT NULL PRIMARY KEY,
    version BIGINT NOT NULL CHECK (version >= 1),
    value   TEXT   NOT NULL
);

-- The head of each event stream: the last sequence number handed out.
-- Appends bump it with one upsert, which serialises appenders of a stream
-- through the row (a row lock on PostgreSQL, the write lock on SQLite).
CREATE TABLE phoenix_streams (
    stream   TEXT   NOT NULL PRIMARY KEY,
    last_seq BIGINT NOT NULL CHECK (last_seq >= 1)
);

-- Append-only event history; `seq` counts from 1 per stream, without gaps.
CREATE TABLE phoenix_events (
    stream      TEXT   NOT NULL,
    seq         BIGINT NOT NULL CHECK (seq >= 1),
    payload     TEXT   NOT NULL,
    -- Epoch milliseconds when the event was appended (for people reading
    -- the history; the port does not expose it).
    appended_at BIGINT NOT NULL,
    PRIMARY KEY (stream, seq)
);

-- Leases with fencing tokens. A row is never deleted: releasing sets
-- `holder` to NULL and keeps `token`, so the next grant gets a higher token
-- and a released holder stays fenced off.
CREATE TABLE phoenix_leases (
    name       TEXT   NOT NULL PRIMARY KEY,
    holder     TEXT,
    token      BIGINT NOT NULL CHECK (token >= 1),
    -- Epoch milliseconds.
    expires_at BIGINT NOT NULL
);
