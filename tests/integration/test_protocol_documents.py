"""The protocol documents as a real gateway serves them: what it sends over `/ws` and what a
client sends conform to `/asyncapi.json`; `/docs` loads with nothing from outside."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gateway.protocol import MessageType, name_of
from tests.integration.gwstack import Stack, connect_ws

pytestmark = pytest.mark.anyio


def _name(kind: str | int) -> str:
    return name_of(MessageType(kind)) if isinstance(kind, int) else kind


def _validators(doc: dict[str, Any]) -> dict[str, Draft202012Validator]:
    """A validator per message key (`server_state_update`...), resolving the document's refs."""
    uri = "urn:sessiond:asyncapi"
    registry = Registry().with_resource(uri, Resource(contents=doc, specification=DRAFT202012))
    return {
        key: Draft202012Validator({"$ref": uri + message["payload"]["$ref"]}, registry=registry)
        for key, message in doc["components"]["messages"].items()
    }


async def test_websocket_traffic_conforms_to_the_asyncapi_document(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base) as http:
        doc = (await http.get("/asyncapi.json")).json()
    validators = _validators(doc)
    sent = [
        {"type": "heartbeat", "payload": {"client_time": 1}},
        {"type": "state_update", "payload": {"changes": {"a": 1}}, "correlation_id": "c1"},
        {"type": "state_update", "payload": {"key": "b", "value": 2, "operation": "SET"}},
        {"type": 5, "payload": {"state": {"c": 3}}},
        {"type": "snapshot_request"},
        {"type": "device_list"},
        {"type": "state_update", "payload": {"state": "not an object"}},
    ]
    for message in sent:
        key = "client_" + ("state_update" if message["type"] == 5 else message["type"])
        if message is sent[-1]:  # the document refuses what the gateway refuses
            assert not validators[key].is_valid(message)
        else:
            validators[key].validate(message)
    ws, hello = await connect_ws(stack, "doc-alice", "laptop", str(uuid.uuid4()), create="true")
    received = [hello]
    try:
        # (the snapshot again at the end: by then the read model has the session)
        for message in [*sent, {"type": "snapshot_request"}]:
            await ws.send(json.dumps(message))
            with contextlib.suppress(TimeoutError):  # everything that comes, until quiet
                while True:
                    received.append(json.loads(await asyncio.wait_for(ws.recv(), 0.7)))
    finally:
        await ws.close()
    kinds = {_name(m["type"]) for m in received}  # names, or numbers after the numeric one
    assert {
        "connected",
        "heartbeat_ack",
        "state_update",
        "snapshot_response",
        "device_list",
        "error",
    } <= kinds, kinds
    for message in received:
        validators[f"server_{_name(message['type'])}"].validate(message)


async def test_docs_page_loads_with_nothing_from_outside(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base) as http:
        page = await http.get("/docs")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert not re.search(r"(https?:)?//[\w.-]+\.\w", page.text), "an outside URL"
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
        for asset in assets:
            assert asset.startswith("/"), asset
            answer = await http.get(asset)
            assert answer.status_code == 200 and answer.content, asset
        spec = (await http.get("/openapi.json")).json()
        assert spec["openapi"] == "3.1.0"
