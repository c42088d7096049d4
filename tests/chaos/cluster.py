"""The system under chaos: `sessiond dev` (the product's own supervisor) running two gateways, two
workers, two projectors, the reactor and the simulators on its embedded Valkey and PostgreSQL.

The harness never restarts anything itself: what it kills, `sessiond dev` must bring back. It
finds the current pid of every process and server in `dev.json` (rewritten at each restart).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from infra.embedded import free_port

__all__ = ["PROCESSES", "SERVERS", "DevCluster"]

ROOT = Path(__file__).resolve().parents[2]
#: Procfile names, by kind: two of each scaled kind.
PROCESSES = {
    "gateway": ("gateway-a", "gateway-b"),
    "worker": ("worker-a", "worker-b"),
    "projector": ("projector-a", "projector-b"),
    "reactor": ("reactor",),
    "simulators": ("simulators",),
}
SERVERS = ("valkey-server", "postgres")


class DevCluster:
    """`sessiond dev` on a Procfile of its own, in a fresh data directory (removed on close)."""

    def __init__(self, *, appendfsync: str = "always", partitions: int = 8) -> None:
        self.partitions = partitions
        self.root = Path(tempfile.mkdtemp(prefix=f"sdchaos-{os.getpid()}-"))
        self.root.chmod(0o755)  # the embedded PostgreSQL runs as its own user under root
        self.data = self.root / "data"
        self.ports = {"gateway-a": free_port(), "gateway-b": free_port()}
        grpc_ports = {g: free_port() for g in PROCESSES["gateway"]}
        self.bases = [f"http://127.0.0.1:{self.ports[g]}" for g in PROCESSES["gateway"]]
        # each gateway its own gRPC port (never the shared default 50051); `env` execs the
        # gateway, so the pid sessiond dev records is still the gateway's
        lines = [
            f"{g}: env GRPC_ADDR=127.0.0.1:{grpc_ports[g]} sessiond gateway"
            f" --port {self.ports[g]} --drain-timeout 1"
            for g in PROCESSES["gateway"]
        ]
        lines += [f"{w}: sessiond worker --id {w}" for w in PROCESSES["worker"]]
        lines += [f"{p}: sessiond projector --no-migrate" for p in PROCESSES["projector"]]
        lines += ["reactor: sessiond reactor", "simulators: sessiond simulators"]
        self.procfile = self.root / "Procfile"
        self.procfile.write_text("\n".join(lines) + "\n")
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REDIS_URL", "DATABASE_URL", "REDIS_ADDR", "GATEWAY_PORT")
        }
        self.env.update(
            SESSIOND_DATA_DIR=str(self.data),
            SERVER_ADDR=f"127.0.0.1:{self.ports['gateway-a']}",
            REDIS_APPENDFSYNC=appendfsync,
            SESSIOND_PARTITIONS=str(partitions),
            LEASE_TTL_MS="3000",
            SESSIOND_ENV="test",
            SESSIOND_LOG_FORMAT="text",
            GATEWAY_RATE_PER_S="1000",
            GATEWAY_RATE_BURST="1000",
            GATEWAY_REST_RATE_PER_S="1000",
            GATEWAY_REST_RATE_BURST="1000",
            GATEWAY_MAX_CONNECTIONS_PER_USER="50",
            GATEWAY_MAX_CONNECTIONS_PER_SESSION="50",
            GATEWAY_COMMAND_TIMEOUT="5",
            PYTHONUNBUFFERED="1",
        )
        self.env.pop("SESSIOND_ORIGINS", None)
        self.log_path = self.root / "dev.log"
        self.proc: subprocess.Popen | None = None

    # ------------------------------------------------------------------ life

    def start(self, timeout: float = 120.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "dev", "--procfile", str(self.procfile)],
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
        )
        self.wait_healthy(timeout)

    def close(self, keep: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if keep:  # a post-mortem: the servers' data and dev.log stay
            print(f"  kept {self.root} (data/, dev.log)", flush=True)
            return
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)

    def tokens(self):
        from gateway.auth import TokenService
        from infra.config import load_settings

        return TokenService(load_settings(self.env).gateway)

    # ------------------------------------------------------------------ what runs

    def info(self) -> dict:
        for _ in range(50):
            with contextlib.suppress(OSError, ValueError):
                return json.loads((self.data / "dev.json").read_text())
            time.sleep(0.05)
        raise RuntimeError(f"no dev.json; log:\n{self.log_tail()}")

    def pid(self, name: str) -> int | None:
        info = self.info()
        if name in SERVERS:
            return info.get("servers", {}).get(name)
        return info.get("processes", {}).get(name)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def dev_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------------ health

    def all_running(self) -> bool:
        try:
            info = json.loads((self.data / "dev.json").read_text())
        except (OSError, ValueError):
            return False  # not up yet
        names = [n for kind in PROCESSES.values() for n in kind]
        procs, servers = info.get("processes", {}), info.get("servers", {})
        return all(_alive(procs.get(n)) for n in names) and all(
            _alive(servers.get(s)) for s in SERVERS
        )

    def healthy(self) -> bool:
        """Every process and server runs, both gateways ready, every partition has a worker
        and a projector."""
        if not self.all_running():
            return False
        try:
            for base in self.bases:
                if httpx.get(f"{base}/ready", timeout=2).status_code != 200:
                    return False
            checks = httpx.get(f"{self.bases[0]}/health", timeout=2).json()["checks"]
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        return checks["workers"]["status"] == "ok" and checks["projector"]["status"] == "ok"

    def wait_healthy(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not self.dev_alive():
                raise RuntimeError(f"sessiond dev exited; log:\n{self.log_tail()}")
            if self.healthy():
                return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError(f"not healthy after {timeout}s; log:\n{self.log_tail()}")

    def verify_projections(self, timeout: float = 120.0) -> tuple[bool, str]:
        """`sessiond projections verify`, again until it passes or `timeout`: the system is
        live (simulators write on), so a projector a few events behind differs for a moment;
        a real divergence stays. The result names the attempts and the verdict's JSON line."""
        info = self.info()
        env = {**self.env, "REDIS_URL": info["redis_url"], "DATABASE_URL": info["database_url"]}
        deadline = time.monotonic() + timeout
        for attempt in itertools.count(1):
            done = subprocess.run(
                [sys.executable, "-m", "infra.cli", "projections", "verify"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            verdict = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
            detail = f"attempt {attempt}: " + (verdict[-1] if verdict else done.stderr[-1500:])
            if done.returncode == 0 or time.monotonic() > deadline:
                return done.returncode == 0, detail
            time.sleep(5.0)
        raise AssertionError("unreachable")


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
