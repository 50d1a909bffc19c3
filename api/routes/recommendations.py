"""Recommendations for known users, anonymous sessions, and similar items for product pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request, Response
from pydantic import StringConstraints

from api.cached_similar import DEFAULT_K, fresh_body, similar_entry, similar_key
from api.deps import check_exclude, check_k, invalid, serving, split_exclude
from api.errors import documented
from api.limits import EXCLUDE_VALUE_CHARS, FILTER_VALUES, ID_CHARS, NAME_CHARS, VISIBLE
from api.loaded import Loaded
from api.responses import json_response, to_response
from api.schemas import Item, RecommendationResponse, SessionRequest
from api.service import Service
from recsys.errors import UnknownIdError
from recsys.query import Query as RecommendationQuery

router = APIRouter(prefix="/v1", tags=["recommendations"])
NOT_FOUND = documented(404, 422, 503)
K = Annotated[int, Query(ge=1, le=10_000, description="number of items to return")]
ExcludeValue = Annotated[str, StringConstraints(min_length=1, max_length=EXCLUDE_VALUE_CHARS, pattern=VISIBLE)]
Exclude = Annotated[list[ExcludeValue], Query(description="item ids never to return (repeat the parameter, or "
                                                          "comma-separated)")]
FilterValue = Annotated[str, StringConstraints(max_length=NAME_CHARS, pattern=VISIBLE)]
Category = Annotated[list[FilterValue] | None, Query(max_length=FILTER_VALUES, description="only items of this "
                                                     "category (repeat the parameter for any of several)")]
Brand = Annotated[list[FilterValue] | None, Query(max_length=FILTER_VALUES, description="only items of this brand "
                                                  "(repeat the parameter for any of several)")]
Explain = Annotated[bool, Query(description="add the re-ranker's per-item feature contributions (slower)")]


def _where(category: str | list[str] | None, brand: str | list[str] | None) -> dict | None:
    """The filter of a query's or a body's values (one value as itself, several as a list)."""
    where = {key: value[0] if isinstance(value, list) and len(value) == 1 else value
             for key, value in (("category", category), ("brand", brand)) if value is not None}
    return where or None


def _check_filters(loaded: Loaded, where: dict | None, *loc: str) -> None:
    """422 for a filter on an attribute the catalogue lacks, located at `loc` + its name (default: the query)."""
    attributes = loaded.recommender.index.attributes
    missing = [key for key in where or {} if attributes is None or key not in attributes.columns]
    if missing:
        raise invalid(f"this catalogue has no {', '.join(missing)} attribute to filter on", *(loc or ("query",)),
                      missing[0])


def _query_options(service: Service, loaded: Loaded, k: int, exclude: list[str], category: str | list[str] | None,
                   brand: str | list[str] | None) -> tuple[list[str], dict | None]:
    """The GET routes' shared checks on `k`, `exclude` and the filters: (the ids to exclude, the filter)."""
    check_k(k, service.settings)
    exclude = split_exclude(exclude, loaded.recommender.item_position)
    check_exclude(exclude, service.settings)
    where = _where(category, brand)
    _check_filters(loaded, where)
    return exclude, where


@router.get("/users/{user_id:id}/recommendations", response_model=RecommendationResponse, responses=NOT_FOUND)
async def user_recommendations(
    user_id: Annotated[str, Path(max_length=ID_CHARS, pattern=VISIBLE, description="user id")],
    request: Request,
    k: K = 10, exclude_seen: bool = True, exclude: Exclude = [],  # noqa: B006 (FastAPI query list)
    category: Category = None, brand: Brand = None, explain: Explain = False,
) -> Response:
    """Personalised list from the user's history (bundle history + events since), re-ranked when the
    bundle has a re-ranker. Unknown users get popular items (strategy `popular_fallback`) unless the
    service is configured to answer 404."""
    service, loaded = serving(request)
    exclude, where = _query_options(service, loaded, k, exclude, category, brand)
    # a store whose reads can hang (Redis) is read in the thread pool: on the loop it would stall every request
    history, kinds = await service.read_store(service.history_and_kinds, loaded, user_id)
    if history is None and not service.settings.unknown_user_fallback:
        raise UnknownIdError("user", [user_id])
    query = RecommendationQuery(history or (), k=k, exclude_seen=exclude_seen, exclude=exclude, where=where,
                                explain=explain)
    return json_response(to_response(loaded, await loaded.recommend(query), history or [], event_kinds=kinds))


@router.post("/sessions/recommendations", response_model=RecommendationResponse,
             responses={**NOT_FOUND, **documented(400, 413, 415)})
async def session_recommendations(body: Annotated[SessionRequest, Body()], request: Request) -> Response:
    """For an anonymous session: the posted recent item ids (oldest first) and/or free text (the item tower,
    through the catalogue's item-text template, blended with the items' query vector)."""
    service, loaded = serving(request)
    settings = service.settings
    check_k(body.k, settings, "body", "k")
    check_exclude(body.exclude, settings, "body", "exclude")
    if len(body.item_ids) > settings.max_session_items:
        raise invalid(f"{len(body.item_ids)} item ids posted; the limit is {settings.max_session_items}",
                      "body", "item_ids")
    if not body.item_ids and not body.text:
        raise invalid("post at least one item id or a text", "body", "item_ids")
    if body.text and len(body.text) > settings.max_text_chars:
        raise invalid(f"text is {len(body.text)} characters; the limit is {settings.max_text_chars}", "body", "text")
    where = _where(body.filters.category, body.filters.brand) if body.filters else None
    _check_filters(loaded, where, "body", "filters")
    loaded.recommender.check_items(body.item_ids)
    query = RecommendationQuery(body.item_ids, text=body.text or None, k=body.k, exclude_seen=body.exclude_seen,
                                exclude=body.exclude, where=where, explain=body.explain, strategy="session")
    result = await loaded.recommend(query)
    return json_response(to_response(loaded, result, body.item_ids, text=body.text))


@router.get("/items/{item_id:id}", response_model=Item, responses=NOT_FOUND)
async def item(item_id: Annotated[str, Path(max_length=ID_CHARS, pattern=VISIBLE)], request: Request) -> Item:
    """A catalogue item (for the product page itself)."""
    _, loaded = serving(request)
    state = loaded.recommender.catalogue.state
    record = state.records_of([item_id])[0]
    return Item(**{k: v for k, v in record.items() if k in Item.model_fields}, active=state.is_active(item_id))


@router.get("/items/{item_id:id}/similar", response_model=RecommendationResponse, responses=NOT_FOUND)
async def similar_items(
    item_id: Annotated[str, Path(max_length=ID_CHARS, pattern=VISIBLE,
                                 description="the product shown on the page")],
    request: Request,
    k: K = DEFAULT_K, exclude: Exclude = [],  # noqa: B006
    user_id: Annotated[str | None, Query(max_length=ID_CHARS, pattern=VISIBLE,
                                         description="re-rank for this user")] = None,
    category: Category = None, brand: Brand = None, explain: Explain = False,
) -> Response:
    """Items closest to this one in the item tower's space; with `user_id`, the neighbours (seen items
    dropped) are re-ranked for the user as their next items after this one (by the re-ranker when the
    bundle has one, else by item similarity + similarity to the user's query vector)."""
    service, loaded = serving(request)
    exclude, where = _query_options(service, loaded, k, exclude, category, brand)
    loaded.recommender.check_items([item_id])
    history = await service.read_store(service.history, loaded, user_id) if user_id is not None else None
    query = RecommendationQuery(history or (), item_id=item_id, k=k, exclude=exclude, where=where, explain=explain)
    if user_id is not None or where is not None:
        return json_response(to_response(loaded, await loaded.recommend(query), anchor=item_id))
    # the same list for every visitor: serve the cached bytes (see api.cached_similar)
    neighbours = loaded.recommender.neighbours
    state = neighbours.catalogue.state  # read before the list is: the entry is dated at this version
    key = similar_key(item_id, k, exclude)
    body = fresh_body(loaded.similar_responses, key, neighbours, state)  # (hits usually never reach here)
    if body is None:
        result = await loaded.recommend(query)
        body = to_response(loaded, result, anchor=item_id).model_dump_json().encode()
        if loaded.similar_responses.maxsize:
            loaded.similar_responses[key] = similar_entry(state, result.depends_on, result.floor, body)
    return Response(body, media_type="application/json")
