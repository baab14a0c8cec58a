-- catalog definitions (placements, offers, experiments) from files and the admin API
CREATE TABLE catalog (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    definition TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;

-- the decision log: one row per placement decided; ``at`` in microseconds. A rowid table (not
-- WITHOUT ROWID): its rows are kilobytes, and appends go to the end of its B-tree
CREATE TABLE decisions (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    at INTEGER NOT NULL,
    placement TEXT NOT NULL,
    profile_id TEXT,
    experiment TEXT,
    variant TEXT,
    record BLOB NOT NULL
);
CREATE INDEX decisions_placement_at ON decisions (placement, at);
CREATE INDEX decisions_profile ON decisions (profile_id);
CREATE INDEX decisions_experiment ON decisions (experiment, variant) WHERE experiment IS NOT NULL;

-- feedback joined by the processor: the first impression, click and conversion of an offer of a
-- decision (later repeats are the same fact and are ignored)
CREATE TABLE feedback (
    seq INTEGER PRIMARY KEY,
    decision_id TEXT NOT NULL,
    offer TEXT NOT NULL,
    kind TEXT NOT NULL,
    placement TEXT NOT NULL,
    at INTEGER NOT NULL,
    value REAL NOT NULL,
    message_id TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    UNIQUE (decision_id, offer, kind)
);
CREATE INDEX feedback_profile ON feedback (profile_id);

-- impressions counted for budgets and placement limits: "offer:<id>", "offer:<id>@<hour>", ...
CREATE TABLE impression_counters (
    key TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    hour INTEGER  -- the hour of an hourly counter (unix seconds), NULL for a lifetime one
) WITHOUT ROWID;

-- learned policy state; ``version`` tells decide nodes to reload; the learner's cursor into
-- ``feedback`` is saved in the same transaction as the states it produced
CREATE TABLE policies (
    name TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    state BLOB NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
