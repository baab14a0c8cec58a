CREATE TABLE destinations (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;

-- one row per (outbox effect, destination) waiting to be delivered; next_at in microseconds
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_at INTEGER NOT NULL,
    next_at INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX deliveries_due ON deliveries (destination, next_at);
CREATE INDEX deliveries_profile ON deliveries (profile_id);

-- deliveries that failed for good (permanent error or retry budget spent); replayable
CREATE TABLE failed_deliveries (
    id INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    failed_at TEXT NOT NULL
);
CREATE INDEX failed_deliveries_destination ON failed_deliveries (destination);
CREATE INDEX failed_deliveries_profile ON failed_deliveries (profile_id);
