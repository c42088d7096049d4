"""The `sessiond` command line: one entry point, subcommands discovered in `infra.commands`.

Every module of the `infra.commands` package that defines ``register(subparsers)`` contributes
its subcommands; ``sessiond --help`` lists them with their one-line help. A command module that
fails to import or register is a bug: it fails the whole CLI, loudly. Handlers are plain or
``async`` functions of the parsed arguments returning an exit code. Expected failures
(`SessiondError`, an unreachable store, Ctrl-C) end with one line on stderr and exit code 2;
only real bugs show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from events.errors import SessiondError

__all__ = [
    "add_store_options",
    "available_commands",
    "build_parser",
    "main",
    "run_async",
    "store_target",
    "wait_for_shutdown_signal",
]

T = TypeVar("T")
PROG = "sessiond"


def run_async(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``await fn(*args)`` on a fresh asyncio loop (uvloop when available) and return it."""
    import anyio

    try:
        import uvloop  # noqa: F401

        options = {"use_uvloop": True}
    except ImportError:
        options = {}
    return anyio.run(fn, *args, backend="asyncio", backend_options=options)


async def wait_for_shutdown_signal() -> int:
    """Return the number of the first SIGINT or SIGTERM this process receives.

    For long-running services: start work in a task group, ``await wait_for_shutdown_signal()``,
    then drain and cancel. Installing the receiver replaces the default Ctrl-C behaviour while
    it waits, so shutdown is orderly.
    """
    import anyio

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            return int(signum)
    raise RuntimeError("signal receiver closed")  # pragma: no cover


def add_store_options(parser: argparse.ArgumentParser, *, metrics: bool = False) -> None:
    """The options of every process that talks to the partitions, with the same defaults."""
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="number of partitions P of the deployment (default: $SESSIOND_PARTITIONS or 16); "
        "every process must agree on it",
    )
    parser.add_argument("--redis-url", default=None, help="Redis URL (default: $REDIS_URL)")
    if metrics:
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=0,
            help="serve Prometheus metrics on 127.0.0.1:PORT (default: off)",
        )


def store_target(args: argparse.Namespace, settings: Any) -> tuple[str, int]:
    """The Redis URL and partition count given on the command line, else the configured ones."""
    return args.redis_url or settings.require_redis_url(), args.partitions or settings.partitions


def _load_command_modules() -> list[tuple[str, Any]]:
    import infra.commands

    modules = []
    for info in sorted(pkgutil.iter_modules(infra.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        name = f"infra.commands.{info.name}"
        modules.append((name, importlib.import_module(name)))
    return modules


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every discovered subcommand registered."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "sessiond: session service for real-time apps, an event-sourced actor system on "
            "Redis Streams. `sessiond dev` runs everything locally."
        ),
        epilog=f"Run `{PROG} COMMAND --help` for a command's options.",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("SESSIOND_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log level (default: $SESSIOND_LOG_LEVEL or INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for _name, module in _load_command_modules():
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    # Give commands registered without `help=` a line in the list too.
    listed = {action.dest for action in subparsers._choices_actions}
    for command, sub in subparsers.choices.items():
        if command not in listed:
            first = (sub.description or "").strip().splitlines()
            subparsers._choices_actions.append(
                argparse.Action(option_strings=[], dest=command, help=first[0] if first else "")
            )
    return parser


def available_commands() -> dict[str, str]:
    """Subcommand name -> its one-line help, as `sessiond --help` lists them."""
    parser = build_parser()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def run(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the chosen handler, and return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None) or getattr(args, "func", None)
    if args.command is None or handler is None:
        parser.print_help(sys.stderr)
        return 2
    from infra.logging import setup_logging

    setup_logging(args.log_level, service=args.command)
    try:
        if inspect.iscoroutinefunction(handler):
            result = run_async(handler, args)
        else:
            result = handler(args)
            if inspect.isawaitable(result):
                result = run_async(lambda: result)
    except SessiondError as e:
        return _fail(e.message if hasattr(e, "message") else str(e))
    except KeyboardInterrupt:
        return _fail("interrupted")
    except Exception as e:
        unavailable = _unavailable_store(e)
        if unavailable is None:
            raise
        return _fail(unavailable)
    return 0 if result is None else int(result)


def _unavailable_store(e: BaseException) -> str | None:
    """A one-line message for a database we cannot reach (an operational problem, not a bug);
    the event store's failures are `StoreUnavailable`, a `SessiondError`."""
    if isinstance(e, ConnectionRefusedError | FileNotFoundError) and "PGSQL" in str(e):
        return f"cannot reach PostgreSQL: {e}"
    if isinstance(e, ConnectionRefusedError):
        return f"connection refused: {e}"
    return None


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (`sessiond`)."""
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
