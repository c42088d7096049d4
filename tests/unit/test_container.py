"""The container image (Dockerfile, .dockerignore) and the laptop stack (compose.yaml), checked
without a container engine (`docker build` needs a daemon, which the test machines lack).

Checked here: the Dockerfile parses with BuildKit's own parser; every COPY source exists and is in
the build context that .dockerignore leaves; the dependencies install from uv.lock (`--frozen`,
never re-resolved) without the dev group or extra; the runtime stage runs `sessiond` as a fixed
non-root uid; uv.lock is in sync with pyproject.toml; compose.yaml runs every Procfile process from
that one image, after healthy stores and a successful migration, with health checks and restart
policies. Not checked here: that the image builds and its processes start (see
docs/operations.md, "What the tests do not run").
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from urllib.parse import urlsplit

import pytest
import yaml

from tests.imagekit import (
    ROOT,
    files_under,
    flag,
    in_context,
    parsed,
    pattern_regex,
    procfile,
    stages,
)

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMAGE_UID = 10001

# Dockerfile reference: every instruction BuildKit knows (the parser accepts any word).
INSTRUCTIONS = set(
    "ADD ARG CMD COPY ENTRYPOINT ENV EXPOSE FROM HEALTHCHECK LABEL ONBUILD RUN SHELL STOPSIGNAL"
    " USER VOLUME WORKDIR".split()
)


def test_the_dockerignore_matcher_reads_patterns_as_docker_does() -> None:
    assert pattern_regex("infra/k8s/*").match("infra/k8s/base")
    assert not pattern_regex("infra/k8s/*").match("infra/k8s/base/x.yaml")
    assert pattern_regex("**/__pycache__").match("a/b/__pycache__")
    assert pattern_regex("**/__pycache__").match("__pycache__")
    assert pattern_regex("**/*.py[co]").match("infra/x.pyc")
    assert not in_context(".venv/bin/python") and not in_context("tests/conftest.py")
    assert in_context("infra/cli.py") and not in_context("infra/__pycache__/cli.cpython-311.pyc")
    assert not in_context("infra/k8s/base/kustomization.yaml")
    assert in_context("infra/k8s/simulator.yaml.tmpl")


# --------------------------------------------------------------------------- Dockerfile


def test_the_dockerfile_parses_with_buildkits_parser_into_known_instructions() -> None:
    commands = parsed()
    assert commands, "empty Dockerfile"
    unknown = [c.original for c in commands if c.cmd not in INSTRUCTIONS]
    assert not unknown
    assert not [c.original for c in commands if c.cmd == "ADD"], "COPY what the context holds"


def test_the_image_builds_in_stages_and_the_runtime_copies_only_the_built_venv() -> None:
    build, runtime = stages()
    assert (build.name, runtime.name) == ("build", "runtime")
    assert runtime.base == build.base  # the venv's python is the same interpreter
    copies = runtime.all("COPY")
    assert copies and all(flag(c, "from") == "build" for c in copies)
    assert not [r.original for r in runtime.all("RUN") if re.search(r"\b(uv|pip)\b", r.original)]


def test_every_copy_source_exists_in_the_build_context() -> None:
    checked = 0
    for stage in stages():
        for copy in stage.all("COPY"):
            if flag(copy, "from") is not None:
                continue
            *sources, _dest = copy.value
            for source in sources:
                path = ROOT / source
                assert path.exists(), f"{copy.original}: {source} does not exist"
                files = [source] if path.is_file() else files_under(path)
                assert files, f"{copy.original}: {source} is empty"
                kept = [f for f in files if in_context(f)]
                assert kept, f"{copy.original}: .dockerignore leaves {source} out"
                checked += 1
    assert checked >= 5


def test_the_build_context_holds_every_file_the_installed_package_reads() -> None:
    """What the wheel ships (the hatch packages) reaches the image, the SQL migrations and the
    simulator template included; only the Kubernetes manifests stay out."""
    packages = PROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = {
        source.rstrip("/")
        for copy in stages()[0].all("COPY")
        if flag(copy, "from") is None
        for source in copy.value[:-1]
    }
    assert set(packages) <= copied
    assert {"pyproject.toml", "uv.lock", PROJECT["project"]["readme"]} <= copied
    left_out = [
        f
        for package in packages
        for f in files_under(ROOT / package)
        if not in_context(f) and not f.startswith("infra/k8s/")
    ]
    assert not left_out
    assert in_context("infra/k8s/simulator.yaml.tmpl")
    assert [f for f in files_under(ROOT / "projections" / "migrations") if f.endswith(".sql")]
    assert all(in_context(f) for f in files_under(ROOT / "projections" / "migrations"))


def test_dependencies_install_frozen_from_the_lock_without_the_dev_group_or_extra() -> None:
    runs = [c.value[0] for s in stages() for c in s.all("RUN")]
    syncs = [r for r in runs if re.search(r"\buv\s+sync\b", r)]
    assert syncs, "the image installs nothing with uv sync"
    for sync in syncs:
        words = sync.split()
        assert "--frozen" in words and "--no-dev" in words, sync
        assert not {"--all-extras", "--extra", "--all-groups", "--group", "--dev"} & set(words)
    assert not [r for r in runs if re.search(r"\buv\s+(pip|add|lock)\b", r)]
    # the only pip install is uv itself, at the version uv.lock pins
    pips = [r for r in runs if re.search(r"\bpip\s+install\b", r)]
    assert len(pips) == 1
    pinned = re.search(r"\buv==(\S+)", pips[0])
    assert pinned is not None and pinned.group(1) == _locked_version("uv")
    # the runtime stage has no source tree: the project is installed as a wheel
    assert any("--no-editable" in s.split() for s in syncs)


def _locked_version(name: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == name)


def test_the_image_runs_sessiond_as_a_fixed_non_root_user() -> None:
    runtime = stages()[-1]
    users = runtime.all("USER")
    assert users, "the runtime stage never leaves root"
    uid, _, gid = users[-1].value[0].partition(":")
    assert uid.isdigit() and int(uid) == IMAGE_UID
    assert not gid or (gid.isdigit() and int(gid) != 0)
    after = runtime.commands[runtime.commands.index(users[-1]) + 1 :]
    assert not [c.original for c in after if c.cmd in ("USER", "RUN")]
    assert f"--uid {IMAGE_UID}" in " ".join(r.value[0] for r in runtime.all("RUN"))
    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert entrypoint.json and list(entrypoint.value) == ["sessiond"]
    assert "sessiond" in PROJECT["project"]["scripts"]


def test_uv_lock_is_in_sync_with_pyproject() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "uv", "lock", "--check", "--offline"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- compose.yaml

COMPOSE_TOP = {"name", "services", "volumes", "networks", "configs", "secrets", "include"}
SERVICE_KEYS = {
    "build", "cap_drop", "command", "depends_on", "entrypoint", "environment", "healthcheck",
    "image", "ports", "read_only", "restart", "security_opt", "stop_grace_period", "tmpfs",
    "user", "volumes",
}  # fmt: skip
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
RESTARTS = {"no", "always", "on-failure", "unless-stopped"}
STORES = ("valkey", "postgres")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_file_uses_only_compose_spec_keys(compose: dict) -> None:
    assert {k for k in compose if not k.startswith("x-")} <= COMPOSE_TOP
    for name, service in compose["services"].items():
        assert set(service) <= SERVICE_KEYS, (name, set(service) - SERVICE_KEYS)
        assert service.get("restart", "no") in RESTARTS, name
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in compose["services"] and spec["condition"] in CONDITIONS
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith((".", "/")) or source in compose["volumes"], volume
        health = service.get("healthcheck", {})
        if not health.get("disable"):
            assert health["test"][0] in ("CMD", "CMD-SHELL"), name


def test_compose_runs_every_procfile_process_from_the_one_image(compose: dict) -> None:
    services = compose["services"]
    image = services["migrate"]["image"]
    for name, command in procfile().items():
        assert command[0] == "sessiond", f"Procfile {name}: the image's entrypoint is sessiond"
        service = services[name]
        assert service["image"] == image and service["build"] == "."
        assert service["command"] == command[1:], name  # the process name, as in the Procfile
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["build"] == "."


def test_compose_processes_start_after_healthy_stores_and_a_successful_migration(
    compose: dict,
) -> None:
    services = compose["services"]
    for name in procfile():
        needs = {k: v["condition"] for k, v in services[name]["depends_on"].items()}
        assert needs == {
            "valkey": "service_healthy",
            "postgres": "service_healthy",
            "migrate": "service_completed_successfully",
        }, name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "on-failure"


def test_compose_services_have_health_checks_and_restart_policies(compose: dict) -> None:
    services = compose["services"]
    for name in [*STORES, *procfile()]:
        health = services[name]["healthcheck"]
        assert not health.get("disable") and health["interval"] and health["retries"], name
        assert services[name]["restart"] in ("always", "unless-stopped"), name
    metrics_port = urlsplit("//" + services["worker"]["environment"]["SESSIOND_METRICS_ADDR"]).port
    for name in procfile():
        probe = " ".join(services[name]["healthcheck"]["test"])
        expected = "8080/ready" if name == "gateway" else f"{metrics_port}/healthz"
        assert expected in probe, name


def test_compose_processes_reach_the_stores_by_service_name_as_the_image_user(
    compose: dict,
) -> None:
    services = compose["services"]
    for name in ["migrate", *procfile()]:
        service = services[name]
        env = service["environment"]
        redis, postgres = urlsplit(env["REDIS_URL"]), urlsplit(env["DATABASE_URL"])
        assert (redis.hostname, redis.port) == ("valkey", 6379)
        assert (postgres.hostname, postgres.port) == ("postgres", 5432)
        assert postgres.username == services["postgres"]["environment"]["POSTGRES_USER"]
        assert postgres.path.lstrip("/") == services["postgres"]["environment"]["POSTGRES_DB"]
        assert service["user"] == f"{IMAGE_UID}:{IMAGE_UID}"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert "noeviction" in services["valkey"]["command"]
    assert services["gateway"]["environment"]["SERVER_ADDR"].endswith(":8080")
    assert services["gateway"]["environment"]["GRPC_ADDR"] == "0.0.0.0:50051"
    assert services["gateway"]["ports"] == ["127.0.0.1:8080:8080", "127.0.0.1:50051:50051"]
