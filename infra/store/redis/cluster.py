"""Redis Cluster arithmetic, pure: hash slots, which key a command names, redirections, the
slot map, and which servers the store supports.

Every key of a partition carries the hash tag `{pN}` (see `infra.store.layout`), so all of a
partition lives in one of the 16384 slots; the store sends each command to the master that
serves its key's slot. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from infra.store.routing import SLOTS, key_slot

__all__ = [
    "SLOTS",
    "Address",
    "Redirect",
    "ServerInfo",
    "SlotMap",
    "command_key",
    "key_slot",
    "parse_redirect",
]

#: (host, port) of a cluster node.
Address = tuple[str, int]


def _upper(word: Any) -> bytes:
    if isinstance(word, str):
        word = word.encode()
    return bytes(word).upper()


def command_key(args: Sequence[Any]) -> Any:
    """The key (or shard channel) that decides where a command of the store goes; None for a
    command with none (PING, INFO, SCRIPT LOAD: any node serves it). Covers the commands the
    store sends: a multi-key command's keys all share one slot, so its first key decides."""
    name = _upper(args[0])
    if name in (b"EVALSHA", b"EVAL", b"FCALL"):
        return args[3] if len(args) > 3 and int(args[2]) > 0 else None
    if name in (b"XREAD", b"XREADGROUP"):
        for i in range(1, len(args) - 1):
            if _upper(args[i]) == b"STREAMS":
                return args[i + 1]
        return None
    if name in (b"XGROUP", b"XINFO", b"OBJECT", b"MEMORY"):
        return args[2] if len(args) > 2 else None
    if name in (b"PING", b"INFO", b"SCRIPT", b"CLUSTER", b"ASKING", b"CLIENT", b"WAIT"):
        return None
    return args[1] if len(args) > 1 else None


class Redirect(NamedTuple):
    """What an error reply asks of a cluster client: go elsewhere (MOVED: for good, ASK: this
    once, after ASKING), or try again shortly (TRYAGAIN, CLUSTERDOWN, ...)."""

    kind: str  # "MOVED", "ASK" or "RETRY"
    slot: int
    address: Address | None


#: error replies that a short wait cures: a slot in the middle of a migration (TRYAGAIN), a
#: cluster between a master's failure and its replica's promotion (CLUSTERDOWN), a replica
#: turning master (MASTERDOWN, LOADING), a blocked read whose key just moved (UNBLOCKED)
_RETRY = ("TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "LOADING", "UNBLOCKED")


def parse_redirect(reply: str, default_host: str = "127.0.0.1") -> Redirect | None:
    """The redirection an error reply asks for, None for any other error. ``MOVED 3999
    127.0.0.1:6381``; a node that does not know its own address answers ``:6381``."""
    if reply.startswith(("MOVED ", "ASK ")):
        kind, slot, where = reply.split(" ", 2)
        host, _, port = where.strip().rpartition(":")
        return Redirect(kind, int(slot), (host or default_host, int(port)))
    if reply.startswith(_RETRY):
        return Redirect("RETRY", -1, None)
    return None


class SlotMap:
    """Which master serves each slot, as `CLUSTER SLOTS` told it (and MOVED replies since),
    with every node it named (replicas too: any of them can tell the map again)."""

    __slots__ = ("_owner", "nodes")

    def __init__(self, owner: list[Address | None], nodes: Sequence[Address]) -> None:
        self._owner = owner
        self.nodes = list(dict.fromkeys(nodes))

    @classmethod
    def parse(cls, reply: Sequence[Any], default_host: str) -> SlotMap:
        """From a `CLUSTER SLOTS` reply: [[first, last, [host, port, id, ...] (master),
        replicas...], ...]. An empty host means the node the reply came from."""
        owner: list[Address | None] = [None] * SLOTS
        nodes: list[Address] = []
        for entry in reply:
            first, last = int(entry[0]), int(entry[1])
            addresses = [_address(n, default_host) for n in entry[2:]]
            for slot in range(first, last + 1):
                owner[slot] = addresses[0]
            nodes.extend(addresses)
        return cls(owner, nodes)

    def owner(self, slot: int) -> Address | None:
        return self._owner[slot]

    def assign(self, slot: int, address: Address) -> None:
        """A MOVED reply said so: believe it until the next full map."""
        self._owner[slot] = address
        if address not in self.nodes:
            self.nodes.append(address)

    def masters(self) -> list[Address]:
        """The nodes serving at least one slot, in slot order."""
        return list(dict.fromkeys(a for a in self._owner if a is not None))

    def covered(self) -> bool:
        return all(a is not None for a in self._owner)


def _address(node: Sequence[Any], default_host: str) -> Address:
    host = node[0].decode() if isinstance(node[0], bytes) else str(node[0] or "")
    if not host or host == "?":
        host = default_host
    return host, int(node[1])


class ServerInfo(NamedTuple):
    """What `INFO server` / `INFO cluster` say about the server the store talks to."""

    name: str  # "redis" or "valkey"
    version: tuple[int, ...]
    cluster: bool

    @classmethod
    def parse(cls, text: bytes | str) -> ServerInfo:
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        # Valkey reports the Redis version it is compatible with too; its own comes first
        if "valkey_version" in fields:
            name, version = "valkey", fields["valkey_version"]
        else:
            name, version = (
                fields.get("server_name", "redis") or "redis",
                fields.get("redis_version", "0"),
            )
        mode = fields.get("server_mode") or fields.get("redis_mode")  # Valkey's, Redis's
        cluster = mode == "cluster" or fields.get("cluster_enabled") == "1"
        return cls(name, _version(version), cluster)

    @property
    def version_text(self) -> str:
        return ".".join(str(v) for v in self.version)

    def refusal(self) -> str | None:
        """Why the store cannot use this server (sharded pub/sub and the scripts' commands
        need Redis >= 7.0 or Valkey >= 7.2), None when it can."""
        minimum = (7, 2) if self.name == "valkey" else (7, 0)
        if self.version[:2] >= minimum:
            return None
        need = ".".join(map(str, minimum))
        return (
            f"{self.name} {self.version_text} is not supported: sessiond needs Redis >= 7.0 or"
            f" Valkey >= 7.2 (this server is older than {self.name} {need})"
        )


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts) or (0,)
