CREATE TABLE destinations (
    name TEXT COLLATE "C" PRIMARY KEY,
    definition TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- one row per (outbox effect, destination) waiting to be delivered; next_at in microseconds
CREATE TABLE deliveries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination TEXT COLLATE "C" NOT NULL,
    webhook_id TEXT NOT NULL,
    profile_id TEXT COLLATE "C" NOT NULL,
    payload BYTEA NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_at BIGINT NOT NULL,
    next_at BIGINT NOT NULL,
    last_error TEXT
);
CREATE INDEX deliveries_due ON deliveries (destination, next_at);
CREATE INDEX deliveries_profile ON deliveries (profile_id);

-- deliveries that failed for good (permanent error or retry budget spent); replayable
CREATE TABLE failed_deliveries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination TEXT COLLATE "C" NOT NULL,
    webhook_id TEXT NOT NULL,
    profile_id TEXT COLLATE "C" NOT NULL,
    payload BYTEA NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    failed_at TEXT NOT NULL
);
CREATE INDEX failed_deliveries_destination ON failed_deliveries (destination);
CREATE INDEX failed_deliveries_profile ON failed_deliveries (profile_id);
