"""`sessiond config` run as a user runs it: every knob of every section, secrets masked, each
value's source; JSON for machines; an invalid environment refused in one line. And the CLI's
configuration options, checked by the same loader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec

from infra.sections import GatewayConfig, ProjectorConfig, RuntimeConfig, SimulatorSettings

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = (
    ("gateway", GatewayConfig),
    ("runtime", RuntimeConfig),
    ("projector", ProjectorConfig),
    ("simulators", SimulatorSettings),
)

#: What a deployment sets: a Redis password, JWT secrets, a gateway port, an alias of prod.
ENV = {
    "SESSIOND_ENV": "production",
    "REDIS_URL": "redis://:hunter2@cache.internal:6379/0",
    "DATABASE_URL": "postgresql://sessiond:hunter3@db.internal:5432/sessiond",
    "JWT_SECRET": "hunter4" * 6,
    "JWT_REFRESH_SECRET": "hunter5" * 6,
    "GATEWAY_PORT": "9001",
    "SESSIOND_BATCH_SIZE": "250",
    "SIMULATOR_PROVISIONER": "kubernetes",
}


def _sessiond(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JWT_", "SESSIOND_", "REDIS_", "DATABASE_", "GATEWAY_", "SIMULATOR_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**clean, **env},
        timeout=60,
    )


def _knob_lines(out: str) -> dict[str, str]:
    """``section.knob`` (or ``knob`` for the shared values) -> its line."""
    lines, section = {}, ""
    for line in out.splitlines():
        if line.startswith("["):
            section = line.strip("[]") + "."
        elif "=" in line and not line.startswith("#"):
            lines[section + line.split("=")[0].strip()] = line
    return lines


def test_config_prints_every_knob_masked_with_its_source() -> None:
    proc = _sessiond("config", **ENV)
    assert proc.returncode == 0, proc.stderr
    assert "hunter" not in proc.stdout
    lines = _knob_lines(proc.stdout)
    assert lines["env"].endswith("# SESSIOND_ENV ('production' is an alias of 'prod')")
    assert '"prod"' in lines["env"] and lines["gateway.env"].endswith("# derived from env")
    assert '"redis://:****@cache.internal:6379/0"' in lines["redis_url"]
    assert lines["redis_url"].endswith("# REDIS_URL")
    assert '"****"' in lines["gateway.jwt_secret"]
    assert lines["gateway.jwt_secret"].endswith("# JWT_SECRET")
    assert "9001" in lines["gateway.port"] and lines["gateway.port"].endswith("# GATEWAY_PORT")
    assert lines["runtime.lease_ttl_ms"].endswith("# derived from lease_ttl_ms")
    assert lines["projector.pool_size"].endswith("# default")
    knobs = {
        f"{name}.{f.name}" for name, section in SECTIONS for f in msgspec.structs.fields(section)
    }
    assert knobs <= lines.keys()


def test_config_json_has_every_knob_of_every_section() -> None:
    proc = _sessiond("config", "--output", "json", **ENV)
    assert proc.returncode == 0, proc.stderr
    assert "hunter" not in proc.stdout
    doc = json.loads(proc.stdout)
    for name, section in SECTIONS:
        assert {f.name for f in msgspec.structs.fields(section)} == doc[name].keys()
    assert doc["env"] == {"value": "prod", "source": doc["env"]["source"],
                          "variables": ["SESSIOND_ENV"]}  # fmt: skip
    assert doc["gateway"]["port"]["value"] == 9001
    assert doc["gateway"]["port"]["source"] == "GATEWAY_PORT"
    assert doc["runtime"]["batch_size"] == {
        "value": 250,
        "source": "SESSIOND_BATCH_SIZE",
        "variables": ["SESSIOND_BATCH_SIZE"],
    }
    assert doc["runtime"]["lease_ttl_ms"] == {
        "value": 10_000,
        "source": "derived from lease_ttl_ms",
        "variables": [],
    }
    assert doc["projector"]["database_url"]["value"] == (
        "postgresql://sessiond:****@db.internal:5432/sessiond"
    )
    assert doc["simulators"]["provisioner"]["value"] == "kubernetes"
    assert doc["gateway"]["jwt_refresh_secret"]["value"] == "****"


def test_an_invalid_environment_is_refused_in_one_line_naming_every_problem() -> None:
    proc = _sessiond(
        "config", SESSIOND_PARTITIONS="many", GATEWAY_PORT="0", SESSIOND_LOG_FORMAT="xml"
    )
    assert proc.returncode == 2
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    for problem in (
        "SESSIOND_PARTITIONS='many': expected an integer",
        "GATEWAY_PORT='0': expected 1..65535",
        "SESSIOND_LOG_FORMAT='xml': expected one of json, text",
    ):
        assert problem in line


def test_command_line_options_are_checked_by_the_same_loader() -> None:
    proc = _sessiond("worker", "--partitions", "0", "--lease-ttl-ms", "soon",
                     REDIS_URL="redis://127.0.0.1:1/0")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "--partitions='0': expected 1..16384" in proc.stderr
    assert "--lease-ttl-ms='soon': expected milliseconds or a duration" in proc.stderr
    assert "Traceback" not in proc.stderr
