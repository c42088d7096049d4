-- Every event one request caused, across actors (`GET /admin/events?correlation_id=`,
-- `sessiond events --correlation-id`): an index on the archive's correlation id, ordered the
-- way the events were projected. Events without one ('') are left out of the index.
CREATE INDEX IF NOT EXISTS idx_archive_correlation
    ON events.archive (correlation_id, seq) WHERE correlation_id <> '';
