"""Recommendations for known users, anonymous sessions, and similar items for product pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api.cached_similar import DEFAULT_K, similar_key
from api.deps import check_exclude, check_k, get_loaded, invalid, serving
from api.responses import json_response, to_response
from api.schemas import ErrorResponse, Item, RecommendationResponse, SessionRequest
from api.service import Loaded, Service
from recsys.catalogue import query_text
from recsys.pipeline import RecommendationList

router = APIRouter(prefix="/v1", tags=["recommendations"])
NOT_FOUND = {404: {"model": ErrorResponse, "description": "unknown user or item id"}}
K = Annotated[int, Query(ge=1, le=10_000, description="number of items to return")]
Exclude = Annotated[list[str], Query(description="item ids never to return (repeat the parameter)")]
Category = Annotated[str | None, Query(max_length=256, description="only items of this category")]
Brand = Annotated[str | None, Query(max_length=256, description="only items of this brand")]
Explain = Annotated[bool, Query(description="add the re-ranker's per-item feature contributions (slower)")]


def _where(category: str | list[str] | None, brand: str | list[str] | None) -> dict | None:
    where = {key: value for key, value in (("category", category), ("brand", brand)) if value is not None}
    return where or None


def _check_filters(loaded: Loaded, where: dict | None) -> None:
    attributes = loaded.recommender.index.attributes
    missing = [key for key in where or {} if attributes is None or key not in attributes.columns]
    if missing:
        raise invalid(f"this catalogue has no {', '.join(missing)} attribute to filter on", "query", missing[0])


@router.get("/users/{user_id}/recommendations", response_model=RecommendationResponse, responses=NOT_FOUND)
async def user_recommendations(
    user_id: Annotated[str, Path(max_length=256, description="user id")],
    request: Request,
    k: K = 10, exclude_seen: bool = True, exclude: Exclude = [],  # noqa: B006 (FastAPI query list)
    category: Category = None, brand: Brand = None, explain: Explain = False,
) -> Response:
    """Personalised list from the user's history (bundle history + events since), re-ranked when the
    bundle has a re-ranker. Unknown users get popular items (strategy `popular_fallback`) unless the
    service is configured to answer 404."""
    service, loaded = serving(request)
    check_k(k, service.settings)
    check_exclude(exclude, service.settings)
    where = _where(category, brand)
    _check_filters(loaded, where)
    history = service.history(loaded, user_id)
    if history:  # shares one recommend_batch with concurrent requests
        result = await loaded.recommend_batched(history, k, exclude_seen, exclude, where, explain=explain)
    else:
        result = await loaded.call(service.recommend_user, loaded, user_id, history, k, exclude_seen, exclude,
                                   where)  # unknown user: popular items (no tower work) or 404
    return json_response(to_response(loaded, result, history or []))


@router.post("/sessions/recommendations", response_model=RecommendationResponse, responses=NOT_FOUND)
async def session_recommendations(body: Annotated[SessionRequest, Body()], request: Request) -> Response:
    """For an anonymous session: the posted recent item ids (oldest first) and/or free text."""
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
    _check_filters(loaded, where)
    recommender = loaded.recommender
    if not body.text:
        recommender.check_items(body.item_ids)
        result = await loaded.recommend_batched(body.item_ids, body.k, body.exclude_seen, body.exclude, where,
                                                "session", body.explain)
        return json_response(to_response(loaded, result, body.item_ids))
    result = await run_in_threadpool(_text_session, service, loaded, body, where)
    return json_response(to_response(loaded, result, body.item_ids, text=body.text))


def _text_session(service: Service, loaded: Loaded, request: SessionRequest, where: dict | None) -> RecommendationList:
    """Free text (item tower) blended with the recent items (user tower): one query vector, re-ranked with
    the items as the history when the bundle has a re-ranker."""
    loaded.recommender.check_items(request.item_ids)
    text_vector = service.text_encoder(loaded).encode([query_text(loaded.recommender, request.text)])[0]
    return loaded.recommender.recommend_session(request.item_ids, request.k, request.exclude_seen, request.exclude,
                                                where, text_vector=text_vector, explain=request.explain)


@router.get("/items/{item_id}", response_model=Item, responses=NOT_FOUND)
async def item(item_id: Annotated[str, Path(max_length=256)], loaded: Annotated[Loaded, Depends(get_loaded)]) -> Item:
    """A catalogue item (for the product page itself)."""
    recommender = loaded.recommender
    recommender.check_items([item_id])
    record = recommender.item_records([item_id])[0]
    return Item(**{k: v for k, v in record.items() if k in Item.model_fields},
                active=recommender.index.is_active(item_id))


@router.get("/items/{item_id}/similar", response_model=RecommendationResponse, responses=NOT_FOUND)
async def similar_items(
    item_id: Annotated[str, Path(max_length=256, description="the product shown on the page")],
    request: Request,
    k: K = DEFAULT_K, exclude: Exclude = [],  # noqa: B006
    user_id: Annotated[str | None, Query(max_length=256, description="re-rank for this user")] = None,
    category: Category = None, brand: Brand = None, explain: Explain = False,
) -> Response:
    """Items closest to this one in the item tower's space; with `user_id`, the neighbours (seen items
    dropped) are re-ranked for the user as their next items after this one (by the re-ranker when the
    bundle has one, else by item similarity + similarity to the user's query vector)."""
    service, loaded = serving(request)
    check_k(k, service.settings)
    check_exclude(exclude, service.settings)
    where = _where(category, brand)
    _check_filters(loaded, where)
    if user_id is None and where is None:  # the same list for every visitor: serve the cached bytes
        key = similar_key(item_id, k, exclude, loaded.recommender.neighbours.version)
        body = loaded.similar_responses.get(key)  # (hits usually never get here: api.cached_similar answers them)
        if body is None:
            body = _similar(loaded, item_id, k, exclude, None).model_dump_json().encode()
            if loaded.similar_responses.maxsize:
                loaded.similar_responses[key] = body
        return Response(body, media_type="application/json")
    history = service.history(loaded, user_id) if user_id is not None else None
    if not history:  # a visitor without history: the item's neighbours
        return json_response(await loaded.call(_similar, loaded, item_id, k, exclude, where))
    loaded.recommender.check_items([item_id])
    result = await loaded.similar_batched(item_id, history, k, exclude, where, explain)
    return json_response(to_response(loaded, result, anchor=item_id))


def _similar(loaded: Loaded, item_id: str, k: int, exclude: list[str], where: dict | None) -> RecommendationResponse:
    return to_response(loaded, loaded.recommender.similar_items(item_id, k, exclude, where), anchor=item_id)
