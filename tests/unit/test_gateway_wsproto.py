"""The memory trim of an open WebSocket connection (`gateway.wsproto`): the connection keeps
working on uvicorn's real websockets-sansio protocol, over a real socket, once trimmed."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import uvicorn
import websockets
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from gateway.wsproto import LeanQueue, trim_open_connection

pytestmark = pytest.mark.anyio


async def test_lean_queue_hands_items_over_in_order_and_wakes_its_reader() -> None:
    queue = LeanQueue(["first"])
    assert not queue.empty() and queue.qsize() == 1
    assert await queue.get() == "first"
    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not reader.done()
    queue.put_nowait("second")
    queue.put_nowait("third")
    assert await reader == "second"
    assert await queue.get() == "third"
    assert queue.empty()


async def test_a_trimmed_connection_keeps_receiving_sending_and_closing() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        trim_open_connection(scope, send)
        proto = send.__self__
        seen.update(
            request=proto.request,
            response=proto.response,
            queue=type(proto.queue),
            headers=scope["headers"],
            query=scope["query_string"],
        )
        while (event := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": event["text"].upper()})
        seen["closed"] = event["type"]

    config = uvicorn.Config(app, ws="websockets-sansio", ws_ping_interval=None)
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = await loop.create_server(
        lambda: WebSocketsSansIOProtocol(config, state, {}), "127.0.0.1", port
    )
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws?token=secret") as ws:
            await ws.send("hello")
            assert await ws.recv() == "HELLO"
            await ws.send("again")
            assert await ws.recv() == "AGAIN"
        for _ in range(100):
            if "closed" in seen:
                break
            await asyncio.sleep(0.01)
    finally:
        server.close()
    assert seen["request"] is None and seen["response"] is None
    assert seen["queue"] is LeanQueue
    assert seen["headers"] == [] and seen["query"] == b""
    assert seen["closed"] == "websocket.disconnect"
