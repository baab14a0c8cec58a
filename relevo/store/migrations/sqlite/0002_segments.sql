-- segment definitions (from files and the admin API); backfilled_version marks a finished backfill
CREATE TABLE segments (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    version TEXT NOT NULL,
    backfilled_version TEXT,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE segment_members (
    segment TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    entered_at INTEGER NOT NULL,
    PRIMARY KEY (segment, profile_id)
) WITHOUT ROWID;
CREATE INDEX segment_members_profile ON segment_members (profile_id);

-- when a profile's time-dependent segments must be evaluated again (microseconds)
CREATE TABLE segment_timers (
    profile_id TEXT PRIMARY KEY,
    due_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX segment_timers_due ON segment_timers (due_at);

-- effects written in the same transaction as the state change that caused them
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX outbox_profile ON outbox (profile_id);
