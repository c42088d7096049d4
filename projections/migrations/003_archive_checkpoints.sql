-- The durable history (every event, in projection order) and the projector's bookkeeping.
CREATE SCHEMA IF NOT EXISTS events;
CREATE SCHEMA IF NOT EXISTS projection;

CREATE TABLE events.archive (
    seq BIGSERIAL NOT NULL,                     -- order of projection (= partition log order)
    event_id TEXT PRIMARY KEY,
    actor_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    partition INTEGER NOT NULL,
    ts BIGINT NOT NULL,                         -- ms since the epoch, as in the envelope
    type TEXT NOT NULL,
    data JSONB NOT NULL,
    command_id TEXT NOT NULL DEFAULT '',
    correlation_id TEXT NOT NULL DEFAULT '',
    causation_id TEXT NOT NULL DEFAULT '',
    log_id TEXT NOT NULL DEFAULT '',            -- the entry id in sd:{pN}:log
    UNIQUE (actor_id, version)
);

CREATE UNIQUE INDEX idx_archive_seq ON events.archive (seq);

-- One row per (projection name, partition): where the projector stands in sd:{pN}:log.
-- `epoch` is the fencing token of the lease that last wrote it.
CREATE TABLE projection.checkpoints (
    name TEXT NOT NULL,
    partition INTEGER NOT NULL,
    last_id TEXT NOT NULL DEFAULT '0-0',
    epoch BIGINT NOT NULL DEFAULT 0,
    events BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    PRIMARY KEY (name, partition)
);

-- The last projected version of every actor (what the archive holds for it).
CREATE TABLE projection.actor_versions (
    actor_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    version BIGINT NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL
);
