"""`/asyncapi.json`: the WebSocket protocol of `/ws` as an AsyncAPI 3 document, generated from
msgspec types (`msgspec.json.schema_components`), as `/openapi.json` is for REST.

Every message is the envelope `gateway.protocol` reads and writes (seed 004's shape), with
`type` a name or seed 004's number. One message type per `MessageType` the gateway receives or
sends; the payloads the gateway reads field by field (state updates, heartbeats, auth) are
typed, the others are objects whose fields the README's WebSocket section lists.
`tests/integration/test_protocol_documents.py` checks that what a real gateway sends conforms.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from gateway.protocol import MessageType, name_of

__all__ = ["CLIENT_MESSAGES", "SERVER_MESSAGES", "build_asyncapi"]


class StateUpdatePayload(msgspec.Struct, kw_only=True):
    """One of three forms: `{key, value, operation}` sets (SET) or deletes (DELETE) one key;
    `{changes, deleted_keys}` sets and deletes several; `{state}` replaces the whole state
    (`version`, when given, must be the current version + 1). `base_version`, when given,
    must be the current version. (A union of untagged objects, written as one.)"""

    key: str | None = None
    value: Any = None
    operation: Literal["SET", "DELETE", "set", "delete"] = "SET"
    changes: dict[str, Any] | None = None
    deleted_keys: list[str] | None = None
    state: dict[str, Any] | None = None
    version: int | None = None
    base_version: int | None = None
    app_version: str = ""


class HeartbeatPayload(msgspec.Struct, kw_only=True):
    client_time: int | float | None = None
    rtt_ms: float | None = None


class HeartbeatAckPayload(msgspec.Struct, kw_only=True):
    """The answer to a server heartbeat: its `server_time` gives the round trip."""

    server_time: int | float | None = None


class AuthPayload(msgspec.Struct, kw_only=True):
    """The first message when the URL carries no token; later, a new token for the
    connection (the same user)."""

    token: str
    session_id: str = ""
    device_id: str = ""
    since: int | None = None


class ResumePayload(msgspec.Struct, kw_only=True):
    """Send me every change after `since`."""

    since: int


class StartSimulatorPayload(msgspec.Struct, kw_only=True):
    initial_symbols: list[str] = []
    initial_cash: float = 100000.0


class Empty(msgspec.Struct):
    pass


#: What a client sends, and the payload the gateway reads from it.
CLIENT_MESSAGES: dict[MessageType, Any] = {
    MessageType.AUTH: AuthPayload,
    MessageType.HEARTBEAT: HeartbeatPayload,
    MessageType.HEARTBEAT_ACK: HeartbeatAckPayload,
    MessageType.SNAPSHOT_REQUEST: Empty,
    MessageType.STATE_UPDATE: StateUpdatePayload,
    MessageType.DEVICE_LIST: Empty,
    MessageType.RECONNECT: ResumePayload,
    MessageType.START_SIMULATOR: StartSimulatorPayload,
    MessageType.STOP_SIMULATOR: Empty,
    MessageType.SIMULATOR_STATUS: Empty,
    MessageType.BROADCAST: dict[str, Any],  # admins: to every client
    MessageType.ADMIN_UPDATE: dict[str, Any],  # admins: to the admins
}

#: What the gateway sends (the payload's fields: README, "WebSocket /ws").
SERVER_MESSAGES: dict[MessageType, str] = {
    MessageType.CONNECTED: "the connection joined the session: its version, the gateway",
    MessageType.AUTH_SUCCESS: "AUTH accepted (the first AUTH: as `connected`)",
    MessageType.AUTH_FAILURE: "AUTH refused: `code`, `message`; the socket closes",
    MessageType.ERROR: "a message refused: `code`, `message` (and `correlation_id`)",
    MessageType.HEARTBEAT: "the server's heartbeat: answer with heartbeat_ack + server_time",
    MessageType.HEARTBEAT_ACK: "the answer to a client heartbeat",
    MessageType.SNAPSHOT_RESPONSE: "the session snapshot",
    MessageType.STATE_UPDATE: "a change of the shared state (`operation`, `version`), or the "
    "acknowledgement of the client's own update",
    MessageType.DEVICE_JOINED: "a device joined the session",
    MessageType.DEVICE_LEFT: "a device left (or was disconnected)",
    MessageType.DEVICE_LIST: "the session's devices",
    MessageType.BROADCAST: "an admin broadcast",
    MessageType.ADMIN_UPDATE: "the gateway's figures (admins only)",
    MessageType.RECONNECT: "advice to reconnect (draining gateway, poor connection)",
    MessageType.CONNECTION_STATE: "a connection opened, closed or changed quality",
    MessageType.SIMULATOR_STATUS: "the session's simulator status",
    MessageType.EXCHANGE_DATA: "a tick of the session's exchange simulator",
    MessageType.RESET: "history no longer reaches back: the whole state at `version`",
    MessageType.SESSION_UPDATE: "the session was created, refreshed, ended or expired",
    MessageType.HANDOFF: "a handoff started, was accepted or expired",
}


def _client_struct(mtype: MessageType, payload: Any) -> type:
    name = name_of(mtype)
    return msgspec.defstruct(
        "Client_" + name,
        [
            ("type", Literal[name, int(mtype)]),  # type: ignore[valid-type]
            ("payload", payload, msgspec.field(default_factory=dict)),
            ("session_id", str, ""),
            ("device_id", str, ""),
            ("timestamp", int | float, 0),
            ("correlation_id", str, ""),
            ("idempotency_key", str, ""),
        ],
        kw_only=True,
    )


def _server_struct(mtype: MessageType) -> type:
    name = name_of(mtype)
    return msgspec.defstruct(
        "Server_" + name,
        [
            ("type", Literal[name, int(mtype)]),  # type: ignore[valid-type]
            ("payload", dict[str, Any]),
            ("session_id", str),
            ("user_id", str),
            ("device_id", str),
            ("timestamp", int),
            ("correlation_id", str),
            ("version", int | None, None),  # present on every change (resume with since)
        ],
        kw_only=True,
    )


def build_asyncapi(version: str, host: str = "127.0.0.1:8080") -> dict[str, Any]:
    client = {m: _client_struct(m, p) for m, p in CLIENT_MESSAGES.items()}
    server = {m: _server_struct(m) for m in SERVER_MESSAGES}
    types = [*client.values(), *server.values()]
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    by_type = dict(zip(types, schemas, strict=True))
    messages: dict[str, Any] = {}
    for direction, found in (("client", client), ("server", server)):
        for mtype, struct in found.items():
            key = f"{direction}_{name_of(mtype)}"
            summary = (
                SERVER_MESSAGES[mtype]
                if direction == "server"
                else ((struct.__doc__ or "").strip() or f"{name_of(mtype)} from the client")
            )
            messages[key] = {
                "name": name_of(mtype),
                "title": f"{name_of(mtype)} ({direction})",
                "summary": summary,
                "payload": by_type[struct],
            }
    refs = {key: {"$ref": f"#/components/messages/{key}"} for key in messages}

    def of(direction: str) -> list[dict[str, str]]:
        return [
            {"$ref": f"#/channels/ws/messages/{key}"}
            for key in messages
            if key.startswith(direction + "_")
        ]

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "sessiond WebSocket API",
            "version": version,
            "description": "One WebSocket per device: the session's changes pushed in version "
            "order, state updates, heartbeats, presence. Reconnect with "
            "`since=<last version>` to resume gap-free. `type` is a name or "
            "seed 004's number; answers come in the form the client used.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": host,
                "protocol": "ws",
                "description": "`make run`",
                "security": [{"$ref": "#/components/securitySchemes/token"}],
            }
        },
        "channels": {
            "ws": {
                "address": "/ws",
                "title": "a device's connection to its session",
                "messages": refs,
                "bindings": {
                    "ws": {
                        "query": {
                            "type": "object",
                            "properties": {
                                "token": {
                                    "type": "string",
                                    "description": "access token (or AUTH)",
                                },
                                "session_id": {"type": "string", "format": "uuid"},
                                "device_id": {"type": "string"},
                                "since": {
                                    "type": "integer",
                                    "minimum": 0,
                                    "description": "resume after this session version",
                                },
                            },
                        }
                    }
                },
            }
        },
        "operations": {
            "receiveClientMessages": {
                "action": "receive",
                "channel": {"$ref": "#/channels/ws"},
                "summary": "what a client sends",
                "messages": of("client"),
            },
            "sendServerMessages": {
                "action": "send",
                "channel": {"$ref": "#/channels/ws"},
                "summary": "what the gateway pushes",
                "messages": of("server"),
            },
        },
        "components": {
            "schemas": components,
            "messages": messages,
            "securitySchemes": {
                "token": {
                    "type": "httpApiKey",
                    "name": "token",
                    "in": "query",
                    "description": "the access token (JWT) in the URL, or an AUTH message first",
                }
            },
        },
    }
