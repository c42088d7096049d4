-- `projections rebuild` bumps `generation` when it swaps fresh tables in: a projector whose
-- in-memory aggregates were loaded before the swap finds its next commit refused, drops them and
-- reloads from the new tables.
ALTER TABLE projection.checkpoints ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
