"""`local` provisioner: places a simulator on a live `sessiond simulators` process.

They meet in the event store (`SimulatorHosts`): placement picks the least loaded live host,
sends it a start request on its control stream and waits for its acknowledgement. No live host,
or a host that does not answer in time, is a transient failure (retried, and counted by the
breaker).
"""

from __future__ import annotations

import uuid

import msgspec

from infra.exchange.control import ControlReply, ControlRequest
from infra.exchange.host import local_endpoint
from infra.provisioners.base import (
    ProvisionerStatus,
    ProvisionerUnavailable,
    ProvisionFailed,
    ProvisionState,
    SimulatorSpec,
)
from infra.store import SimulatorHosts

__all__ = ["LocalProvisioner"]

_encoder = msgspec.msgpack.Encoder()
_reply_decoder = msgspec.msgpack.Decoder(ControlReply)
PLACEMENT_TTL_S = 30 * 24 * 3600


class LocalProvisioner:
    name = "local"

    def __init__(self, hosts: SimulatorHosts, *, ack_timeout_s: float = 5.0) -> None:
        self.hosts = hosts
        self.ack_timeout_s = ack_timeout_s

    async def live_hosts(self) -> list[str]:
        return await self.hosts.live()

    async def _request(self, host: str, req: ControlRequest) -> ControlReply:
        await self.hosts.request(host, _encoder.encode(req))
        got = await self.hosts.wait_ack(req.request_id, self.ack_timeout_s)
        if got is None:
            raise ProvisionerUnavailable(
                f"simulators host {host} did not answer within {self.ack_timeout_s:.0f}s"
            )
        return _reply_decoder.decode(got)

    async def provision(self, spec: SimulatorSpec) -> str:
        hosts = await self.live_hosts()
        if not hosts:
            raise ProvisionerUnavailable(
                "no simulators process is running (start one with `sessiond simulators`)"
            )
        placed = await self.hosts.placement(spec.simulator_id)
        if placed not in hosts:
            loads = await self.hosts.loads(hosts)
            placed = min(hosts, key=lambda h: loads.get(h, 0))
            await self.hosts.place(spec.simulator_id, placed, PLACEMENT_TTL_S)
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
        placed = await self.hosts.placement(simulator_id)
        if placed is None:
            return
        if placed in await self.live_hosts():
            reply = await self._request(
                placed,
                ControlRequest(op="stop", request_id=uuid.uuid4().hex, simulator_id=simulator_id),
            )
            if not reply.ok:
                raise ProvisionFailed(reply.reason)
        await self.hosts.unplace(simulator_id)

    async def status(self, simulator_id: str) -> ProvisionerStatus:
        placed = await self.hosts.placement(simulator_id)
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
