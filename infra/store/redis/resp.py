"""RESP framing: commands as bytes, built once and sent as they are.

redis-py's per-argument packing was the hot path's largest cost; the store frames its commands
itself (arguments are bytes, str or int) and the batch append frames its arguments while the
planner fills the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["EMPTY", "frame", "frame_int", "frame_str", "pack", "pack_framed", "unframe"]


def pack(args: Sequence[Any]) -> bytes:
    """RESP framing of one command (`args[0]` is the command name; bytes, str or int)."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        cls = arg.__class__
        if cls is bytes:
            pass
        elif cls is str:
            arg = arg.encode()
        elif cls is int:
            arg = b"%d" % arg
        elif cls is bytearray or cls is memoryview:
            arg = bytes(arg)
        else:
            arg = str(arg).encode()
        append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


def frame(data: bytes) -> bytes:
    """One bulk string."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


_SMALL_INTS = [frame(b"%d" % i) for i in range(-2, 1025)]

#: The empty bulk string.
EMPTY = frame(b"")


def frame_int(n: int) -> bytes:
    return _SMALL_INTS[n + 2] if -2 <= n <= 1024 else frame(b"%d" % n)


def frame_str(text: str) -> bytes:
    return frame(text.encode())


def pack_framed(args: list[bytes]) -> bytes:
    """A command from arguments already framed as bulk strings."""
    return b"*%d\r\n%b" % (len(args), b"".join(args))


def unframe(data: bytes) -> list[bytes]:
    """The bulk strings of framed bytes, in order (for tests and debugging)."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        if data[pos : pos + 1] == b"*":
            pos = data.index(b"\r\n", pos) + 2
            continue
        if data[pos : pos + 1] != b"$":
            raise ValueError(f"not a bulk string at {pos}")
        end = data.index(b"\r\n", pos)
        size = int(data[pos + 1 : end])
        out.append(data[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2
    return out
