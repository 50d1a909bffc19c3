"""HEAD on every GET route: load balancers, uptime checks and `curl -I` probe with it (FastAPI's routes list only the
methods they declare, so HEAD /health/ready answered 405 and a HEAD health check took the service for down)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    """ASGI middleware (innermost, right before the router): a HEAD request is routed and answered as a GET whose
    body is dropped (status and headers, Content-Length included, stay the GET's). The scope says HEAD again
    afterwards, so the metrics count it as HEAD; a path with no GET route answers 405 with its Allow header."""

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

        scope["method"] = "GET"
        try:
            await self.app(scope, receive, headers_only)
        finally:
            scope["method"] = "HEAD"
