"""`local` provisioner: places a simulator on a live `sessiond simulators` process via Redis.

Placement picks the least loaded live host (see `infra.exchange.control` for the keys), sends it
a start request on its control stream and waits for its acknowledgement. No live host, or a host
that does not answer in time, is a transient failure (retried, and counted by the breaker).
"""

from __future__ import annotations

import time
import uuid

import msgspec

from infra.exchange.control import (
    HOSTS_KEY,
    LOAD_KEY,
    ControlReply,
    ControlRequest,
    ack_key,
    control_stream,
    placement_key,
)
from infra.exchange.host import local_endpoint
from infra.provisioners.base import (
    ProvisionerStatus,
    ProvisionerUnavailable,
    ProvisionFailed,
    ProvisionState,
    SimulatorSpec,
)

__all__ = ["LocalProvisioner"]

_encoder = msgspec.msgpack.Encoder()
_reply_decoder = msgspec.msgpack.Decoder(ControlReply)
PLACEMENT_TTL_S = 30 * 24 * 3600


def _s(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class LocalProvisioner:
    name = "local"

    def __init__(self, redis, *, ack_timeout_s: float = 5.0) -> None:
        self.redis = redis
        self.ack_timeout_s = ack_timeout_s

    async def live_hosts(self) -> list[str]:
        now_ms = int(time.time() * 1000)
        return [_s(h) for h in await self.redis.zrangebyscore(HOSTS_KEY, now_ms, "+inf")]

    async def _request(self, host: str, req: ControlRequest) -> ControlReply:
        await self.redis.xadd(
            control_stream(host), {"r": _encoder.encode(req)}, maxlen=10_000, approximate=True
        )
        got = await self.redis.blpop(
            [ack_key(req.request_id)], timeout=max(1, round(self.ack_timeout_s))
        )
        if got is None:
            raise ProvisionerUnavailable(
                f"simulators host {host} did not answer within {self.ack_timeout_s:.0f}s"
            )
        return _reply_decoder.decode(got[1])

    async def provision(self, spec: SimulatorSpec) -> str:
        hosts = await self.live_hosts()
        if not hosts:
            raise ProvisionerUnavailable(
                "no simulators process is running (start one with `sessiond simulators`)"
            )
        placed = _s(await self.redis.get(placement_key(spec.simulator_id)))
        if placed not in hosts:
            loads = await self.redis.hmget(LOAD_KEY, hosts)
            placed = min(zip(hosts, loads, strict=True), key=lambda hl: int(hl[1] or 0))[0]
            await self.redis.set(placement_key(spec.simulator_id), placed, ex=PLACEMENT_TTL_S)
        reply = await self._request(
            placed,
            ControlRequest(
                op="start", request_id=uuid.uuid4().hex, simulator_id=spec.simulator_id, spec=spec
            ),
        )
        if not reply.ok:
            raise ProvisionFailed(reply.reason or "the simulators host refused the simulator")
        return reply.endpoint

    async def deprovision(self, simulator_id: str) -> None:
        placed = _s(await self.redis.get(placement_key(simulator_id)))
        if placed is None:
            return
        if placed in await self.live_hosts():
            reply = await self._request(
                placed,
                ControlRequest(op="stop", request_id=uuid.uuid4().hex, simulator_id=simulator_id),
            )
            if not reply.ok:
                raise ProvisionFailed(reply.reason)
        await self.redis.delete(placement_key(simulator_id))

    async def status(self, simulator_id: str) -> ProvisionerStatus:
        placed = _s(await self.redis.get(placement_key(simulator_id)))
        if placed is None:
            return ProvisionerStatus(state=ProvisionState.ABSENT)
        if placed not in await self.live_hosts():
            return ProvisionerStatus(
                state=ProvisionState.FAILED, reason=f"simulators host {placed} is gone"
            )
        return ProvisionerStatus(
            state=ProvisionState.READY, endpoint=local_endpoint(placed, simulator_id)
        )

    async def close(self) -> None:
        return None
