"""The CLI discovers commands, runs sync and async handlers, and turns expected errors into
one line and exit code 2."""

from __future__ import annotations

import argparse
import subprocess
import sys
import types

import pytest

from events.errors import StoreUnavailable
from infra import cli


def _fake_module(name: str, handler) -> types.ModuleType:
    module = types.ModuleType(name)

    def register(subparsers: argparse._SubParsersAction) -> None:
        p = subparsers.add_parser(name, help=f"the {name} command")
        p.add_argument("--value", type=int, default=0)
        p.set_defaults(handler=handler)

    module.register = register  # type: ignore[attr-defined]
    return module


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch):
    modules: list[tuple[str, types.ModuleType]] = []
    monkeypatch.setattr(cli, "_load_command_modules", lambda: modules)
    return modules


def test_sync_and_async_handlers_return_their_exit_code(commands) -> None:
    async def async_handler(args: argparse.Namespace) -> int:
        return args.value + 1

    commands.append(("a", _fake_module("plain", lambda args: args.value)))
    commands.append(("b", _fake_module("later", async_handler)))
    assert cli.run(["plain", "--value", "3"]) == 3
    assert cli.run(["later", "--value", "4"]) == 5
    assert cli.available_commands() == {"plain": "the plain command", "later": "the later command"}


def test_expected_errors_print_one_line_and_exit_2(commands, capsys) -> None:
    def failing(args: argparse.Namespace) -> int:
        raise StoreUnavailable("redis is down")

    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    commands.append(("f", _fake_module("fail", failing)))
    commands.append(("i", _fake_module("stop", interrupted)))
    assert cli.run(["fail"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "sessiond: error: redis is down"
    assert cli.run(["stop"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(commands, capsys) -> None:
    assert cli.run([]) == 2
    assert "usage: sessiond" in capsys.readouterr().err


def test_console_script_lists_real_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "infra.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "commands:" in out
    assert any(line.split()[:1] == ["dev"] for line in out.splitlines())


def test_a_command_module_that_fails_to_import_fails_the_cli_loudly(tmp_path, monkeypatch) -> None:
    """A broken command is a bug to see at once, not a subcommand silently missing."""
    import infra.commands

    (tmp_path / "broken.py").write_text("raise ImportError('a missing dependency')\n")
    monkeypatch.setattr(infra.commands, "__path__", [*infra.commands.__path__, str(tmp_path)])
    with pytest.raises(ImportError, match="a missing dependency"):
        cli.build_parser()


def test_version_prints_the_package_version_and_exits_0() -> None:
    import tomllib
    from pathlib import Path

    declared = tomllib.loads(Path(__file__).parents[2].joinpath("pyproject.toml").read_text())
    out = subprocess.run(
        [sys.executable, "-m", "infra.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"sessiond {declared['project']['version']}"
