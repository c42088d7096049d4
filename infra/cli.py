"""The `sessiond` command line: one entry point, subcommands discovered in `infra.commands`.

Every module of the `infra.commands` package that defines ``register(subparsers)`` contributes
its subcommands; ``sessiond --help`` lists them with their one-line help. A command module that
fails to import or register is a bug: it fails the whole CLI, loudly. Handlers are plain or
``async`` functions of the parsed arguments returning an exit code. Expected failures
(`SessiondError`, an unreachable store, Ctrl-C) end with one line on stderr and exit code 2;
only real bugs show a traceback.

The configuration is loaded here, once, before the handler runs (`infra.config.load_settings`,
with the command line's options over the environment) and handed to it as ``args.settings``;
handlers pass each component its section. An invalid configuration ends the command with one
line naming every bad variable.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from events.errors import SessiondError

__all__ = [
    "Progress",
    "add_knob_option",
    "add_output_option",
    "add_store_options",
    "available_commands",
    "build_parser",
    "emit_json",
    "main",
    "package_version",
    "run_async",
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


def add_knob_option(
    parser: argparse.ArgumentParser, flag: str, knob: str, *, help: str, metavar: str = ""
) -> None:
    """An option that sets the configuration knob at `knob` (``"partitions"``,
    ``"runtime.batch_size"``, see `infra.config.KNOBS`) for this run. It wins over the
    environment and is parsed and checked as the variable is (units included), by the one
    loader, so `args.settings` holds it."""
    dest = "knob_" + knob.replace(".", "_")
    parser.add_argument(
        flag, dest=dest, default=None, metavar=metavar or knob.rpartition(".")[2].upper(), help=help
    )
    knobs = dict(parser.get_default("knob_options") or {})
    knobs[dest] = (knob, flag)
    parser.set_defaults(knob_options=knobs)


def add_store_options(
    parser: argparse.ArgumentParser,
    *,
    redis: bool = True,
    database: bool = False,
    metrics: bool = False,
) -> None:
    """The options of every process that talks to the stores, with the same defaults."""
    if redis:
        add_knob_option(
            parser,
            "--partitions",
            "partitions",
            help="number of partitions P of the deployment (default: $SESSIOND_PARTITIONS or "
            "16); every process must agree on it",
        )
        add_knob_option(
            parser,
            "--redis-url",
            "redis_url",
            metavar="URL",
            help="Redis URL (default: $REDIS_URL)",
        )
    if database:
        add_knob_option(
            parser,
            "--database-url",
            "database_url",
            metavar="DSN",
            help="PostgreSQL DSN (default: $DATABASE_URL)",
        )
    if metrics:
        add_knob_option(
            parser,
            "--metrics-addr",
            "metrics_addr",
            metavar="[HOST:]PORT",
            help="serve /healthz and /metrics there; a bare port is loopback (default: "
            "$SESSIOND_METRICS_ADDR, else off)",
        )


def emit_json(doc: Any, out: Any = None) -> None:
    """One JSON line; a reader that went away (`| head`) ends the command quietly."""
    import msgspec

    out = out or sys.stdout
    try:
        out.write(msgspec.json.encode(doc).decode() + "\n")
        out.flush()
    except BrokenPipeError:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None


def add_output_option(parser: argparse.ArgumentParser, default: str = "table") -> None:
    """`--output json|table` (and `--json`, its older spelling) on a read command: JSON lines
    for scripts, an aligned table (or readable text) for people. Read it as `args.output`."""
    parser.add_argument(
        "--output",
        "-o",
        choices=("json", "table"),
        default=default,
        help=f"json: one JSON object per line; table: readable (default: {default})",
    )
    parser.add_argument(
        "--json", dest="output", action="store_const", const="json", help="same as --output json"
    )


class Progress:
    """A one-line progress report on stderr (`label [####....] done/total unit  rate/s`),
    redrawn at most five times a second, so a long `export`, `verify` or `trim` shows it is
    moving without touching what it prints on stdout. `out=None` (`--quiet`) prints nothing."""

    def __init__(self, label: str, total: int, unit: str, out: Any = sys.stderr) -> None:
        import time

        self._clock = time.monotonic
        self.label, self.total, self.unit, self.out = label, max(total, 0), unit, out
        self.done = 0
        self.started = self._clock()
        self._drawn = 0.0

    def advance(self, n: int = 1, *, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.done += n
        self._draw(final=False)

    def finish(self) -> None:
        self._draw(final=True)

    def _draw(self, final: bool) -> None:
        if self.out is None:
            return
        now = self._clock()
        if not final and now - self._drawn < 0.2:
            return
        self._drawn = now
        rate = self.done / max(now - self.started, 1e-9)
        width = 24
        filled = width if not self.total else int(width * min(self.done, self.total) / self.total)
        of = f"/{self.total:,}" if self.total else ""
        self.out.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done:,}{of}"
            f" {self.unit}  {rate:,.0f}/s" + ("\n" if final else "")
        )
        self.out.flush()


def package_version() -> str:
    """The installed sessiond's version (its package metadata: pyproject.toml's `version`)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sessiond")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


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
    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    parser.add_argument(
        "--log-level",
        default=None,
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


def _knob_options(args: argparse.Namespace) -> dict[str, tuple[str, str]]:
    """Knob path -> (flag, text) of every configuration option given (`add_knob_option`)."""
    given = {
        knob: (flag, str(getattr(args, dest)))
        for dest, (knob, flag) in (getattr(args, "knob_options", None) or {}).items()
        if getattr(args, dest, None) is not None
    }
    if args.log_level is not None:
        given["log_level"] = ("--log-level", args.log_level)
    return given


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
    from infra.config import ConfigError, load_settings
    from infra.logging import setup_logging
    from infra.tracing import setup_tracing, shutdown_tracing

    try:
        args.settings = load_settings(
            discover=getattr(args, "discover", True), options=_knob_options(args)
        )
    except ConfigError as e:
        return _fail(e.message)
    setup_logging(args.settings.log_level, service=args.command, fmt=args.settings.log_format)
    setup_tracing(args.command, otlp_endpoint=args.settings.otlp_endpoint)
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
    finally:
        shutdown_tracing()  # the spans still batched go out before the process ends
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
