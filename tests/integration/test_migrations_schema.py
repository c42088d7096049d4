"""`sessiond migrate`: seed 002's schema exactly, idempotent, safe when run concurrently."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from projections.migrate import MIGRATIONS_DIR, MigrationError, discover, migrate

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]

#: seed 002's tables: column -> (type, nullable, default)
SEED_COLUMNS = {
    ("session", "active_sessions"): {
        "session_id": ("text", "NO", None),
        "user_id": ("text", "NO", None),
        "status": ("text", "NO", None),
        "created_at": ("timestamp with time zone", "YES", "CURRENT_TIMESTAMP"),
        "last_active": ("timestamp with time zone", "YES", "CURRENT_TIMESTAMP"),
        "expires_at": ("timestamp with time zone", "NO", None),
        "token": ("text", "YES", None),
    },
    ("session", "session_metadata"): {
        "session_id": ("text", "NO", None),
        "metadata": ("jsonb", "NO", "'{}'::jsonb"),
    },
    ("simulator", "instances"): {
        "simulator_id": ("text", "NO", None),
        "session_id": ("text", "NO", None),
        "user_id": ("text", "NO", None),
        "status": ("text", "NO", None),
        "endpoint": ("text", "YES", None),
        "created_at": ("timestamp with time zone", "YES", "CURRENT_TIMESTAMP"),
        "last_active": ("timestamp with time zone", "YES", "CURRENT_TIMESTAMP"),
        "initial_symbols": ("jsonb", "YES", None),
        "initial_cash": ("double precision", "NO", "100000.0"),
    },
}

SEED_FUNCTION_BODY = """
DECLARE
    deleted_count INTEGER;
BEGIN
    DELETE FROM session.active_sessions
    WHERE expires_at < NOW();
    
    GET DIAGNOSTICS deleted_count = ROW_COUNT;
    RETURN deleted_count;
END;
"""  # noqa: W293 (seed 002's body, blank line with its four spaces included)


async def test_seed_002_schema_is_reproduced_exactly(database_url):
    await migrate(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        for (schema, table), expected in SEED_COLUMNS.items():
            rows = await conn.fetch(
                "SELECT column_name, data_type, is_nullable, column_default"
                " FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2"
                " ORDER BY ordinal_position",
                schema,
                table,
            )
            assert {
                r["column_name"]: (r["data_type"], r["is_nullable"], r["column_default"])
                for r in rows
            } == expected
            assert [r["column_name"] for r in rows] == list(expected)  # column order too
        pks = await conn.fetch(
            "SELECT conrelid::regclass::text AS t, pg_get_constraintdef(oid) AS d"
            " FROM pg_constraint WHERE contype IN ('p', 'f')"
            " AND connamespace::regnamespace::text IN ('session', 'simulator')"
        )
        defs = {(r["t"], r["d"]) for r in pks}
        assert ("session.active_sessions", "PRIMARY KEY (session_id)") in defs
        assert ("session.session_metadata", "PRIMARY KEY (session_id)") in defs
        assert ("simulator.instances", "PRIMARY KEY (simulator_id)") in defs
        cascade = (
            "FOREIGN KEY (session_id) REFERENCES session.active_sessions(session_id)"
            " ON DELETE CASCADE"
        )
        assert ("session.session_metadata", cascade) in defs
        assert ("simulator.instances", cascade) in defs
        indexes = {
            r["indexname"]: (r["schemaname"], r["tablename"], r["indexdef"])
            for r in await conn.fetch("SELECT * FROM pg_indexes")
        }
        for name, table, column in [
            ("idx_sessions_user_id", "active_sessions", "user_id"),
            ("idx_sessions_expires_at", "active_sessions", "expires_at"),
            ("idx_simulator_session_id", "instances", "session_id"),
            ("idx_simulator_user_id", "instances", "user_id"),
            ("idx_simulator_status", "instances", "status"),
        ]:
            assert indexes[name][1] == table
            assert indexes[name][2].endswith(f"USING btree ({column})")
        fn = await conn.fetchrow(
            "SELECT prosrc, pg_get_function_result(p.oid) AS result, l.lanname"
            " FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
            " WHERE p.oid = 'session.cleanup_expired_sessions()'::regprocedure"
        )
        assert (fn["prosrc"], fn["result"], fn["lanname"]) == (
            SEED_FUNCTION_BODY,
            "integer",
            "plpgsql",
        )
        for table in (
            "session.devices",
            "session.state_snapshots",
            "session.handoffs",
            "events.archive",
            "projection.checkpoints",
            "projection.actor_versions",
        ):
            assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table), table
    finally:
        await conn.close()


async def test_migrations_are_recorded_and_idempotent(database_url):
    first = await migrate(database_url)
    assert [m.version for m in first] == [m.version for m in discover()]
    assert await migrate(database_url) == []
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT version, checksum FROM projection.schema_migrations ORDER BY version"
        )
        assert [(r["version"], r["checksum"]) for r in rows] == [
            (m.version, m.checksum) for m in discover()
        ]
    finally:
        await conn.close()


async def test_concurrent_migrators_take_turns(database_url):
    results = await asyncio.gather(*(migrate(database_url) for _ in range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, len(discover())]


async def test_an_applied_migration_that_changed_is_refused(database_url, tmp_path):
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    await migrate(database_url, directory)
    path = sorted(directory.glob("*.sql"))[-1]
    path.write_text(path.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(database_url, directory)


def test_sessiond_migrate_cli_applies_then_reports_up_to_date(database_url):
    env = {**os.environ, "DATABASE_URL": database_url}
    cmd = [sys.executable, "-m", "infra.cli", "migrate"]
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "applied 001_session_simulator" in first.stdout
    again = subprocess.run(
        [*cmd, "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and again.stdout == ""
