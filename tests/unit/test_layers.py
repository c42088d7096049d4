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
