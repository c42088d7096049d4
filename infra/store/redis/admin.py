"""One blocking command to a Redis / Valkey server on this machine, for setting servers up (the
embedded test cluster: CLUSTER ADDSLOTSRANGE, MEET, REPLICATE, INFO): RESP stays in the store.

Not for the product's paths: a new connection per command, no pipelining, no redirections.
"""

from __future__ import annotations

import socket

from events.errors import StoreUnavailable
from infra.store.redis.resp import pack

__all__ = ["admin_command"]


def admin_command(
    port: int, *args: str | int, host: str = "127.0.0.1", timeout: float = 5.0
) -> object:
    """Send one command to `host:port`, return its reply (bulk strings as bytes). An error reply
    or a closed connection raises `StoreUnavailable` (with the server's message); a refused
    connection raises `OSError`."""
    import hiredis

    reader = hiredis.Reader()
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(pack(args))
        while (reply := reader.gets()) is False:
            data = s.recv(65536)
            if not data:
                raise StoreUnavailable(f"{host}:{port} closed the connection")
            reader.feed(data)
    if isinstance(reply, hiredis.ReplyError):
        raise StoreUnavailable(f"{host}:{port} refused {args[0]}: {reply}")
    return reply
