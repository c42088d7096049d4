"""Rules of the code's layers, checked by reading the source with `ast`.

The environment is read in one place: `infra/config.py` loads it once into `Settings`, and every
other module gets its section passed down. A module that reads ``os.environ`` / ``os.getenv``
itself would bring back a second loader with its own defaults.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("actors", "events", "projections", "gateway", "infra")
#: The one reader of the process environment.
ENVIRONMENT_READER = "infra/config.py"


_ENV_NAMES = frozenset({"environ", "environb", "getenv", "getenvb"})


def environment_reads(source: str) -> list[int]:
    """Line numbers where `source` touches the process environment: ``os.environ``,
    ``os.getenv`` (any ``.environ`` / ``.getenv`` attribute, to be safe), and the names
    ``from os import environ, getenv`` brings in, the import included."""
    tree = ast.parse(source)
    imported: set[str] = set()
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            names = [a for a in node.names if a.name in _ENV_NAMES]
            imported.update(a.asname or a.name for a in names)
            if names:
                lines.add(node.lineno)
    for node in ast.walk(tree):
        attribute = isinstance(node, ast.Attribute) and node.attr in _ENV_NAMES
        name = isinstance(node, ast.Name) and node.id in imported
        if attribute or name:
            lines.add(node.lineno)
    return sorted(lines)


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize(
    "source",
    [
        "import os\nx = os.environ['A']\n",
        "import os\nx = os.environ.get('A')\n",
        "import os\nx = os.getenv('A', '')\n",
        "from os import environ\nx = environ.get('A')\n",
        "from os import getenv as ge\nx = ge('A')\n",
        "import os as o\nenv = dict(o.environ)\n",
        "import os\nos.environ['A'] = '1'\n",
    ],
)
def test_every_way_of_reading_the_environment_is_found(source: str) -> None:
    assert environment_reads(source)


def test_other_uses_of_os_are_not_environment_reads() -> None:
    assert not environment_reads("import os\nx = os.getpid(); y = os.path.join('a', 'b')\n")
    assert not environment_reads("from honcho.environ import parse_procfile\n")


def test_only_the_settings_loader_reads_the_environment() -> None:
    modules = _modules()
    assert len(modules) > 100 and (ROOT / ENVIRONMENT_READER) in modules
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in modules
        if path.relative_to(ROOT).as_posix() != ENVIRONMENT_READER
        for line in environment_reads(path.read_text())
    ]
    assert offenders == [], (
        "read the environment only in infra/config.py (add a knob to infra/knobs.py and pass "
        f"the section down): {offenders}"
    )


# --- Imports between layers -------------------------------------------------------------------
#
# Data flows one way (gateway -> command streams -> actors -> event streams -> projector ->
# tables), and the floor (`infra/` but its CLI) is what everything stands on. Each rule below is one
# sentence of DESIGN.md; a test per rule names the offending module and import when it breaks.

#: Libraries that do I/O: pure code (schemas, deciders, projection folds) imports none of them.
IO_LIBRARIES = frozenset(
    {
        "redis",
        "hiredis",
        "asyncpg",
        "websockets",
        "starlette",
        "uvicorn",
        "grpc",
        "kubernetes",
        "socket",
        "asyncio",
        "httpx",
        "subprocess",
        "prometheus_client",
    }
)
#: The roof of `infra/`: the command line, which wires every package together.
ROOF = ("infra/cli.py", "infra/commands/")
#: Pure deciders: decide / evolve / react per actor kind, and their registry.
DECIDERS = ("actors/decider.py", "actors/registry.py", "actors/session.py", "actors/simulator.py")


def imported_modules(source: str) -> set[str]:
    """The top-level package of every absolute import in `source` (relative imports stay inside
    their own package, so they cannot cross a layer)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _offenders(paths: list[Path], forbidden: frozenset[str] | set[str]) -> list[str]:
    return [
        f"{p.relative_to(ROOT)} imports {sorted(imported_modules(p.read_text()) & forbidden)}"
        for p in paths
        if imported_modules(p.read_text()) & forbidden
    ]


def _package(name: str) -> list[Path]:
    return sorted((ROOT / name).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_imported_modules_reads_absolute_imports_only() -> None:
    source = "import redis.asyncio as r\nfrom actors.session import x\nfrom . import y\n"
    assert imported_modules(source) == {"redis", "actors"}


def test_events_import_no_other_layer_and_no_io() -> None:
    forbidden = {"actors", "projections", "gateway", "infra"} | IO_LIBRARIES
    assert _offenders(_package("events"), forbidden) == []


def test_deciders_are_pure() -> None:
    deciders = [ROOT / p for p in DECIDERS]
    forbidden = {"projections", "gateway", "infra"} | IO_LIBRARIES
    assert _offenders(deciders, forbidden) == []


def test_the_floor_imports_nothing_above_it() -> None:
    floor = [p for p in _package("infra") if not _rel(p).startswith(ROOF)]
    assert _offenders(floor, {"actors", "projections", "gateway"}) == []


def test_actors_and_projections_do_not_reach_up_or_across() -> None:
    assert _offenders(_package("actors"), {"projections", "gateway"}) == []
    assert _offenders(_package("projections"), {"actors", "gateway"}) == []


def test_the_gateway_sends_commands_and_reads_through_the_store() -> None:
    """The gateway never runs actors in-process: it talks to them through command streams."""
    assert _offenders(_package("gateway"), {"actors"}) == []


def test_only_the_event_store_speaks_redis() -> None:
    outside = [
        p for pkg in PACKAGES for p in _package(pkg) if not _rel(p).startswith("infra/store/")
    ]
    assert _offenders(outside, {"redis", "hiredis"}) == []


def test_only_the_store_layout_names_redis_keys() -> None:
    layout = "infra/store/layout.py"
    offenders = [
        _rel(p)
        for pkg in PACKAGES
        for p in _package(pkg)
        if _rel(p) != layout and '"sd:' in p.read_text()
    ]
    assert offenders == []


def test_deciders_import_only_events_and_the_decider_record() -> None:
    """Issue 12's rule: a decider reads like the domain it models, with nothing of the runtime."""
    allowed = {"events", "actors.decider"}
    offenders = []
    for rel in ("actors/session.py", "actors/simulator.py"):
        for node in ast.walk(ast.parse((ROOT / rel).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                ours = node.module.split(".")[0] in PACKAGES
                if ours and not any(
                    node.module == a or node.module.startswith("events") for a in allowed
                ):
                    offenders.append(f"{rel}: from {node.module}")
    assert offenders == []
