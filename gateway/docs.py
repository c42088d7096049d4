"""`/docs`: an interactive page over `/openapi.json` (Swagger UI), with a link to the WebSocket
protocol (`/asyncapi.json`) and the gRPC service.

The page and its assets are served by the gateway itself from the `openapi-ui-bundles`
package (Swagger UI 5, Apache-2.0): no CDN, so it works offline and behind a strict egress
policy, and the validator badge (which would call an outside service) is off.
"""

from __future__ import annotations

from typing import Any

from openapi_ui_bundles import swagger_ui
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["ASSETS", "docs_routes"]

#: Where the page's scripts and styles are served.
ASSETS = "/docs/assets"

_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sessiond API</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
<style>body{{margin:0}} .links{{font:14px system-ui;padding:.6em 1.2em;background:#fafafa}}</style>
</head><body>
<div class="links">REST and SSE below (<a href="/openapi.json">/openapi.json</a>, OpenAPI 3.1);
WebSocket <code>/ws</code>: <a href="/asyncapi.json">/asyncapi.json</a> (AsyncAPI 3);
gRPC: <code>sessiond.v1.SessionService</code> (server reflection on, see the README).</div>
<div id="ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#ui", validatorUrl: null,
  deepLinking: true, persistAuthorization: true}});
</script>
</body></html>"""


def _page(request: Request) -> HTMLResponse:
    return HTMLResponse(_PAGE)


def docs_routes() -> list[Any]:
    return [
        Route("/docs", _page),
        Mount(ASSETS, app=StaticFiles(directory=swagger_ui.static_path), name="docs-assets"),
    ]
