"""The chaos run: `python -m tests.chaos.run` (what `make chaos` runs; `--help` for the knobs).

1. `sessiond dev` starts two gateways, two workers, two projectors, the reactor and the
   simulators on its embedded Valkey (appendfsync always) and PostgreSQL (`cluster.DevCluster`).
2. The load: `--sessions` sessions with two WebSocket devices each (split between the gateways),
   `--rate` state updates/s over them, REST writes and reads on `--rest-sessions` sessions, a few
   simulators; every acknowledged write is recorded with its version (`clients`).
3. `--faults` faults drawn from the printed seed (`faults.plan`), one after the other: each is
   injected, then the run waits until the system is back (every process and server running,
   both gateways ready, every partition leased by a worker and a projector, a write through
   each gateway applied) and records that recovery time per fault kind.
4. Optionally the reconnect storm (`storm`), then the load stops, the clients catch up, and the
   invariants are checked (`invariants`). The report prints the seed, the faults per kind,
   recovery p50 / p99 per kind, the storm's figures and each invariant; a violated one prints the
   seed and the first violated invariant, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import sys
import time
import uuid
from collections import Counter, defaultdict

import httpx

from tests.chaos.clients import Device, Ledger, RestWriter
from tests.chaos.cluster import DevCluster
from tests.chaos.faults import Fault, inject, plan, resume
from tests.chaos.invariants import Result, check_all, percentile, read_logs, visible_versions

__all__ = ["main", "run"]

GRACE_S = 3.0  # after a recovery, answers of the outage may still arrive


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.chaos.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seed", type=int, default=None, help="fault schedule seed (default: random)")
    p.add_argument("--faults", type=int, default=100)
    p.add_argument("--sessions", type=int, default=500, help="sessions, two WS devices each")
    p.add_argument("--rate", type=float, default=300.0, help="WS state updates per second")
    p.add_argument("--rest-sessions", type=int, default=50)
    p.add_argument("--rest-rate", type=float, default=20.0, help="REST writes per second")
    p.add_argument("--read-rate", type=float, default=20.0, help="REST reads per second")
    p.add_argument("--simulators", type=int, default=3)
    p.add_argument("--storm", type=int, default=10000, help="storm connections (0: no storm)")
    p.add_argument("--storm-procs", type=int, default=2)
    p.add_argument("--appendfsync", choices=("always", "everysec"), default="always")
    p.add_argument("--max-pause", type=float, default=5.0, help="longest SIGSTOP, seconds")
    p.add_argument(
        "--keep", action="store_true", help="keep the servers' data and dev.log after the run"
    )
    p.add_argument("--bound", type=float, default=30.0, help="recovery bound per fault, seconds")
    p.add_argument(
        "--strict",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fail on issue 14's invariants too (the default since it is built; --no-strict"
        " only reports them)",
    )
    return p


class Run:
    def __init__(self, args: argparse.Namespace, seed: int) -> None:
        self.args = args
        self.seed = seed
        self.cluster = DevCluster(appendfsync=args.appendfsync)
        self.ledger = Ledger()
        self.devices: list[Device] = []
        self.rest: list[RestWriter] = []
        self.readers: list[RestWriter] = []
        self.canary: list[RestWriter] = []
        self.windows: list[tuple[float, float, str]] = []
        self.recoveries: dict[str, list[float]] = defaultdict(list)
        self.valkey_kills: list[float] = []
        self.storm: dict | None = None
        self.storm_window = (0.0, -1.0)
        self._counter = itertools.count(1)

    # ------------------------------------------------------------------ set-up

    async def setup(self, http: httpx.AsyncClient) -> list[asyncio.Task]:
        tokens = self.cluster.tokens()
        ws_bases = [b.replace("http://", "ws://") + "/ws" for b in self.cluster.bases]
        stop = self.stop_clients = asyncio.Event()
        firsts, seconds = [], []
        for i in range(self.args.sessions):
            sid, token = str(uuid.uuid4()), tokens.issue(f"chaos-u{i}", ttl_s=6 * 3600)
            firsts.append(Device(self.ledger, ws_bases, token, sid, "phone", home=i % 2))
            seconds.append(Device(self.ledger, ws_bases, token, sid, "tablet", home=(i + 1) % 2))
            self.readers.append(RestWriter(self.ledger, self.cluster.bases, token, sid))
        self.devices = firsts + seconds
        tasks = []
        for group in (firsts, seconds):  # the first device creates the session
            for start in range(0, len(group), 50):
                batch = group[start : start + 50]
                tasks += [asyncio.create_task(d.run(stop)) for d in batch]
                await asyncio.wait_for(asyncio.gather(*(d.connected.wait() for d in batch)), 120)
        for i in range(self.args.rest_sessions):
            w = RestWriter(
                self.ledger,
                self.cluster.bases,
                tokens.issue(f"chaos-r{i}", ttl_s=6 * 3600),
                str(uuid.uuid4()),
            )
            if not await w.create(http):
                raise RuntimeError("could not create a REST session")
            self.rest.append(w)
        for i in range(2):
            c = RestWriter(
                Ledger(),
                [self.cluster.bases[i]] * 2,
                tokens.issue(f"chaos-canary{i}", ttl_s=6 * 3600),
                str(uuid.uuid4()),
            )
            if not await c.create(http):
                raise RuntimeError("could not create the canary session")
            self.canary.append(c)
        for reader in self.readers[: self.args.simulators]:
            r = await http.post(
                f"{self.cluster.bases[0]}/api/sessions/{reader.session_id}/simulator",
                headers=reader.headers,
                json={"initial_symbols": ["AAPL"], "initial_cash": 1000},
            )
            self.ledger.answer(r.status_code, "POST simulator", r.text)
        return tasks

    # ------------------------------------------------------------------ load

    async def ws_load(self, stop: asyncio.Event) -> None:
        inflight: set[asyncio.Task] = set()
        interval = 1.0 / self.args.rate
        next_at = time.monotonic()
        while not stop.is_set():
            n = next(self._counter)
            device = random.choice(self.devices)
            if len(inflight) < 2000:
                t = asyncio.create_task(device.write(f"w{n}", n))
                inflight.add(t)
                t.add_done_callback(inflight.discard)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*inflight, return_exceptions=True)

    async def rest_load(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        inflight: set[asyncio.Task] = set()
        total = self.args.rest_rate + self.args.read_rate
        interval = 1.0 / total
        next_at = time.monotonic()
        while not stop.is_set():
            if random.random() < self.args.rest_rate / total:
                n = next(self._counter)
                coro = random.choice(self.rest).write(http, f"r{n}", n)
            else:
                coro = random.choice(self.readers + self.rest).read(http)
            if len(inflight) < 200:
                t = asyncio.create_task(coro)
                inflight.add(t)
                t.add_done_callback(inflight.discard)
            else:
                coro.close()
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*inflight, return_exceptions=True)

    # ------------------------------------------------------------------ faults

    async def recovered(self, http: httpx.AsyncClient) -> bool:
        if not await asyncio.to_thread(self.cluster.healthy):
            return False
        for c in self.canary:
            n = next(self._counter)
            try:
                r = await http.post(
                    f"{c.bases[0]}/session/incremental",
                    headers=c.headers,
                    json={"session_id": c.session_id, "changes": {"c": n}},
                )
            except httpx.HTTPError:
                return False
            if r.status_code != 200:
                return False
        return True

    async def one_fault(self, http: httpx.AsyncClient, fault: Fault) -> None:
        started = time.monotonic()
        pid = inject(self.cluster, fault)
        if fault.kind == "kill:valkey-server":
            self.valkey_kills.append(started)
        since = started
        if fault.kind.startswith("stop:"):
            await asyncio.sleep(fault.pause_s)
            resume(pid)
            since = time.monotonic()
        deadline = since + max(self.args.bound * 3, 60.0)
        while not await self.recovered(http):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"seed {self.seed}: {fault} (pid {pid}) never recovered;"
                    f" log:\n{self.cluster.log_tail()}"
                )
            await asyncio.sleep(0.1)
        took = time.monotonic() - since
        self.recoveries[fault.kind].append(took)
        self.windows.append((started, time.monotonic() + GRACE_S, fault.kind))
        print(f"  {fault} (pid {pid}): back in {took:.2f} s", flush=True)

    # ------------------------------------------------------------------ the end

    async def settle(self, timeout: float = 120.0) -> tuple[dict, dict]:
        """Wait until the log is quiet (commands the gateways answered OUTCOME_UNKNOWN for may
        still be applied after the load stops: its last versions unchanged over two reads a
        second apart) and every device has every visible version of its session, read GET
        until it shows the log's last version, and return the log as read after the GETs with
        the reads."""
        info = self.cluster.info()
        sids = [r.session_id for r in self.readers + self.rest]

        async def read() -> dict:
            return await read_logs(info["redis_url"], self.cluster.partitions, sids)

        def tails(logs: dict) -> dict:
            return {s: (lg[-1][0] if lg else None) for s, lg in logs.items()}

        deadline = time.monotonic() + timeout
        before = None
        while True:
            logs = await read()
            last = {s: (visible_versions(s, lg) or [None])[-1] for s, lg in logs.items()}
            behind = [d for d in self.devices if d.last != last[d.session_id]]
            quiet = before is not None and tails(before) == tails(logs)
            if (not behind and quiet) or time.monotonic() > deadline:
                break
            before = logs
            await asyncio.sleep(1.0)
        reads: dict[str, dict | None] = {}
        async with httpx.AsyncClient(timeout=15) as http:
            for reader in self.readers:
                want = logs[reader.session_id][-1][0] if logs[reader.session_id] else 0
                got = None
                while time.monotonic() < deadline + 30:
                    r = await http.get(
                        f"{self.cluster.bases[0]}/session/{reader.session_id}",
                        headers=reader.headers,
                    )
                    if r.status_code == 200:
                        got = r.json()
                        if got.get("session_version", 0) >= want:
                            break
                    await asyncio.sleep(0.5)
                reads[reader.session_id] = got
        for d in self.devices:  # log quiet, devices caught up: freeze what they show, then
            d.freeze()  # read the log (reading 1,000 sessions takes seconds)
        return await read(), reads

    async def execute(self) -> list[Result]:
        a = self.args
        faults = plan(self.seed, a.faults, max_pause_s=a.max_pause)
        print(
            f"chaos: seed {self.seed}; {len(faults)} faults; {a.sessions} sessions x 2 devices"
            f" at {a.rate:g} updates/s; REST {a.rest_rate:g} writes/s + {a.read_rate:g} reads/s"
            f" on {a.rest_sessions} sessions; appendfsync {a.appendfsync}",
            flush=True,
        )
        print("  schedule: " + ", ".join(str(f) for f in faults), flush=True)
        started = time.monotonic()
        await asyncio.to_thread(self.cluster.start)
        print(
            f"  cluster up in {time.monotonic() - started:.1f} s ({self.cluster.root})", flush=True
        )
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
        async with httpx.AsyncClient(timeout=20, limits=limits) as http:
            tasks = await self.setup(http)
            print(f"  {len(self.devices)} devices connected", flush=True)
            stop_load = asyncio.Event()
            load = [
                asyncio.create_task(self.ws_load(stop_load)),
                asyncio.create_task(self.rest_load(http, stop_load)),
            ]
            t0 = time.monotonic()
            acks0 = len(self.ledger.acks)
            try:
                await asyncio.sleep(2.0)
                for fault in faults:
                    await self.one_fault(http, fault)
                    await asyncio.sleep(fault.gap_s)
                if a.storm:
                    from tests.chaos.storm import run_storm

                    began = time.monotonic()
                    self.storm = await run_storm(self.cluster, a.storm, a.storm_procs)
                    self.storm_window = (began, time.monotonic())
            finally:
                stop_load.set()
                await asyncio.gather(*load, return_exceptions=True)
            self.rate = (len(self.ledger.acks) - acks0) / max(1e-9, time.monotonic() - t0)
            logs, reads = await self.settle()
            self.stop_clients.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        verify = await asyncio.to_thread(self.cluster.verify_projections)
        return check_all(
            ledger=self.ledger,
            devices=self.devices,
            logs=logs,
            reads=reads,
            windows=self.windows,
            recoveries=self.recoveries,
            bound_s=a.bound,
            verify=verify,
            appendfsync=a.appendfsync,
            valkey_kills=self.valkey_kills,
            storm=self.storm_window,
        )

    def report(self, results: list[Result]) -> int:
        a = self.args
        kinds = Counter({k: len(v) for k, v in self.recoveries.items()})
        print(
            f"\n== chaos report (seed {self.seed}; rerun: python -m tests.chaos.run --seed"
            f" {self.seed} --faults {a.faults} --sessions {a.sessions} --rate {a.rate:g}"
            f" --storm {a.storm})"
        )
        per_kind = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        print(f"faults: {sum(kinds.values())} ({per_kind})")
        print(
            f"load: {len(self.ledger.acks)} acknowledged writes, {self.rate:.0f}/s acknowledged"
            f" during the faults; {sum(self.ledger.statuses.values())} REST answers"
        )
        print("recovery (s)          p50     p99     max")
        for kind in sorted(self.recoveries):
            v = self.recoveries[kind]
            print(f"  {kind:<20} {percentile(v, 50):6.2f}  {percentile(v, 99):6.2f}  {max(v):6.2f}")
        if self.storm:
            s = self.storm
            print(
                f"storm: {s['connections']} connections dropped at once over both gateways;"
                f" all resumed in {s['resumed_s']:.1f} s; gaps {s['gaps']}, duplicates"
                f" {s['duplicates']}, not resumed {s['missing']}, diverged {s['diverged']}"
                f"{'; CUT BY ITS DEADLINE' if s['timed_out'] else ''}"
            )
            print(
                f"storm load: {s['reconnect_attempts']} connection attempts; CPU while resuming"
                f" (cores): {s['cpu']}; client loop lag max {s['loop_lag_max_s']:.2f} s"
            )
        failed = None
        for r in results:
            state = "ok" if r.ok else ("VIOLATED" if not r.pending else f"VIOLATED ({r.pending})")
            print(f"[{state}] {r.name}: {r.detail}")
            if not r.ok and failed is None and (not r.pending or a.strict):
                failed = r
        s = self.storm
        if s and (s["gaps"] or s["duplicates"] or s["missing"] or s["diverged"] or s["timed_out"]):
            failed = failed or Result(
                "storm: 0 gaps, 0 duplicates, all resumed and converged", False, str(s)
            )
        if failed is not None:
            print(f"\nFAILED seed {self.seed}: first violated invariant: {failed.name}:")
            print(f"  {failed.detail}")
            return 1
        print(f"\nPASSED seed {self.seed}")
        return 0


async def run(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(1, 1 << 31)
    r = Run(args, seed)
    try:
        results = await r.execute()
    except BaseException:
        print(f"\nFAILED seed {seed}: the run broke off (see above)", flush=True)
        raise
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(r.cluster.close, args.keep)
    return r.report(results)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
