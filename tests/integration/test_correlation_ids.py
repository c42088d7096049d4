"""A client's correlation id (REST `X-Correlation-ID`, gRPC `x-correlation-id` metadata) is the
events' correlation id, so an operator finds a request's events by the id the client logged;
it is echoed on the REST response, and one the store cannot hold is refused with a clear 400."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import httpx
import pytest

from gateway.grpc import sessiond_pb2 as pb
from gateway.grpc import sessiond_pb2_grpc as pb_grpc
from tests.integration.gwstack import Stack

pytestmark = pytest.mark.anyio


async def _events_of(stack: Stack, http: httpx.AsyncClient, correlation_id: str) -> list[dict]:
    """The archived events of a correlation id, once the projector archived them."""
    admin = stack.headers("root", "admin")
    deadline = time.monotonic() + 15
    while True:
        r = await http.get(
            "/admin/events", params={"correlation_id": correlation_id}, headers=admin
        )
        assert r.status_code == 200, r.text
        if r.json()["events"] or time.monotonic() > deadline:
            return r.json()["events"]
        await asyncio.sleep(0.1)


async def test_a_rest_requests_correlation_id_is_its_events_and_is_echoed(stack: Stack) -> None:
    sid, cid = str(uuid.uuid4()), f"req-{uuid.uuid4().hex}"
    h = stack.headers("corr-user")
    async with httpx.AsyncClient(base_url=stack.base) as http:
        r = await http.post(
            "/session/snapshot",
            headers={**h, "X-Correlation-ID": cid},
            json={"session_id": sid, "state_data": {"a": 1}, "device_id": "d1"},
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-correlation-id"] == cid
        found = await _events_of(stack, http, cid)
        assert {e["actor_id"] for e in found} == {f"session:{sid}"}
        assert "StateReplaced" in [e["type"] for e in found]

        r = await http.post(  # without one, nothing is echoed and the command id correlates
            "/session/incremental", headers=h, json={"session_id": sid, "changes": {"b": 2}}
        )
        assert r.status_code == 200, r.text
        assert "x-correlation-id" not in r.headers

        for bad in ("x" * 201, "has space"):
            r = await http.post(
                "/session/incremental",
                headers={**h, "X-Correlation-ID": bad},
                json={"session_id": sid, "changes": {"c": 3}},
            )
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "INVALID_ARGUMENT"
            assert "correlation id" in r.json()["error"]["message"]
            assert "x-correlation-id" not in r.headers
        r = await http.get(f"/session/{sid}", headers=h)
        assert "c" not in r.json()["state_data"]  # nothing was written for the refused ones


async def test_a_grpc_calls_correlation_id_is_its_events(stack: Stack) -> None:
    sid, cid = str(uuid.uuid4()), f"rpc-{uuid.uuid4().hex}"
    md = (("authorization", f"Bearer {stack.token('corr-rpc')}"), ("x-correlation-id", cid))
    with grpc.insecure_channel(stack.grpc_target) as channel:
        api = pb_grpc.SessionServiceStub(channel)
        await asyncio.to_thread(
            api.StartSession,
            pb.StartSessionRequest(session_id=sid, router_id=str(uuid.uuid4())),
            metadata=md,
        )
    async with httpx.AsyncClient(base_url=stack.base) as http:
        found = await _events_of(stack, http, cid)
    assert [(e["actor_id"], e["type"]) for e in found][:1] == [(f"session:{sid}", "SessionCreated")]
