-- Seed 002 (Session Service Database Documentation): the `session` and `simulator` schemas,
-- reproduced exactly: tables, columns, types, defaults, cascading foreign keys, named indexes and
-- session.cleanup_expired_sessions().
CREATE SCHEMA IF NOT EXISTS session;
CREATE SCHEMA IF NOT EXISTS simulator;

CREATE TABLE session.active_sessions (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    last_active TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
    token TEXT
);

CREATE INDEX idx_sessions_user_id ON session.active_sessions (user_id);
CREATE INDEX idx_sessions_expires_at ON session.active_sessions (expires_at);

CREATE TABLE session.session_metadata (
    session_id TEXT PRIMARY KEY REFERENCES session.active_sessions(session_id) ON DELETE CASCADE,
    metadata JSONB NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE simulator.instances (
    simulator_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES session.active_sessions(session_id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    endpoint TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    last_active TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    initial_symbols JSONB,
    initial_cash FLOAT NOT NULL DEFAULT 100000.0
);

CREATE INDEX idx_simulator_session_id ON simulator.instances (session_id);
CREATE INDEX idx_simulator_user_id ON simulator.instances (user_id);
CREATE INDEX idx_simulator_status ON simulator.instances (status);

CREATE OR REPLACE FUNCTION session.cleanup_expired_sessions() 
RETURNS INTEGER AS $$
DECLARE
    deleted_count INTEGER;
BEGIN
    DELETE FROM session.active_sessions
    WHERE expires_at < NOW();
    
    GET DIAGNOSTICS deleted_count = ROW_COUNT;
    RETURN deleted_count;
END;
$$ LANGUAGE plpgsql;
