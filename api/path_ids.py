"""Ids in URL paths: `{item_id:id}` / `{user_id:id}` take every id the catalogue can hold.

Percent-encoded (`encodeURIComponent`, `quote(id, safe="")`), any id reaches its route: an encoded slash (`%2F`) is
part of the id, never a separator, so "a/similar" is `/v1/items/a%2Fsimilar` (the item) and
`/v1/items/a%2Fsimilar/similar` (its similar items). Starlette routes on the decoded path, where `%2F` and `/` are
the same character; `RoutingPaths` therefore re-derives the routing path from the raw one, decoding everything but
`%2F` and `%25`, which `IdConvertor` decodes inside the id.

Raw slashes are taken too ("kit/2" as `/v1/items/kit/2`), except before a segment that routes put after an id
("similar", "activate", …): `/v1/items/a/similar` is the similar items of "a", never the item "a/similar", and
`/v1/items/a/similar/` is not the item "a/similar/" (a trailing slash redirects to the route, as for any path)."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, unquote_to_bytes

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

ROUTE_SUFFIXES = ("similar", "activate", "deactivate", "recommendations")
"""The path segments routes put after an id: no raw slash in an id is followed by one of them."""
KEPT = re.compile(r"%(?:2[Ff]|25)")  # the escapes the routing path keeps: an encoded slash and an encoded '%'


def routing_path(scope: Scope) -> str:
    """The path routes match: the raw path decoded, except that `%2F` (an encoded slash) and `%25` (an encoded
    '%', and any '%' the decoding leaves) stay escaped, so an id's own slashes are told from the path's."""
    raw = scope.get("raw_path")
    try:
        text = raw.decode("utf-8") if raw is not None else None
    except UnicodeDecodeError:
        text = None
    if text is None:  # no raw path (an ASGI server may omit it): every slash separates, as Starlette routes
        return scope["path"].replace("%", "%25")
    if "%" not in text:
        return text
    pieces = KEPT.split(text)
    kept = ["%" + escape[1:].upper() for escape in KEPT.findall(text)]
    decoded = [unquote(piece).replace("%", "%25") for piece in pieces]
    return "".join(part for pair in zip(decoded, [*kept, ""]) for part in pair)


class RoutingPaths:
    """ASGI middleware (outermost): `scope["path"]` becomes `routing_path(scope)` for every later middleware and the
    router, so the routes, the metrics' route labels and the similar-items cache read one form of the path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not utf8_path(scope):
            await JSONResponse({"detail": f"invalid request: path: {NOT_UTF8}",
                                "errors": [{"loc": ["path"], "msg": NOT_UTF8, "type": "unicode_error"}]},
                               status_code=422)(scope, receive, send)
            return
        if scope["type"] in ("http", "websocket"):
            scope["path"] = routing_path(scope)
        await self.app(scope, receive, send)


NOT_UTF8 = "the path is not UTF-8 once percent-decoded: send an id's UTF-8 bytes, as encodeURIComponent writes them"


def utf8_path(scope: Scope) -> bool:
    """Whether the raw path, percent-decoded, is UTF-8. The server's decoding put U+FFFD for each byte that is not:
    `/v1/admin/items/%FF` and `/v1/admin/items/%FE` were both the item "\ufffd", the second upsert replacing the
    first."""
    raw = scope.get("raw_path")
    try:
        unquote_to_bytes(raw).decode("utf-8") if raw is not None else None
    except UnicodeDecodeError:
        return False
    return True


def decode_id(value: str) -> str:
    """An id as the routing path holds it (`%2F`, `%25` escaped) → the id."""
    return KEPT.sub(lambda escape: "/" if escape.group().upper() == "%2F" else "%", value)


class IdConvertor(Convertor[str]):
    """Starlette path convertor: one segment (any text, "similar" too), or several where no raw slash of the id is
    followed by a `ROUTE_SUFFIXES` segment (the lookahead starts after the id's own slash, never the route's)."""

    regex = "[^/]+|[^/]*(?:/(?!(?:" + "|".join(ROUTE_SUFFIXES) + ")(?:/|$))[^/]*)+"

    def convert(self, value: str) -> str:
        return decode_id(value)

    def to_string(self, value: str) -> str:
        return value.replace("%", "%25").replace("/", "%2F")


def trailing_slash_redirect(request: Request) -> RedirectResponse | None:
    """For a path no route has: a 307 to it without its trailing slashes when a route has that path (None
    otherwise). Its Location is the path alone, so the client keeps its own scheme and host (Starlette's
    `redirect_slashes` wrote an absolute `http://` URL behind a proxy that terminates TLS, and a client that
    followed it sent its POST body in clear); never `//…`, which a browser would take for another host."""
    scope = request.scope
    path = scope["path"].rstrip("/")
    if scope["type"] != "http" or path == scope["path"] or not path or path.startswith("//"):
        return None
    target = {**scope, "path": path}
    if not any(route.matches(target)[0] != Match.NONE for route in request.app.router.routes):
        return None
    query = scope.get("query_string", b"").decode("latin-1")
    return RedirectResponse(quote(path, safe="/%!$&'()*+,;=:@~") + (f"?{query}" if query else ""), 307)


register_url_convertor("id", IdConvertor())  # idempotent: the same convertor under the same name on every import
