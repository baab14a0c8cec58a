-- catalog definitions (placements, offers, experiments) from files and the admin API
CREATE TABLE catalog (
    kind TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    definition TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);

-- the decision log: one row per placement decided; ``at`` in microseconds
CREATE TABLE decisions (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    at BIGINT NOT NULL,
    placement TEXT COLLATE "C" NOT NULL,
    profile_id TEXT COLLATE "C",
    experiment TEXT COLLATE "C",
    variant TEXT COLLATE "C",
    record BYTEA NOT NULL
);
CREATE INDEX decisions_placement_at ON decisions (placement, at);
CREATE INDEX decisions_profile ON decisions (profile_id);
CREATE INDEX decisions_experiment ON decisions (experiment, variant) WHERE experiment IS NOT NULL;

-- feedback joined by the processor: the first impression, click and conversion of an offer of a
-- decision (later repeats are the same fact and are ignored).
-- ``seq`` is the learner's cursor, so it must grow in COMMIT order, which concurrent workers'
-- inserts do not: a row is written without one, and its transaction numbers its rows just
-- before it commits, holding a lock that only the commit releases (``id`` is insert order)
CREATE SEQUENCE feedback_seq AS BIGINT;
CREATE TABLE feedback (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq BIGINT UNIQUE,
    decision_id TEXT COLLATE "C" NOT NULL,
    offer TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    placement TEXT NOT NULL,
    at BIGINT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    message_id TEXT NOT NULL,
    profile_id TEXT COLLATE "C" NOT NULL,
    UNIQUE (decision_id, offer, kind)
);
CREATE INDEX feedback_profile ON feedback (profile_id);
CREATE INDEX feedback_unnumbered ON feedback (id) WHERE seq IS NULL;

-- impressions counted for budgets and placement limits: "offer:<id>", "offer:<id>@<hour>", ...
CREATE TABLE impression_counters (
    key TEXT COLLATE "C" PRIMARY KEY,
    count BIGINT NOT NULL,
    hour BIGINT  -- the hour of an hourly counter (unix seconds), NULL for a lifetime one
);

-- learned policy state; ``version`` tells decide nodes to reload; the learner's cursor into
-- ``feedback`` is saved in the same transaction as the states it produced
CREATE TABLE policies (
    name TEXT COLLATE "C" PRIMARY KEY,
    algorithm TEXT NOT NULL,
    state BYTEA NOT NULL,
    version BIGINT NOT NULL,
    updated_at TEXT NOT NULL
);
