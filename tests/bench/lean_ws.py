"""A lean WebSocket client for benchmarks: the websockets library's Sans-I/O protocol on a plain
asyncio `Protocol`, with a callback per text message.

Why not `websockets.connect`: the latency benchmark's clients stand in for remote devices, yet
they share the machine with the service they measure. The asyncio client (a task, a queue and
an awaited `recv` per message) cost the two client processes ~25% of a core at 1,000 updates/s;
this costs a fraction of that, and what it saves goes to the service under test. The protocol
is the same library's, so the frames on the wire are exactly what any websockets client sends.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

__all__ = ["LeanWebSocket", "connect"]


class LeanWebSocket(asyncio.Protocol):
    """One client connection. Text messages wait for `recv()` until `on_text` is set; from then
    on `on_text(str)` is called for each, in order, from the event loop's read callback (no task
    switch between the socket and the handler)."""

    def __init__(self, url: str) -> None:
        loop = asyncio.get_running_loop()
        self.proto = ClientProtocol(parse_uri(url), max_size=None)
        self.on_text: Callable[[str], None] | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._buffer: deque[str] = deque()
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.proto.send_request(self.proto.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.proto.receive_data(data)
        for event in self.proto.events_received():
            if isinstance(event, Response):
                exc = self.proto.handshake_exc
                if not self.opened.done():
                    if exc is None:
                        self.opened.set_result(None)
                    else:
                        self.opened.set_exception(exc)
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self._deliver(event.data.decode())
        self._flush()  # pongs and close replies the protocol queued

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("connection lost during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake()

    # client API
    async def recv(self) -> str:
        """The next text message (before `on_text` is set)."""
        while not self._buffer:
            if self.closed.done():
                raise ConnectionError("connection closed")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._buffer.popleft()

    def send(self, text: str) -> None:
        self.proto.send_text(text.encode())
        self._flush()

    async def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.proto.send_close(1000)
        self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), 5)
        except TimeoutError:
            pass
        self.transport.close()

    def _deliver(self, text: str) -> None:
        if self.on_text is not None:
            self.on_text(text)
        else:
            self._buffer.append(text)
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _flush(self) -> None:
        data = self.proto.data_to_send()
        if data and self.transport is not None:
            if data[-1] == b"":  # the protocol asks for the TCP connection to be closed
                self.transport.writelines(data[:-1])
                self.transport.close()
            else:
                self.transport.writelines(data)


async def connect(url: str, timeout: float = 60.0) -> LeanWebSocket:
    """Open `url` (ws://host:port/path?query) and complete the opening handshake."""
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    _, ws = await asyncio.wait_for(
        loop.create_connection(lambda: LeanWebSocket(url), uri.host, uri.port), timeout
    )
    await asyncio.wait_for(ws.opened, timeout)
    return ws
