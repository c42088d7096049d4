"""Client adapters benchmark (run: `.venv/bin/python tests/bench/bench_clients.py`).

One stack (embedded Redis and PostgreSQL, one worker, one projector, one gateway) on this
machine. For N sequential writes (ApplyChanges / POST /session/incremental, each answered after
the actor's outcome), the latency p50 / p99 over gRPC (grpcio, blocking), raw REST (httpx) and
the Python client (`sessiond_client`, the same REST plus its idempotency key); then the delay
from a write sent (over gRPC) to its change seen on a gRPC Watch and on the client's SSE watch.

Environment: BENCH_WRITES (500).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import httpx  # noqa: E402
from sessiond_client import SessiondClient  # noqa: E402

from gateway.grpc import sessiond_pb2 as pb  # noqa: E402
from gateway.grpc import sessiond_pb2_grpc as pb_grpc  # noqa: E402
from infra.embedded import start_postgres, start_redis  # noqa: E402
from tests.integration.gwstack import running_stack  # noqa: E402

WRITES = int(os.environ.get("BENCH_WRITES", "500"))


def pct(samples: list[float]) -> str:
    s = sorted(samples)
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    return f"p50 {statistics.median(s) * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms"


def timed(fn) -> list[float]:
    out = []
    for i in range(WRITES):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        redis = start_redis(Path(tmp) / "redis")
        pg = start_postgres(Path(tmp) / "pg", fsync=False)
        try:
            with running_stack(redis.url, pg.url, Path(tmp)) as stack:
                run(stack)
        finally:
            redis.stop()
            pg.stop()


def run(stack) -> None:
    user = "bench"
    token = stack.token(user, ttl_s=3600)
    md = (("authorization", f"Bearer {token}"),)
    headers = {"Authorization": f"Bearer {token}"}
    sids = [str(uuid.uuid4()) for _ in range(3)]
    with (
        grpc.insecure_channel(stack.grpc_target) as ch,
        httpx.Client(base_url=stack.base, headers=headers) as http,
        SessiondClient(stack.base, token) as client,
    ):
        api = pb_grpc.SessionServiceStub(ch)
        for sid in sids:
            api.StartSession(pb.StartSessionRequest(session_id=sid, router_id=sid), metadata=md)

        def over_grpc(i: int) -> None:
            api.ApplyChanges(
                pb.ApplyChangesRequest(session_id=sids[0], changes_json=json.dumps({"i": i})),
                metadata=md,
            )

        def over_rest(i: int) -> None:
            r = http.post("/session/incremental", json={"session_id": sids[1], "changes": {"i": i}})
            assert r.status_code == 200, r.text

        def over_client(i: int) -> None:
            assert client.apply_changes(sids[2], {"i": i})[1] is None

        for name, fn in (("gRPC", over_grpc), ("REST", over_rest), ("client", over_client)):
            fn(-1)  # warm
            print(f"write {name:7s} {WRITES} sequential: {pct(timed(fn))}")

        # write sent -> the change on a Watch (gRPC) and on the client's SSE watch
        for name in ("gRPC Watch", "SSE watch"):
            sid = str(uuid.uuid4())
            api.StartSession(pb.StartSessionRequest(session_id=sid, router_id=sid), metadata=md)
            arrived: dict[int, float] = {}
            done = threading.Event()

            def watch_grpc(sid=sid, arrived=arrived) -> None:
                for c in api.Watch(pb.WatchRequest(session_id=sid), metadata=md, timeout=600):
                    if c.type == "state_update":
                        arrived[json.loads(c.payload_json)["changes"]["i"]] = time.perf_counter()
                        if len(arrived) == WRITES:
                            return

            def watch_sse(sid=sid, arrived=arrived) -> None:
                with SessiondClient(stack.base, token) as w:
                    for c in w.watch(sid):
                        if c.type == "state_update":
                            arrived[c.payload["changes"]["i"]] = time.perf_counter()
                            if len(arrived) == WRITES:
                                return

            target = watch_grpc if name == "gRPC Watch" else watch_sse
            t = threading.Thread(target=lambda target=target, done=done: (target(), done.set()))
            t.start()
            time.sleep(1.0)
            answered = {}
            for i in range(WRITES):
                answered[i] = time.perf_counter()
                api.ApplyChanges(
                    pb.ApplyChangesRequest(session_id=sid, changes_json=json.dumps({"i": i})),
                    metadata=md,
                )
                time.sleep(0.005)
            done.wait(60)
            delays = [arrived[i] - answered[i] for i in range(WRITES) if i in arrived]
            print(f"{name:10s} sent -> change seen ({len(delays)}/{WRITES}): {pct(delays)}")


if __name__ == "__main__":
    main()
