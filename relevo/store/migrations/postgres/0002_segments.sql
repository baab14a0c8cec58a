-- segment definitions (from files and the admin API); backfilled_version marks a finished backfill
CREATE TABLE segments (
    name TEXT COLLATE "C" PRIMARY KEY,
    definition TEXT NOT NULL,
    version TEXT NOT NULL,
    backfilled_version TEXT,
    updated_at TEXT NOT NULL
);

CREATE TABLE segment_members (
    segment TEXT COLLATE "C" NOT NULL,
    profile_id TEXT COLLATE "C" NOT NULL,
    entered_at BIGINT NOT NULL,
    PRIMARY KEY (segment, profile_id)
);
CREATE INDEX segment_members_profile ON segment_members (profile_id);

-- when a profile's time-dependent segments must be evaluated again (microseconds)
CREATE TABLE segment_timers (
    profile_id TEXT COLLATE "C" PRIMARY KEY,
    due_at BIGINT NOT NULL
);
CREATE INDEX segment_timers_due ON segment_timers (due_at);

-- effects written in the same transaction as the state change that caused them; ids only
-- order the rows (fan-out numbers the effects it consumes from its own cursor)
CREATE TABLE outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    profile_id TEXT COLLATE "C" NOT NULL,
    payload BYTEA NOT NULL
);
CREATE INDEX outbox_profile ON outbox (profile_id);
