"""Similar-item responses served from the bundle's response cache before routing and parameter validation.

A similar-items list with no user and no filters is the same for every visitor, so the route keeps its
serialised response (`Loaded.similar_responses`, keyed by `similar_key`). The key holds the catalogue's additions
version (an upsert or an activation may put a new item in any list); the entry holds the catalogue version it was
computed at and the ids the list depends on (the anchor and the candidates it was picked from), so a deactivation
or a deletion elsewhere leaves it valid (`fresh_body`). A request the route has already answered is answered here
from those bytes: routing and FastAPI's parameter handling cost more than the answer. Anything else (a miss, a user
id, filters, an unexpected or malformed parameter, an entry a change made stale) goes on to the app, which
validates it."""

from __future__ import annotations

from collections.abc import Hashable, MutableMapping
from types import SimpleNamespace
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from api.path_ids import decode_id

PREFIX, SUFFIX = "/v1/items/", "/similar"
ROUTE = SimpleNamespace(path=PREFIX + "{item_id}" + SUFFIX)  # what the metrics label the request with
DEFAULT_K = 10  # the similar-items route's default k (it imports this)


def similar_key(item_id: str, k: int, exclude, additions_version: int) -> Hashable:
    """The response-cache key of an unfiltered, user-less similar-items list."""
    return item_id, k, frozenset(exclude), additions_version


def similar_entry(version: int, depends_on: frozenset | None, body: bytes) -> tuple:
    """A cached similar-items response: computed at catalogue `version` (read before the list was), valid while no
    later change touches `depends_on` (None: only at that version)."""
    return version, depends_on, body


def fresh_body(cache: MutableMapping, key: Hashable, catalogue, state) -> bytes | None:
    """The cached response bytes at `key` (made with `state`'s additions version) when they hold for `catalogue`
    at `state` (none of the changes since touched an id the list depends on; the entry is then re-dated, so those
    changes are checked once), else None. One state read once gives both the key and `now`: a change between two
    reads could otherwise pair an old key with a newer version."""
    entry = cache.get(key) if key is not None else None
    if entry is None:
        return None
    version, depends_on, body = entry
    now = state.version
    if version == now:
        return body
    if depends_on is None:
        return None
    touched = catalogue.ids_touched_since(version, now)
    if touched is None or not touched.isdisjoint(depends_on) or key[0] in touched:  # key[0]: the anchor
        return None
    cache[key] = similar_entry(now, depends_on, body)
    return body


def cached_request_key(path: str, query_string: bytes, additions_version: int) -> Hashable | None:
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
    return similar_key(item_id, DEFAULT_K if k is None else k, exclude, additions_version)


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
        catalogue = loaded.recommender.catalogue
        state = catalogue.state
        key = cached_request_key(scope["path"], scope.get("query_string", b""), state.additions_version)
        return fresh_body(loaded.similar_responses, key, catalogue, state)
