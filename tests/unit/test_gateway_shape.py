"""How the gateway is built, checked by reading its code: adapters stand alone on the
operations, and connection states change through one guarded method."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
ADAPTERS = ("gateway.rest", "gateway.ws", "gateway.sse", "gateway.grpc.service")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_adapter_needs_nothing_of_another_adapter(adapter: str) -> None:
    """What one adapter needs lives in the operations (or a module they share), never in
    another adapter."""
    imported = _imports(GATEWAY / f"{adapter.removeprefix('gateway.').replace('.', '/')}.py")
    assert not imported & (set(ADAPTERS) - {adapter})


def test_the_operations_import_no_adapter() -> None:
    for path in sorted((GATEWAY / "operations").glob("*.py")):
        assert not _imports(path) & set(ADAPTERS), path.name


def test_connection_states_change_only_through_move_to() -> None:
    """No `<conn>.state = ConnState...` anywhere in the gateway but in `Connection.move_to`
    (and the initial state, in `Connection.__init__`)."""
    bare = []
    for path in sorted(GATEWAY.rglob("*.py")):
        for func in ast.walk(ast.parse(path.read_text())):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef) or func.name in (
                "move_to",
                "__init__",
            ):
                continue
            for node in ast.walk(func):
                if (
                    isinstance(node, ast.Assign)
                    and "ConnState" in ast.unparse(node.value)
                    and any(
                        isinstance(t, ast.Attribute) and t.attr == "state" for t in node.targets
                    )
                ):
                    bare.append(f"{path.name}:{node.lineno} in {func.name}")
    assert bare == []
