"""A small Kubernetes API server for the tests: real HTTP on 127.0.0.1, in a thread.

It implements just what the `kubernetes` provisioner calls through the official client:
apps/v1 Deployments (create, read status, delete) and v1 Services (create, delete), with the
API's error shape (`Status`). Behaviour per test:

- `ready_after_s`: a created Deployment reports a ready replica after this long;
- `fail_deployments`: {name-prefix or "*": message} -> the Deployment reports
  `Progressing=False, reason=ProgressDeadlineExceeded` with that message;
- `reject_create`: (code, reason, message) answered to the next creates instead;
- `token`: the bearer token every request must carry (401 otherwise).

`received` keeps every manifest created, so tests can validate what the client really sent.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["FakeKubernetesAPI", "write_kubeconfig"]

_DEPLOY = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments(?:/([^/]+))?(/status)?$")
_SERVICE = re.compile(r"^/api/v1/namespaces/([^/]+)/services(?:/([^/]+))?$")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FakeKubernetesAPI:
    def __init__(self, *, token: str = "test-token", ready_after_s: float = 0.2) -> None:
        self.token = token
        self.ready_after_s = ready_after_s
        self.fail_deployments: dict[str, str] = {}
        self.reject_create: tuple[int, str, str] | None = None
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.received: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeKubernetesAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: stop() is final

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with api.lock:
                    api.requests.append((method, path))
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    return self._send(401, _status(401, "Unauthorized", "Unauthorized"))
                body = json.loads(raw) if raw else None
                code, answer = api.route(method, path, body)
                self._send(code, answer)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering (the port is closed: clients get 'connection refused')."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------------ behaviour

    def _deployment_status(self, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        for prefix, message in self.fail_deployments.items():
            if prefix == "*" or name.startswith(prefix):
                return {
                    "replicas": 1,
                    "unavailableReplicas": 1,
                    "conditions": [
                        {
                            "type": "Progressing",
                            "status": "False",
                            "reason": "ProgressDeadlineExceeded",
                            "message": message,
                        }
                    ],
                }
        if time.monotonic() - obj["_created"] >= self.ready_after_s:
            return {
                "replicas": 1,
                "readyReplicas": 1,
                "availableReplicas": 1,
                "updatedReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}
                ],
            }
        return {
            "replicas": 1,
            "unavailableReplicas": 1,
            "conditions": [
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
            ],
        }

    def _public(self, obj: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
        out = {k: v for k, v in obj.items() if not k.startswith("_")}
        if status is not None:
            out["status"] = status
        return out

    def route(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if m := _DEPLOY.match(path):
                return self._resource(
                    method,
                    m.group(1),
                    m.group(2),
                    body,
                    self.deployments,
                    "Deployment",
                    "deployments.apps",
                )
            if m := _SERVICE.match(path):
                return self._resource(
                    method, m.group(1), m.group(2), body, self.services, "Service", "services"
                )
        return 404, _status(404, "NotFound", f"the server could not find {path}")

    def _resource(
        self,
        method: str,
        ns: str,
        name: str | None,
        body: Any,
        store: dict[tuple[str, str], dict[str, Any]],
        kind: str,
        resource: str,
    ) -> tuple[int, dict[str, Any]]:
        if method == "POST" and name is None:
            if self.reject_create is not None:
                code, reason, message = self.reject_create
                return code, _status(code, reason, message)
            self.received.append(body)
            name = body["metadata"]["name"]
            if (ns, name) in store:
                return 409, _status(409, "AlreadyExists", f'{resource} "{name}" already exists')
            obj = dict(body)
            obj["metadata"] = {
                **body["metadata"],
                "uid": f"uid-{name}",
                "creationTimestamp": "2026-01-01T00:00:00Z",
            }
            obj["_created"] = time.monotonic()
            store[(ns, name)] = obj
            return 201, self._public(obj, {} if kind == "Deployment" else None)
        obj = store.get((ns, name or ""))
        if obj is None:
            return 404, _status(404, "NotFound", f'{resource} "{name}" not found')
        if method == "GET":
            status = self._deployment_status(name, obj) if kind == "Deployment" else None
            return 200, self._public(obj, status)
        if method == "DELETE":
            del store[(ns, name)]
            if kind == "Deployment":
                return 200, {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {"name": name, "kind": "deployments"},
                }
            return 200, self._public(obj)
        return 405, _status(405, "MethodNotAllowed", f"{method} not allowed")


def write_kubeconfig(path: Path, server: str, token: str = "test-token") -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": token}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "tester"}}],
            }
        )
    )
    return path
