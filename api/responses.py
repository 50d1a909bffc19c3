"""Turning pipeline results into API responses, with a short reason per item."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastapi import Response
from pydantic import BaseModel

from api.loaded import Loaded
from api.schemas import RecommendationResponse, RecommendedItem
from recsys.explain import closest_history_items
from recsys.pipeline import RecommendationList


REASONS = {"view": "because you viewed {}", "cart": "because you added {} to your cart",
           "purchase": "because you bought {}"}


def _name(record: dict) -> str:
    return record.get("title") or record["text"][:60]


def _because(name: str, kind: str | None, strategy: str) -> str:
    """What happened to the history item: viewed / added to the cart / bought (events posted to the API, or
    imported with their kind), viewed (a session's items), or just that it is in the user's history (an imported
    event without a kind, or of a kind other than these)."""
    if kind in REASONS:
        return REASONS[kind].format(name)
    return f"because you viewed {name}" if strategy == "session" else f"because of {name} in your history"


def to_response(loaded: Loaded, result: RecommendationList, history: Sequence[str] = (),
                anchor: str | None = None, text: str | None = None,
                event_kinds: Mapping[str, str] | None = None) -> RecommendationResponse:
    """`history` explains personalised/session lists (`event_kinds`: the kind of the user's latest event on its
    items, for the reason's verb, read from the store beforehand: this runs on the event loop), `anchor`
    similar-item lists, `text` text queries (with history items too: the items the text is closer to than to any
    history item, `RecommendationList.text_matches`). Popular-fallback items get the share of the top item's count as
    `score` and their count as `popularity`."""
    recommender = loaded.recommender
    state = recommender.catalogue.state  # one version of the catalogue for the whole response
    records = [state.record(i) for i in result.item_ids]  # None: deleted since the list was computed
    explanations = result.explanations or [None] * len(records)
    if result.strategy in ("personalised", "session") and history:
        fallback_because = closest_history_items(state.vectors, state.position, history, result.item_ids)
    else:
        fallback_because = [None] * len(records)
    anchor_record = state.record(anchor) if anchor is not None else None
    anchor_name = _name(anchor_record) if anchor_record is not None else None
    names = {i: _name(r) for i, r in zip(result.item_ids, records) if r is not None}
    kinds = event_kinds or {}
    popular = result.strategy == "popular_fallback"
    counts = recommender.popularity.counts_of(result.item_ids) if popular else [None] * len(records)
    text_matches = result.text_matches or [False] * len(records)
    items = []
    for record, score, explanation, because, count, matched in zip(records, result.scores, explanations,
                                                                   fallback_because, counts, text_matches):
        if record is None:
            continue
        explanation = explanation or {}
        because = None if matched and text else explanation.get("because_item_id") or because
        features = {f["name"]: float(f["contribution"]) for f in explanation.get("top_features") or []} or None
        if result.strategy == "popular_fallback":
            reason = "popular in the shop"
        elif result.strategy == "similar" and anchor_name is not None:
            reason, because = f"similar to {anchor_name}", anchor  # the item the reason names
        elif because is not None and because in state.position:
            name = names.get(because) or _name(state.record(because))
            reason = _because(name, kinds.get(because), result.strategy)
        elif text:
            reason = f"matches “{text[:60]}”"
        else:
            reason = "close to your recent items"
        items.append(RecommendedItem(item_id=record["item_id"], score=score, title=record.get("title"),
                                     text=record["text"], reason=reason, because_item_id=because,
                                     top_features=features, popularity=count))
    return RecommendationResponse(strategy=result.strategy, reranked=result.reranked, model_version=loaded.version,
                                  items=items)


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """The model serialised once by pydantic-core (the route's `response_model` still documents it;
    returning a Response skips FastAPI's second validation pass over a model built by our own code)."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")
