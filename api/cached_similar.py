"""Similar-item responses served from the bundle's response cache before routing and parameter validation.

A similar-items list with no user and no filters is the same for every visitor, so the route keeps its
serialised response (`Loaded.similar_responses`, keyed by `similar_key`). The entry holds the catalogue version it
was computed at, the ids the list depends on (the anchor and the candidates it was picked from) and the last
candidate's similarity to the anchor, so the changes since leave it valid when they touch none of those ids (but
the anchor's stock), leave the anchor's vector alone and add, replace or activate no item that reaches that
similarity (`fresh_body`, `NeighbourCache.reaches`): a stock change or a new item elsewhere keeps it.
A request the route has already answered is answered here from those bytes: routing and FastAPI's parameter
handling cost more than the answer. Anything else (a miss, a user id, filters, an unexpected or malformed
parameter, an entry a change made stale) goes on to the app, which validates it."""

from __future__ import annotations

from collections.abc import Hashable, MutableMapping
from types import SimpleNamespace
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from api.path_ids import decode_id

PREFIX, SUFFIX = "/v1/items/", "/similar"
ROUTE = SimpleNamespace(path=PREFIX + "{item_id}" + SUFFIX)  # what the metrics label the request with
DEFAULT_K = 10  # the similar-items route's default k (it imports this)


def similar_key(item_id: str, k: int, exclude) -> Hashable:
    """The response-cache key of an unfiltered, user-less similar-items list."""
    return item_id, k, frozenset(exclude)


def similar_entry(state, depends_on: frozenset | None, floor: float | None, body: bytes) -> tuple:
    """A cached similar-items response computed at catalogue `state` (read before the list was): valid while no
    later change touches `depends_on` or gives the anchor a new vector, and no item a later change adds reaches
    `floor` (None: valid only at that version)."""
    return state.version, state.vectors_version, depends_on, floor, body


def fresh_body(cache: MutableMapping, key: Hashable, neighbours, state) -> bytes | None:
    """The cached response bytes at `key` when they still hold at catalogue `state` (the changes since touched no
    id the list depends on but the anchor's stock, left the anchor's vector alone and added no item that enters the
    list; the entry is then re-dated, so those changes are checked once), else None. `neighbours`: the
    recommender's `NeighbourCache` (its catalogue, and its scores for a change's items)."""
    entry = cache.get(key) if key is not None else None
    if entry is None:
        return None
    version, vectors_version, depends_on, floor, body = entry
    if version == state.version:
        return body
    if depends_on is None or floor is None:
        return None
    anchor = key[0]
    catalogue = neighbours.catalogue
    touched = catalogue.ids_touched_since(version, state.version)
    if touched is None:  # the change log no longer reaches back to the entry
        return None
    moved = catalogue.ids_changed_since(vectors_version, state.vectors_version)
    if moved is None or anchor in moved or not touched.isdisjoint(depends_on - {anchor}) or \
            neighbours.reaches(state, anchor, touched - {anchor}, floor):
        return None
    cache[key] = similar_entry(state, depends_on, floor, body)
    return body


def cached_request_key(path: str, query_string: bytes) -> Hashable | None:
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
    return similar_key(item_id, DEFAULT_K if k is None else k, exclude)


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
        neighbours = loaded.recommender.neighbours
        key = cached_request_key(scope["path"], scope.get("query_string", b""))
        return fresh_body(loaded.similar_responses, key, neighbours, neighbours.catalogue.state)
