-- workers alive (their heartbeat) and which worker consumes which partition, until when;
-- times in microseconds
CREATE TABLE workers (
    name TEXT COLLATE "C" PRIMARY KEY,
    alive_until BIGINT NOT NULL
);

CREATE TABLE partition_leases (
    stream TEXT COLLATE "C" NOT NULL,
    partition INTEGER NOT NULL,
    owner TEXT COLLATE "C" NOT NULL,
    until BIGINT NOT NULL,
    PRIMARY KEY (stream, partition)
);
