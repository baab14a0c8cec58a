-- workers alive (their heartbeat) and which worker consumes which partition, until when;
-- times in microseconds
CREATE TABLE workers (
    name TEXT PRIMARY KEY,
    alive_until INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE partition_leases (
    stream TEXT NOT NULL,
    partition INTEGER NOT NULL,
    owner TEXT NOT NULL,
    until INTEGER NOT NULL,
    PRIMARY KEY (stream, partition)
) WITHOUT ROWID;
