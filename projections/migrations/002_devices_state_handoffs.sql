-- Seed 004's read models: the devices of a session (presence), the shared state snapshot and
-- device handoffs. Children of session.active_sessions, so ending or cleaning up a session
-- removes them too (as seed 002's cascade does for metadata and simulators).
CREATE TABLE session.devices (
    session_id TEXT NOT NULL REFERENCES session.active_sessions(session_id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    device_type TEXT NOT NULL DEFAULT '',
    device_name TEXT NOT NULL DEFAULT '',
    os TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,                       -- online | offline
    connections INTEGER NOT NULL DEFAULT 0,     -- open connections (ws + sse)
    ws_connections INTEGER NOT NULL DEFAULT 0,
    sse_connections INTEGER NOT NULL DEFAULT 0,
    connection_ids JSONB NOT NULL DEFAULT '{}'::jsonb,  -- connection id -> transport
    pod_name TEXT NOT NULL DEFAULT '',
    ip_address TEXT NOT NULL DEFAULT '',
    left_reason TEXT,
    joined_at TIMESTAMP WITH TIME ZONE NOT NULL,
    last_seen TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (session_id, device_id)
);

CREATE INDEX idx_devices_status ON session.devices (status);

CREATE TABLE session.state_snapshots (
    session_id TEXT PRIMARY KEY REFERENCES session.active_sessions(session_id) ON DELETE CASCADE,
    state JSONB NOT NULL DEFAULT '{}'::jsonb,
    state_version BIGINT NOT NULL DEFAULT 0,
    device_id TEXT NOT NULL DEFAULT '',
    app_version TEXT NOT NULL DEFAULT '',
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL
);

CREATE TABLE session.handoffs (
    token TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES session.active_sessions(session_id) ON DELETE CASCADE,
    source_device TEXT NOT NULL,
    target_device TEXT NOT NULL,
    status TEXT NOT NULL,                       -- PENDING | ACCEPTED (expired: deleted)
    state_version BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
    accepted_at TIMESTAMP WITH TIME ZONE
);

CREATE INDEX idx_handoffs_session_id ON session.handoffs (session_id);
