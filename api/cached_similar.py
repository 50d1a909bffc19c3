"""Similar-item responses served from the bundle's response cache before routing and parameter validation.

A similar-items list with no user and no filters is the same for every visitor, so the route keeps its
serialised response (`Loaded.similar_responses`, keyed by `similar_key`, cleared in effect by any catalogue
change through the neighbour-cache version). A request the route has already answered is answered here
from those bytes: routing and FastAPI's parameter handling cost more than the answer. Anything else (a
miss, a user id, filters, an unexpected or malformed parameter) goes on to the app, which validates it."""

from __future__ import annotations

from collections.abc import Hashable
from types import SimpleNamespace
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from api.path_ids import decode_id

PREFIX, SUFFIX = "/v1/items/", "/similar"
ROUTE = SimpleNamespace(path=PREFIX + "{item_id}" + SUFFIX)  # what the metrics label the request with
DEFAULT_K = 10  # the similar-items route's default k (it imports this)


def similar_key(item_id: str, k: int, exclude, version: int) -> Hashable:
    """The response-cache key of an unfiltered, user-less similar-items list."""
    return item_id, k, frozenset(exclude), version


def cached_request_key(path: str, query_string: bytes, version: int) -> Hashable | None:
    """`similar_key` of a GET on the similar-items route whose only parameters are one `k` (digits) and any
    number of `exclude`; None for everything else. `path` is the routing path (`api.path_ids.routing_path`): an id
    with a raw slash goes to the route, one with an encoded slash (`%2F`) is decoded as the route decodes it."""
    if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
        return None
    item_id = path[len(PREFIX):-len(SUFFIX)]
    if not item_id or "/" in item_id:
        return None
    item_id = decode_id(item_id)
    k, exclude = None, []
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name == "exclude":
            exclude.append(value)
        elif name == "k" and k is None and value.isascii() and value.isdigit():
            k = int(value)
        else:
            return None
    return similar_key(item_id, DEFAULT_K if k is None else k, exclude, version)


class CachedSimilarMiddleware:
    """Answers cache hits of the similar-items route (see the module docstring); `source` is the FastAPI app,
    whose `state.service` exists after startup."""

    def __init__(self, app: ASGIApp, source) -> None:
        self.app = app
        self.source = source

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            body = self._cached(scope)
            if body is not None:
                scope["route"] = ROUTE
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", str(len(body)).encode()),
                                        (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _cached(self, scope: Scope) -> bytes | None:
        service = getattr(self.source.state, "service", None)
        loaded = service.current if service is not None else None
        if loaded is None or not loaded.similar_responses:
            return None
        key = cached_request_key(scope["path"], scope.get("query_string", b""), loaded.recommender.catalogue.version)
        return loaded.similar_responses.get(key) if key is not None else None
