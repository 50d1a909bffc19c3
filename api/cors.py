"""Cross-origin requests from shops' pages (opt-in, `RECSYS_CORS_ORIGINS`): Starlette's CORSMiddleware for the public
routes under /v1/ only.

Admin routes get no CORS headers: their bearer token belongs in a server, never in a page's JavaScript. Neither do
the health, metrics and documentation routes (probes and people, not pages) nor an origin that is not allowed. A
preflight the middleware would refuse (an origin, method or header not allowed) is answered as without CORS, by the
app (405 in the one error shape, with `Allow`), not with Starlette's plain-text 400."""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PUBLIC_PREFIX = "/v1/"
ADMIN_PREFIX = "/v1/admin"
METHODS = ("GET", "HEAD", "POST")  # the public routes' methods (POST: sessions and events)
EXPOSED = ("Retry-After",)  # a 503's advice, which page scripts cannot read unless exposed


def cors_path(path: str) -> bool:
    """Whether a path (the routing path) is one of the public routes CORS is for."""
    return path.startswith(PUBLIC_PREFIX) and not (path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"))


class PublicCORS(CORSMiddleware):
    """CORSMiddleware with the rules of the module docstring; `origins`: exact origins, or "*" for any."""

    def __init__(self, app: ASGIApp, origins: Collection[str]) -> None:
        super().__init__(app, allow_origins=tuple(origins), allow_methods=METHODS, allow_headers=("Content-Type",),
                         expose_headers=EXPOSED)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not cors_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["method"] == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers:
            response = self.preflight_response(request_headers=headers)
            if response.status_code == 200:
                await response(scope, receive, send)
            else:  # refused: as without CORS
                await self.app(scope, receive, send)
            return
        await self.simple_response(scope, receive, send, request_headers=headers)

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        origin = request_headers.get("origin")
        if message["type"] == "http.response.start" and origin is not None and not self.is_allowed_origin(origin):
            headers = MutableHeaders(scope=message)  # no Access-Control-* header, but the answer varies by origin
            headers["Vary"] = ", ".join([*headers.getlist("Vary"), "Origin"])
            await send(message)
            return
        await super().send(message, send, request_headers)
