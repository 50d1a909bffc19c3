"""Turning pipeline results into API responses, with a short reason per item."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Response
from pydantic import BaseModel

from api.schemas import RecommendationResponse, RecommendedItem
from api.loaded import Loaded
from recsys.explain import closest_history_items
from recsys.pipeline import RecommendationList


def _name(record: dict) -> str:
    return record.get("title") or record["text"][:60]


def to_response(loaded: Loaded, result: RecommendationList, history: Sequence[str] = (),
                anchor: str | None = None, text: str | None = None) -> RecommendationResponse:
    """`history` explains personalised/session lists, `anchor` similar-item lists, `text` text queries."""
    state = loaded.recommender.catalogue.state  # one version of the catalogue for the whole response
    records = [state.record(i) for i in result.item_ids]  # None: deleted since the list was computed
    explanations = result.explanations or [None] * len(records)
    if result.strategy in ("personalised", "session") and history:
        fallback_because = closest_history_items(state.vectors, state.position, history, result.item_ids)
    else:
        fallback_because = [None] * len(records)
    anchor_record = state.record(anchor) if anchor is not None else None
    anchor_name = _name(anchor_record) if anchor_record is not None else None
    names = {i: _name(r) for i, r in zip(result.item_ids, records) if r is not None}
    items = []
    for record, score, explanation, because in zip(records, result.scores, explanations, fallback_because):
        if record is None:
            continue
        explanation = explanation or {}
        because = explanation.get("because_item_id") or because
        features = {f["name"]: float(f["contribution"]) for f in explanation.get("top_features") or []} or None
        if result.strategy == "popular_fallback":
            reason = "popular in the shop"
        elif result.strategy == "similar" and anchor_name is not None:
            reason = f"similar to {anchor_name}"
        elif because is not None and because in state.position:
            name = names.get(because) or _name(state.record(because))
            reason = f"because you viewed {name}"
        elif text:
            reason = f"matches “{text[:60]}”"
        else:
            reason = "close to your recent items"
        items.append(RecommendedItem(item_id=record["item_id"], score=score, title=record.get("title"),
                                     text=record["text"], reason=reason, because_item_id=because,
                                     top_features=features))
    return RecommendationResponse(strategy=result.strategy, reranked=result.reranked, model_version=loaded.version,
                                  items=items)


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """The model serialised once by pydantic-core (the route's `response_model` still documents it;
    returning a Response skips FastAPI's second validation pass over a model built by our own code)."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")
