"""`sessiond token`: the token alone on the last line, roles carried, production refuses the
development secret with one line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.auth import TokenService
from infra.config import load_settings

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JWT_", "SESSIOND_", "REDIS_", "DATABASE_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", "token", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**clean, **env},
        timeout=60,
    )


def test_token_is_alone_on_the_last_line_and_verifies() -> None:
    proc = _run("--user", "alice", "--role", "admin")
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip().splitlines()[-1]
    claims = TokenService(load_settings({}).gateway).verify(token)
    assert claims.user_id == "alice" and claims.is_admin


def test_token_uses_the_configured_secret() -> None:
    proc = _run("--user", "bob", JWT_SECRET="s" * 40)
    token = proc.stdout.strip().splitlines()[-1]
    assert (
        TokenService(load_settings({"JWT_SECRET": "s" * 40}).gateway).verify(token).user_id == "bob"
    )


def test_production_refuses_the_dev_secret() -> None:
    proc = _run(
        "--user",
        "carol",
        SESSIOND_ENV="production",
        REDIS_URL="redis://h:1/0",
        DATABASE_URL="postgresql://h/db",
    )
    assert proc.returncode == 2
    assert "JWT_SECRET" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
