"""`sessiond dev` end to end: embedded servers up, Procfile processes run, everything stops on
SIGTERM (no orphans, even after kill -9), and the next run finds the data again.

Uses its own Procfile (a process that starts a grandchild, and one whose `sessiond` subcommand
does not exist) so it does not depend on the other components being finished.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import asyncpg
import pytest
import redis

from infra.embedded import free_port

UP = "sessiond dev is up"


class DevProcess:
    def __init__(self, tmp: Path, data: Path, procfile: Path, *extra: str) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REDIS_URL", "DATABASE_URL", "REDIS_ADDR", "GATEWAY_PORT")
        }
        env["SESSIOND_DATA_DIR"] = str(data)
        env["SERVER_ADDR"] = f"127.0.0.1:{free_port()}"
        env["GRPC_ADDR"] = f"127.0.0.1:{free_port()}"
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "dev", "--procfile", str(procfile),
             "--no-migrate", *extra],
            cwd=tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        regex = re.compile(pattern)
        for line in self.lines:
            if m := regex.search(line):
                return m
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if m := regex.search(line):
                return m
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines))

    def pid_of(self, what: str) -> int:
        return int(self.wait_for(rf"{what} .*pid (\d+)").group(1))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def output(self, timeout: float = 10.0) -> str:
        """Everything printed, once the process has exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return "\n".join(self.lines)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _all_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.fixture
def procfile(tmp_path: Path) -> Path:
    child = tmp_path / "child.py"
    child.write_text(
        textwrap.dedent(
            """
            import os, subprocess, sys, time
            grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
            with open(sys.argv[1], "w") as f:
                f.write(f"{os.getpid()} {grandchild.pid}")
            print("sleeper ready", flush=True)
            time.sleep(300)
            """
        )
    )
    path = tmp_path / "Procfile"
    path.write_text(
        f"sleeper: python {child} {tmp_path / 'pids.txt'}\nghost: sessiond no-such-command-yet\n"
    )
    return path


def _read_pids(path: Path, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return [int(x) for x in path.read_text().split()]
        time.sleep(0.05)
    raise AssertionError(f"{path} never written")


async def _pg(url: str, sql: str):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@pytest.mark.anyio
async def test_dev_runs_everything_stops_cleanly_and_reuses_its_data(
    tmp_path: Path, server_data_dir: Path, procfile: Path
) -> None:
    dev = DevProcess(tmp_path, server_data_dir, procfile)
    try:
        dev.wait_for(UP)
        assert dev.wait_for(r"skipping ghost: `sessiond no-such-command-yet` does not exist")
        redis_pid = dev.pid_of("embedded valkey-server")
        pg_pid = dev.pid_of("embedded postgres")
        # what the URL names, said up front (a cluster: "cluster: N masters (...)")
        redis_url = dev.wait_for(r"redis +((?:redis|unix)://\S+) \(single node \(valkey ").group(1)
        pg_url = dev.wait_for(r"postgres +(postgresql://\S+)").group(1)
        dev.wait_for(r"gateway +http://127\.0\.0\.1:\d+")
        dev.wait_for(r"ws +ws://127\.0\.0\.1:\d+/ws")
        dev.wait_for(r"admin +http://127\.0\.0\.1:\d+/admin")
        sleeper_pid, grandchild_pid = _read_pids(tmp_path / "pids.txt")
        dev.wait_for(r"sleeper +\| sleeper ready")  # child output is relayed with its name

        # other terminals find the servers through the data dir
        published = (server_data_dir / "dev.json").read_text()
        assert redis_url in published and pg_url in published

        client = redis.Redis.from_url(redis_url)
        assert client.ping()
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.set("kept", "across-restarts")
        client.close()
        await _pg(pg_url, "CREATE TABLE kept AS SELECT 42 AS answer")
    finally:
        code = dev.stop(signal.SIGTERM)
    assert code == 0, "\n".join(dev.lines)
    assert not (server_data_dir / "dev.json").exists()
    pids = [redis_pid, pg_pid, sleeper_pid, grandchild_pid]
    assert _all_gone(pids) == [], f"orphans left: {pids}"

    (tmp_path / "pids.txt").unlink()
    again = DevProcess(tmp_path, server_data_dir, procfile)
    try:
        again.wait_for(UP)
        redis_url = again.wait_for(r"redis +((?:redis|unix)://\S+)").group(1)
        pg_url = again.wait_for(r"postgres +(postgresql://\S+)").group(1)
        client = redis.Redis.from_url(redis_url)
        assert client.get("kept") == b"across-restarts"
        client.close()
        assert await _pg(pg_url, "SELECT answer FROM kept") == 42
        pids = [again.pid_of("embedded valkey-server"), again.pid_of("embedded postgres")]
        pids += _read_pids(tmp_path / "pids.txt")  # the sleeper and its own child
    finally:
        # a crashed `sessiond dev` (kill -9) still takes its servers and processes with it
        again.stop(signal.SIGKILL)
    assert _all_gone(pids) == [], f"orphans left after kill -9: {pids}"


def test_dev_with_only_an_unknown_process_fails_with_one_line(
    tmp_path: Path, server_data_dir: Path, procfile: Path
) -> None:
    dev = DevProcess(tmp_path, server_data_dir, procfile, "--only", "nope")
    code = dev.proc.wait(30)
    output = dev.output()
    assert code == 2
    assert "--only: no process nope" in output
    assert "Traceback" not in output


def _dev_info(data: Path) -> dict:
    import json

    return json.loads((data / "dev.json").read_text())


def _wait_pid_change(data: Path, key: str, name: str, old: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with_pid = _dev_info(data)[key].get(name)
        if with_pid and with_pid != old and _alive(with_pid):
            return with_pid
        time.sleep(0.1)
    raise AssertionError(f"{name} was not restarted: {_dev_info(data)}")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.anyio
async def test_dev_restarts_what_dies_and_reports_a_crash_loop(
    tmp_path: Path, server_data_dir: Path, procfile: Path
) -> None:
    procfile.write_text(procfile.read_text() + "crasher: python -c 'import sys; sys.exit(3)'\n")
    dev = DevProcess(tmp_path, server_data_dir, procfile)
    try:
        dev.wait_for(UP)
        sleeper = _read_pids(tmp_path / "pids.txt")[0]
        (tmp_path / "pids.txt").unlink()
        os.kill(sleeper, signal.SIGKILL)
        dev.wait_for(rf"sleeper \(pid {sleeper}\) killed by SIGKILL after [\d.]+ s; restarting in")
        assert _read_pids(tmp_path / "pids.txt")[0] != sleeper  # a new sleeper runs
        assert _wait_pid_change(server_data_dir, "processes", "sleeper", sleeper)

        # a process that keeps failing: one line says so, and restarts go on
        dev.wait_for(r"crasher \(pid \d+\) exited with code 3")
        dev.wait_for(r"crasher is crash-looping: 5 exits in 60 s \(last: exited with code 3\)")

        for kind in ("valkey-server", "postgres"):
            old = _dev_info(server_data_dir)["servers"][kind]
            os.kill(old, signal.SIGKILL)
            dev.wait_for(rf"embedded {kind} \(pid {old}\) killed by SIGKILL; restarting it in")
            dev.wait_for(rf"embedded {kind} restarted \(pid \d+\)")
            new = _wait_pid_change(server_data_dir, "servers", kind, old)
            assert not _zombie(old), f"{kind} {old} left a zombie"
            assert _alive(new)
        info = _dev_info(server_data_dir)
        client = redis.Redis.from_url(info["redis_url"])
        assert client.ping()
        client.close()
        assert await _pg(info["database_url"], "SELECT 1") == 1
    finally:
        code = dev.stop(signal.SIGTERM)
    assert code == 0, "\n".join(dev.lines)
    assert len([ln for ln in dev.lines if "crash-looping" in ln]) == 1
