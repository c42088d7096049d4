-- Events the projector could not project (PostgreSQL refused their rows, or they did not decode):
-- recorded here, in the same transaction that moves the partition's checkpoint past them, so one
-- bad event never stops its partition. `raw` is the log entry's msgpack exactly as Redis held it
-- (bytea holds any bytes, where text and jsonb refuse some, e.g. U+0000); the text columns hold
-- what could be read of its envelope (empty when it did not decode).
CREATE TABLE projection.dead_letters (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,                         -- the projection (checkpoint name)
    partition INTEGER NOT NULL,
    log_id TEXT NOT NULL,                       -- the entry id in sd:{pN}:log
    event_id TEXT NOT NULL DEFAULT '',
    actor_id TEXT NOT NULL DEFAULT '',
    version BIGINT NOT NULL DEFAULT 0,
    type TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL,
    raw BYTEA NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    UNIQUE (name, partition, log_id)
);

CREATE INDEX idx_dead_letters_created_at ON projection.dead_letters (created_at);
