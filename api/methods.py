"""HEAD on every GET route: load balancers, uptime checks and `curl -I` probe with it (FastAPI's routes list only the
methods they declare, so HEAD /health/ready answered 405 and a HEAD health check took the service for down)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    """ASGI middleware (innermost, right before the router): a HEAD request is routed and answered as a GET whose
    body is dropped (status and headers, Content-Length included, stay the GET's). The request's own scope keeps
    saying HEAD, so the server and the metrics count it as HEAD; a path with no GET route answers 405 with its Allow
    header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        inner = {**scope, "method": "GET"}  # a copy: the server reads the request's method off its own scope (uvicorn
        try:  # expects no body for HEAD, and a full one for GET)
            await self.app(inner, receive, headers_only)
        finally:  # what routing left in the scope (the route, for the metrics' label), with the method still HEAD
            scope.update({key: value for key, value in inner.items() if key != "method"})
