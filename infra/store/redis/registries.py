"""The small registries of the gateway and the simulators on Redis: connections per gateway,
user+device -> session, market-data streams, simulators hosts' control, status records."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from infra.store import layout
from infra.store.redis.client import RedisClient, as_str, flat_pairs
from infra.store.redis.lua import UNMARK
from infra.store.redis.reads import StreamReader
from infra.store.redis.resp import pack

__all__ = [
    "RedisConnectionRegistry",
    "RedisControlReader",
    "RedisDeviceIndex",
    "RedisMarketData",
    "RedisSimulatorHosts",
    "RedisStatusBoard",
    "RedisTickReader",
]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _field(fields: Any, name: bytes) -> bytes:
    if fields and fields[0] == name:
        return fields[1]
    return flat_pairs(fields or []).get(name, b"")


class RedisConnectionRegistry:
    """See `api.ConnectionRegistry`: HASH `sd:gw:<id>:conns` per gateway (with a TTL) and the
    ZSET `sd:gateways`."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client

    async def register(self, gateway_id: str, connection_id: str, info: bytes, ttl_s: int) -> None:
        key = layout.gateway_connections_key(gateway_id)
        await self.client.call_many([("HSET", key, connection_id, info), ("EXPIRE", key, ttl_s)])

    async def unregister(self, gateway_id: str, connection_id: str) -> None:
        await self.client.call("HDEL", layout.gateway_connections_key(gateway_id), connection_id)

    async def refresh(self, gateway_id: str, ttl_s: int) -> None:
        await self.client.call_many(
            [
                ("EXPIRE", layout.gateway_connections_key(gateway_id), ttl_s),
                ("ZADD", layout.GATEWAYS, _now_ms(), gateway_id),
            ]
        )

    async def announce(self, gateway_id: str) -> None:
        await self.client.call("ZADD", layout.GATEWAYS, _now_ms(), gateway_id)

    async def remove_gateway(self, gateway_id: str) -> None:
        await self.client.call_many(
            [
                ("DEL", layout.gateway_connections_key(gateway_id)),
                ("ZREM", layout.GATEWAYS, gateway_id),
            ]
        )

    async def connections(self) -> list[tuple[str, str, bytes]]:
        gateways = [g.decode() for g in await self.client.call("ZRANGE", layout.GATEWAYS, 0, -1)]
        if not gateways:
            return []
        tables = await self.client.call_many(
            [("HGETALL", layout.gateway_connections_key(g)) for g in gateways]
        )
        out = []
        for gateway_id, flat in zip(gateways, tables, strict=True):
            for i in range(0, len(flat), 2):
                out.append((gateway_id, flat[i].decode(), flat[i + 1]))
        return out


class RedisDeviceIndex:
    """See `api.DeviceIndex`: `sd:ud:<user>:<device>`."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client

    async def get(self, user_id: str, device_id: str) -> str | None:
        return as_str(await self.client.call("GET", layout.device_session_key(user_id, device_id)))

    async def claim(self, user_id: str, device_id: str, session_id: str, ttl_s: int) -> bool:
        key = layout.device_session_key(user_id, device_id)
        return await self.client.call("SET", key, session_id, "NX", "EX", ttl_s) is not None

    async def put(self, user_id: str, device_id: str, session_id: str, ttl_s: int) -> None:
        await self.client.call(
            "SET", layout.device_session_key(user_id, device_id), session_id, "EX", ttl_s
        )


class RedisTickReader:
    """See `api.TickReader`: XREADs on connections of its own (`StreamReader`: one per
    market-data tag on a cluster)."""

    def __init__(self, client: RedisClient, name: str) -> None:
        self._reads = StreamReader(client, name or "ticks")

    async def read(
        self, positions: Mapping[str, str], count: int, block_ms: int
    ) -> dict[str, list[tuple[str, bytes]]]:
        if not positions:
            return {}
        wanted: dict[bytes, str] = {}
        by_key: dict[bytes, str] = {}
        for sim, position in positions.items():
            key = layout.market_data_stream(sim).encode()
            wanted[key] = position
            by_key[key] = sim
        out: dict[str, list[tuple[str, bytes]]] = {}
        for key, entries in await self._reads.read(wanted, count, block_ms):
            ticks = [(e[0].decode(), _field(e[1], b"d")) for e in entries if e and e[1]]
            if ticks:
                out[by_key[key]] = ticks
        return out

    async def close(self) -> None:
        self._reads.close()


class RedisMarketData:
    """See `api.MarketData`: capped streams `sd:md:<simulator>` (field `d`) and
    `sd:md:session:<session>`."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client

    async def publish(self, ticks: Sequence[tuple[str, bytes]], maxlen: int) -> None:
        if ticks:
            await self.client.call_many(
                [
                    ("XADD", layout.market_data_stream(sim), "MAXLEN", "~", maxlen, "*", "d", data)
                    for sim, data in ticks
                ]
            )

    async def latest(self, simulator_id: str) -> tuple[str, bytes] | None:
        last = await self.client.call(
            "XREVRANGE", layout.market_data_stream(simulator_id), "+", "-", "COUNT", 1
        )
        if not last:
            return None
        return last[0][0].decode(), _field(last[0][1], b"d")

    async def length(self, simulator_id: str) -> int:
        return int(await self.client.call("XLEN", layout.market_data_stream(simulator_id)))

    def reader(self, name: str = "") -> RedisTickReader:
        return RedisTickReader(self.client, name)

    async def mark_active(self, session_id: str, simulator_id: str, ttl_ms: int) -> None:
        await self.client.call(
            "SET", layout.session_simulator_key(session_id), simulator_id, "PX", ttl_ms
        )

    async def active_simulator(self, session_id: str) -> str | None:
        return as_str(await self.client.call("GET", layout.session_simulator_key(session_id)))

    async def unmark_active(self, session_id: str, simulator_id: str) -> None:
        await self.client.run(UNMARK, [layout.session_simulator_key(session_id)], [simulator_id])


class RedisControlReader:
    """See `api.ControlReader`."""

    def __init__(self, client: RedisClient, host_id: str) -> None:
        self.client = client
        self._key = layout.sim_control_stream(host_id)
        self._pipe = client.dedicated(f"control-{host_id}", self._key)

    async def read(self, after: str, count: int, block_ms: int) -> list[tuple[str, bytes]]:
        reply = await self._pipe.submit(
            pack(("XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", self._key, after))
        )
        if not reply:
            return []
        return [(e[0].decode(), _field(e[1], b"r")) for e in reply[0][1] if e and e[1]]

    async def remove(self, position: str) -> None:
        await self.client.call("XDEL", self._key, position)

    async def close(self) -> None:
        self._pipe.close()


class RedisSimulatorHosts:
    """See `api.SimulatorHosts`: `sd:sim:hosts`, `sd:sim:load`, `sd:sim:control:<host>`,
    `sd:sim:where:<simulator>`, `sd:sim:ack:<request>`."""

    #: how many requests a host's control stream keeps at most (about)
    CONTROL_MAXLEN = 10_000

    def __init__(self, client: RedisClient) -> None:
        self.client = client

    async def register(self, host_id: str, ttl_ms: int, load: int) -> None:
        now = _now_ms()
        await self.client.call_many(
            [
                ("ZADD", layout.SIM_HOSTS, now + ttl_ms, host_id),
                ("HSET", layout.SIM_LOAD, host_id, load),
                ("ZREMRANGEBYSCORE", layout.SIM_HOSTS, 0, now - 3_600_000),
            ]
        )

    async def deregister(self, host_id: str) -> None:
        await self.client.call_many(
            [
                ("ZREM", layout.SIM_HOSTS, host_id),
                ("HDEL", layout.SIM_LOAD, host_id),
                ("DEL", layout.sim_control_stream(host_id)),
            ]
        )

    async def live(self) -> list[str]:
        hosts = await self.client.call("ZRANGEBYSCORE", layout.SIM_HOSTS, _now_ms(), "+inf")
        return [h.decode() for h in hosts]

    async def loads(self, host_ids: Sequence[str]) -> dict[str, int]:
        if not host_ids:
            return {}
        values = await self.client.call("HMGET", layout.SIM_LOAD, *host_ids)
        return {h: int(v or 0) for h, v in zip(host_ids, values, strict=True)}

    async def placement(self, simulator_id: str) -> str | None:
        return as_str(await self.client.call("GET", layout.sim_placement_key(simulator_id)))

    async def place(self, simulator_id: str, host_id: str, ttl_s: int) -> None:
        await self.client.call("SET", layout.sim_placement_key(simulator_id), host_id, "EX", ttl_s)

    async def unplace(self, simulator_id: str) -> None:
        await self.client.call("DEL", layout.sim_placement_key(simulator_id))

    async def request(self, host_id: str, payload: bytes) -> None:
        await self.client.call(
            "XADD",
            layout.sim_control_stream(host_id),
            "MAXLEN",
            "~",
            self.CONTROL_MAXLEN,
            "*",
            "r",
            payload,
        )

    def control_reader(self, host_id: str) -> RedisControlReader:
        return RedisControlReader(self.client, host_id)

    async def acknowledge(
        self, request_id: str, payload: bytes, host_id: str, load: int, ttl_s: int
    ) -> None:
        key = layout.sim_ack_key(request_id)
        await self.client.call_many(
            [
                ("RPUSH", key, payload),
                ("EXPIRE", key, ttl_s),
                ("HSET", layout.SIM_LOAD, host_id, load),
            ]
        )

    async def wait_ack(self, request_id: str, timeout_s: float) -> bytes | None:
        key = layout.sim_ack_key(request_id)
        pipe = self.client.dedicated(f"ack-{request_id}", key)
        try:
            got = await pipe.submit(pack(("BLPOP", key, f"{max(0.01, timeout_s):.3f}")))
        finally:
            pipe.close()
        return None if got is None else got[1]


class RedisStatusBoard:
    """See `api.StatusBoard`: `sd:<role>:<owner>:status`."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client

    async def put(self, role: str, owner: str, payload: bytes, ttl_ms: int) -> None:
        await self.client.call("SET", layout.status_key(role, owner), payload, "PX", ttl_ms)

    async def get(self, role: str, owners: Sequence[str]) -> dict[str, bytes | None]:
        if not owners:
            return {}
        values = await self.client.call_many([("GET", layout.status_key(role, o)) for o in owners])
        return dict(zip(owners, values, strict=True))

    async def delete(self, role: str, owner: str) -> None:
        await self.client.call("DEL", layout.status_key(role, owner))
