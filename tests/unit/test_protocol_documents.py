"""The protocol documents are valid and say what the gateway does: `/openapi.json` is an
OpenAPI 3.1 document (openapi-spec-validator) with the real success statuses, tags and
examples that decode into the request types; `/asyncapi.json` is a well-formed AsyncAPI 3
document whose references resolve and whose schemas are valid JSON Schema, covering every
message the WebSocket endpoint handles."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from gateway import ws
from gateway.asyncapi import CLIENT_MESSAGES, SERVER_MESSAGES, build_asyncapi
from gateway.openapi import EXAMPLES, build_openapi
from gateway.protocol import MessageType, name_of
from gateway.rest import API_ROUTES, VERSION


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return msgspec.json.decode(msgspec.json.encode(build_openapi(API_ROUTES, VERSION)))


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    return msgspec.json.decode(msgspec.json.encode(build_asyncapi(VERSION)))


def test_openapi_is_a_valid_3_1_document(openapi: dict[str, Any]) -> None:
    assert openapi["openapi"] == "3.1.0"
    validate(openapi)


def test_openapi_states_the_real_success_statuses(openapi: dict[str, Any]) -> None:
    def statuses(path: str, method: str) -> set[str]:
        return {s for s in openapi["paths"][path][method]["responses"] if s < "300"}

    assert statuses("/api/sessions", "post") == {"200", "201"}
    assert statuses("/api/sessions/{session_id}/simulator", "post") == {"202"}
    assert statuses("/api/sessions/{session_id}/simulator", "delete") == {"202"}
    assert statuses("/session/{uuid}/handoff", "post") == {"201"}
    assert statuses("/api/session/start", "post") == {"200"}


def test_openapi_operations_are_tagged_and_examples_decode(openapi: dict[str, Any]) -> None:
    tags = {t["name"] for t in openapi["tags"]}
    for path, ops in openapi["paths"].items():
        for method, op in ops.items():
            assert op["tags"] and set(op["tags"]) <= tags, (method, path)
    for type_, example in EXAMPLES.items():
        msgspec.convert(example, type_)  # a documented example is a valid request
    assert sum(
        "example" in op.get("requestBody", {}).get("content", {}).get("application/json", {})
        for ops in openapi["paths"].values()
        for op in ops.values()
    ) == len([r for r in API_ROUTES if r[3] is not None])


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_asyncapi_is_well_formed_and_every_reference_resolves(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["channels"]["ws"]["address"] == "/ws"
    for ref in _refs(asyncapi):
        _resolve(asyncapi, ref)
    actions = {op["action"] for op in asyncapi["operations"].values()}
    assert actions == {"send", "receive"}
    for op in asyncapi["operations"].values():
        assert op["channel"] == {"$ref": "#/channels/ws"}
        for message in op["messages"]:  # AsyncAPI 3: operations name the channel's messages
            assert message["$ref"].startswith("#/channels/ws/messages/")
    for name, schema in asyncapi["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema), name


def test_asyncapi_covers_every_message_the_websocket_handles(asyncapi: dict[str, Any]) -> None:
    handled = set(ws._HANDLERS) | {MessageType.AUTH}
    assert handled <= set(CLIENT_MESSAGES)
    messages = asyncapi["components"]["messages"]
    for mtype in CLIENT_MESSAGES:
        assert f"client_{name_of(mtype)}" in messages
    for mtype in SERVER_MESSAGES:
        assert f"server_{name_of(mtype)}" in messages
