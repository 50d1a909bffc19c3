"""Request and response models (they shape the OpenAPI document)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Strategy = Literal["personalised", "session", "similar", "popular_fallback"]
Id = Field(min_length=1, max_length=256)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(description="retrieval similarity, or the re-ranker's score when the bundle has one; for "
                       "`popular_fallback` lists the item's popularity relative to the most popular item (0-1]")
    title: str | None = None
    text: str
    reason: str = Field(description="a short human-readable reason")
    because_item_id: str | None = Field(None, description="the history item this one is closest to")
    top_features: dict[str, float] | None = Field(None, description="re-ranker feature contributions")
    popularity: int | None = Field(None, description="`popular_fallback` lists: the item's interaction count in "
                                                     "the training data")


class Item(BaseModel):
    item_id: str
    text: str
    title: str | None = None
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    active: bool


class RecommendationResponse(BaseModel):
    strategy: Strategy = Field(description="which path served the list")
    reranked: bool = Field(False, description="True when the LightGBM re-ranker ordered the list")
    model_version: str
    items: list[RecommendedItem]


class Filters(Strict):
    category: str | list[str] | None = None
    brand: str | list[str] | None = None


class SessionRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"item_ids": ["P00001", "P00002"], "k": 10, "exclude_seen": True},
        {"item_ids": [], "text": "waterproof hiking boots", "k": 5}]})

    item_ids: list[str] = Field(default_factory=list, description="recent item ids, oldest first")
    text: str | None = Field(None, min_length=1, description="optional free text, e.g. a search query")
    k: int = Field(10, ge=1, le=10_000)
    exclude_seen: bool = True
    exclude: list[str] = Field(default_factory=list, description="item ids never to return")
    filters: Filters | None = None
    explain: bool = Field(False, description="add the re-ranker's per-item feature contributions (slower)")


class EventRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"user_id": "U00001", "item_id": "P00001", "kind": "purchase"}]})

    user_id: str = Id
    item_id: str = Id
    kind: Literal["view", "cart", "purchase"] = "view"
    timestamp: float | None = Field(None, ge=0, description="epoch seconds; default: now")


class EventResponse(BaseModel):
    user_id: str
    events_stored: int


class ItemUpsert(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"item_id": "P09999", "text": "Lumora 50 mm f/1.8 lens. Lenses. Lumora.", "title": "Lumora 50 mm lens",
         "category": "Lenses", "brand": "Lumora", "price": 199.0}]})

    item_id: str = Id
    text: str = Field(min_length=1, description="the text the item tower encodes")
    title: str | None = None
    category: str | None = None
    brand: str | None = None
    price: float | None = Field(None, ge=0)


class ItemState(BaseModel):
    item_id: str
    active: bool
    index_items: int


class ReloadRequest(Strict):
    bundle: str | None = Field(None, description="bundle directory; default: newest version of the current model")


class ReloadResponse(BaseModel):
    model_version: str
    previous_version: str


class Health(BaseModel):
    status: Literal["ok"]
    bundle_version: str
    n_items: int
    n_users: int


class ErrorResponse(BaseModel):
    detail: str
