-- The PostgreSQL twin of migrations/sqlite/0001_core.sql: the same tables and columns, times
-- stored the same way (ISO text, or BIGINT microseconds since the epoch), payloads as BYTEA.
-- Keys and ordered text columns use the "C" collation: pages and ORDER BY go by code point,
-- as in SQLite, whatever the database's locale.

-- profiles: live state, or a stub pointing at the profile it was merged into. ``version``
-- (PostgreSQL only) is bumped by every write: a transaction saves a profile only if it still
-- has the version it loaded (optimistic concurrency between worker processes)
CREATE TABLE profiles (
    id TEXT COLLATE "C" PRIMARY KEY,
    state BYTEA,
    merged_into TEXT COLLATE "C",
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX profiles_merged_into ON profiles (merged_into) WHERE merged_into IS NOT NULL;

CREATE TABLE identities (
    type TEXT COLLATE "C" NOT NULL,
    value TEXT COLLATE "C" NOT NULL,
    profile_id TEXT COLLATE "C" NOT NULL,
    linked_at TEXT NOT NULL,
    PRIMARY KEY (type, value)
);
CREATE INDEX identities_profile ON identities (profile_id);

-- at: event time in microseconds since the epoch; seq: the order of arrival (SQLite's rowid)
CREATE TABLE timeline (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile_id TEXT COLLATE "C" NOT NULL,
    at BIGINT NOT NULL,
    message_id TEXT COLLATE "C" NOT NULL,
    payload BYTEA NOT NULL
);
CREATE INDEX timeline_profile_at ON timeline (profile_id, at, message_id, seq);

CREATE TABLE merge_journal (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    survivor TEXT COLLATE "C" NOT NULL,
    other TEXT COLLATE "C",
    identifier TEXT NOT NULL,
    reason TEXT NOT NULL,
    message_id TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX merge_journal_survivor ON merge_journal (survivor);
CREATE INDEX merge_journal_other ON merge_journal (other);

CREATE TABLE offsets (
    stream TEXT COLLATE "C" NOT NULL,
    partition INTEGER NOT NULL,
    "offset" BIGINT NOT NULL,
    PRIMARY KEY (stream, partition)
);

-- sha256 of "type:value" of every identifier of an erased person
CREATE TABLE suppressions (
    hash TEXT COLLATE "C" PRIMARY KEY,
    at TEXT NOT NULL
);

CREATE TABLE sources (
    name TEXT COLLATE "C" PRIMARY KEY,
    allowed_origins TEXT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT COLLATE "C" PRIMARY KEY,
    kind TEXT NOT NULL,
    source TEXT,
    secret_hash TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

-- details: JSON text, as in SQLite; not JSONB, which refuses some valid JSON ("\u0000" in a
-- string), and an audit record must never fail to be written
CREATE TABLE audit_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL
);

-- events the processor could not apply (after retrying them one by one)
CREATE TABLE failed_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at TEXT NOT NULL,
    stream TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" BIGINT NOT NULL,
    error TEXT NOT NULL,
    payload BYTEA NOT NULL
);
