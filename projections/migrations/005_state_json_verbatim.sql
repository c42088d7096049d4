-- Numbers round-trip exactly: the shared state and the archived events are kept as the JSON text
-- the projector wrote (`json`), not as `jsonb`, whose numeric type turns the float 1e20 into the
-- integer 100000000000000000000 and -0.0 into 0 (a float read back as an integer, which the
-- edge then refuses as beyond 64 bits; replay and verify disagreeing with Redis). Rows written
-- before this migration keep jsonb's normalised text; only Redis still holds their exact numbers.
-- Nothing queries these columns with jsonb operators (`->>` exists for json too).
ALTER TABLE session.state_snapshots
    ALTER COLUMN state DROP DEFAULT,
    ALTER COLUMN state TYPE json USING state::json,
    ALTER COLUMN state SET DEFAULT '{}'::json;

ALTER TABLE events.archive ALTER COLUMN data TYPE json USING data::json;
