"""The gateway benchmark's lean WebSocket client (`tests/bench/lean_ws.py`) against a real
websockets server: it measures the service, so it must deliver every message, in order."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.server import serve

from tests.bench.lean_ws import connect

pytestmark = pytest.mark.anyio


async def test_messages_wait_for_recv_then_reach_the_callback_in_order() -> None:
    async def greet_then_echo(ws) -> None:
        await ws.send("hello")
        async for message in ws:
            await ws.send(f"echo {message}")

    async with serve(greet_then_echo, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        ws = await connect(f"ws://127.0.0.1:{port}/?a=1")
        assert await ws.recv() == "hello"  # arrived before any callback was set
        got: list[str] = []
        done = asyncio.get_running_loop().create_future()

        def on_text(text: str) -> None:
            got.append(text)
            if len(got) == 100:
                done.set_result(None)

        ws.on_text = on_text
        for i in range(100):
            ws.send(str(i))
        await asyncio.wait_for(done, 10)
        assert got == [f"echo {i}" for i in range(100)]
        await ws.close()
        assert ws.closed.done()


async def test_a_refused_handshake_raises() -> None:
    async def never(ws) -> None:  # pragma: no cover - the handshake is refused first
        await ws.close()

    async with serve(
        never, "127.0.0.1", 0, process_request=lambda c, r: c.respond(403, "no")
    ) as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(Exception, match="403"):
            await connect(f"ws://127.0.0.1:{port}/", timeout=5)
