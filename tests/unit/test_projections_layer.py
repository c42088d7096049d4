"""`projections/` reaches Redis only through the event store's API (issue 12): read from its
imports and its text, as the layer rules are checked."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted((ROOT / "projections").rglob("*.py"))


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_projections_import_no_redis_client_no_store_internals_and_no_actors() -> None:
    assert MODULES
    for path in MODULES:
        for module in _imports(path):
            top = module.split(".")[0]
            assert top not in ("redis", "actors"), (path.name, module)
            assert not module.startswith(("infra.store.", "infra.redis")) or module in (
                "infra.store.api",
            ), (path.name, module)


def test_projections_spell_no_redis_key() -> None:
    for path in MODULES:
        text = path.read_text()
        for quote in ('"sd:', "'sd:"):
            assert quote not in text, path.name
