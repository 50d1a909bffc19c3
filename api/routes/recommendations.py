"""Recommendations for known users, anonymous sessions, and similar items for product pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query

from api.deps import check_k, get_recommender, get_settings
from api.schemas import ErrorResponse, RecommendationResponse, RecommendedItem, SessionRequest
from api.settings import Settings
from recsys.pipeline import RecommendationList, Recommender

router = APIRouter(prefix="/v1", tags=["recommendations"])
NOT_FOUND = {404: {"model": ErrorResponse, "description": "unknown user or item id"}}
K = Annotated[int, Query(ge=1, le=10_000, description="number of items to return")]


def to_response(recommender: Recommender, result: RecommendationList) -> RecommendationResponse:
    records = recommender.item_records(result.item_ids)
    return RecommendationResponse(strategy=result.strategy, items=[
        RecommendedItem(item_id=r["item_id"], score=s, title=r.get("title"), text=r["text"])
        for r, s in zip(records, result.scores)])


@router.get("/users/{user_id}/recommendations", response_model=RecommendationResponse, responses=NOT_FOUND)
def user_recommendations(
    user_id: Annotated[str, Path(description="known user id")],
    recommender: Annotated[Recommender, Depends(get_recommender)],
    settings: Annotated[Settings, Depends(get_settings)],
    k: K = 10,
    exclude_seen: bool = True,
) -> RecommendationResponse:
    """Personalised list from the user's stored history; unknown users get popular items
    (strategy `popular_fallback`) unless the service is configured to answer 404."""
    check_k(k, settings)
    result = recommender.recommend_user(user_id, k, exclude_seen=exclude_seen,
                                        fallback=settings.unknown_user_fallback)
    return to_response(recommender, result)


@router.post("/sessions/recommendations", response_model=RecommendationResponse, responses=NOT_FOUND)
def session_recommendations(
    request: Annotated[SessionRequest, Body()],
    recommender: Annotated[Recommender, Depends(get_recommender)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> RecommendationResponse:
    """For an anonymous session: the posted recent item ids (oldest first)."""
    check_k(request.k, settings)
    if len(request.item_ids) > settings.max_session_items:
        raise HTTPException(422, f"{len(request.item_ids)} item ids posted; the limit is {settings.max_session_items}")
    result = recommender.recommend_session(request.item_ids, request.k, exclude_seen=request.exclude_seen)
    return to_response(recommender, result)


@router.get("/items/{item_id}/similar", response_model=RecommendationResponse, responses=NOT_FOUND)
def similar_items(
    item_id: Annotated[str, Path(description="the product shown on the page")],
    recommender: Annotated[Recommender, Depends(get_recommender)],
    settings: Annotated[Settings, Depends(get_settings)],
    k: K = 10,
) -> RecommendationResponse:
    """Items closest to this one in the item tower's embedding space."""
    check_k(k, settings)
    return to_response(recommender, recommender.similar_items(item_id, k))
