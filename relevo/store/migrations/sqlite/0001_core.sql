-- profiles: live state, or a stub pointing at the profile it was merged into
CREATE TABLE profiles (
    id TEXT PRIMARY KEY,
    state BLOB,
    merged_into TEXT,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX profiles_merged_into ON profiles (merged_into) WHERE merged_into IS NOT NULL;

CREATE TABLE identities (
    type TEXT NOT NULL,
    value TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    linked_at TEXT NOT NULL,
    PRIMARY KEY (type, value)
) WITHOUT ROWID;
CREATE INDEX identities_profile ON identities (profile_id);

-- at: event time in microseconds since the epoch
CREATE TABLE timeline (
    profile_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX timeline_profile_at ON timeline (profile_id, at, message_id);

CREATE TABLE merge_journal (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    survivor TEXT NOT NULL,
    other TEXT,
    identifier TEXT NOT NULL,
    reason TEXT NOT NULL,
    message_id TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX merge_journal_survivor ON merge_journal (survivor);
CREATE INDEX merge_journal_other ON merge_journal (other);

CREATE TABLE offsets (
    stream TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    PRIMARY KEY (stream, partition)
) WITHOUT ROWID;

-- sha256 of "type:value" of every identifier of an erased person
CREATE TABLE suppressions (
    hash TEXT PRIMARY KEY,
    at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE sources (
    name TEXT PRIMARY KEY,
    allowed_origins TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    source TEXT,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL
);

-- events the processor could not apply (after retrying them one by one)
CREATE TABLE failed_events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    stream TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    error TEXT NOT NULL,
    payload BLOB NOT NULL
);
