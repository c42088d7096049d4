"""A PostgreSQL server of a test's own, to kill -9 and restart on the same data directory.

The session-wide server other tests share must never be killed: tests that take PostgreSQL away
start their own with `infra.embedded.start_postgres` in `server_data_dir`.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from infra.embedded import EmbeddedPostgres, EmbeddedServerError, start_postgres

__all__ = ["kill_postgres", "restart_postgres"]


def kill_postgres(server: EmbeddedPostgres) -> None:
    """SIGKILL the postmaster (no shutdown, no checkpoint: a crash), reap it, let go of its
    data directory's lock. Its backends notice their postmaster died and exit by themselves."""
    os.kill(server.pid, signal.SIGKILL)
    server.stop()


def restart_postgres(data_dir: Path, timeout: float = 60.0, **kw: object) -> EmbeddedPostgres:
    """Start PostgreSQL again on `data_dir` (crash recovery runs first), retrying while the
    killed server's last backends still hold the directory."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return start_postgres(data_dir, **kw)  # type: ignore[arg-type]
        except EmbeddedServerError as e:
            if time.monotonic() > deadline or not any(
                s in str(e) for s in ("in use", "still in use", "already running")
            ):
                raise
            time.sleep(0.1)
