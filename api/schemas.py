"""Request and response models (they shape the OpenAPI document)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema, model_validator

from api.errors import ErrorResponse  # noqa: F401 (the error body, documented on every route)
from api.limits import FILTER_VALUES, ID_CHARS, LIST_ITEMS, NAME_CHARS, TEXT_CHARS, VISIBLE
from recsys.event_log import LATEST_TIMESTAMP

Strategy = Literal["personalised", "session", "similar", "popular_fallback"]
Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_CHARS, pattern=VISIBLE)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=NAME_CHARS, pattern=VISIBLE)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=TEXT_CHARS, pattern=VISIBLE)]


def _whole(value: object) -> object:
    """JSON Schema counts 5.0 as an integer: so does the API (but not "5", true or 5.5)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Whole = Annotated[int, BeforeValidator(_whole)]


class Response(BaseModel):
    """Response bodies. Their `model_version` / `model_name` fields are named for the served model: pydantic before
    2.10 warned at import that they shadow its protected `model_` namespace (a UserWarning on every start at the
    declared floor), so the namespace is not protected here."""

    model_config = ConfigDict(protected_namespaces=())


class Strict(BaseModel):
    """Request bodies: unknown fields, type coercion ("5" for 5, "no" for false) and non-finite numbers are 422."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(description="retrieval similarity, or the re-ranker's score when the bundle has one; for "
                       "`popular_fallback` lists the item's popularity relative to the most popular item (0-1]")
    title: str | None = None
    text: str
    reason: str = Field(description="a short human-readable reason")
    because_item_id: str | None = Field(None, description="the item the reason names: the history item this one is "
                                                          "closest to, or a similar-items list's anchor")
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


class RecommendationResponse(Response):
    strategy: Strategy = Field(description="which path served the list")
    reranked: bool = Field(False, description="True when the LightGBM re-ranker ordered the list")
    model_version: str
    items: list[RecommendedItem]


class Filters(Strict):
    category: Name | Annotated[list[Name], Field(min_length=1, max_length=FILTER_VALUES)] | None = None
    brand: Name | Annotated[list[Name], Field(min_length=1, max_length=FILTER_VALUES)] | None = None


class SessionRequest(Strict):
    model_config = ConfigDict(json_schema_extra={
        "examples": [{"item_ids": ["P00001", "P00002"], "k": 10, "exclude_seen": True},
                     {"text": "waterproof hiking boots", "k": 5}],
        # at least one item id or a text (checked by `needs_items_or_text`)
        "anyOf": [{"required": ["item_ids"], "properties": {"item_ids": {"minItems": 1}}},
                  {"required": ["text"], "properties": {"text": {"type": "string"}}}]})

    item_ids: list[Id] = Field(default_factory=list, max_length=LIST_ITEMS, description="recent item ids, oldest first")
    text: Text | None = Field(None, description="optional free text, e.g. a search query")
    k: Whole = Field(10, ge=1, le=10_000)
    exclude_seen: bool = True
    exclude: list[Id] = Field(default_factory=list, max_length=LIST_ITEMS, description="item ids never to return")
    filters: Filters | None = None
    explain: bool = Field(False, description="add the re-ranker's per-item feature contributions (slower)")

    @model_validator(mode="after")
    def needs_items_or_text(self) -> "SessionRequest":
        if not self.item_ids and self.text is None:
            raise ValueError("post at least one item id or a text")
        return self


ISO_TIME = (r"^(197[1-9]|19[89]\d|[2-8]\d{3}|9[0-8]\d{2}|99[0-8]\d|999[0-8])-\d{2}-\d{2}[T ]\d{2}:\d{2}"
            r"(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$")
"""An ISO 8601 time with its offset, years 1971 to 9998: whatever its offset, its epoch seconds lie within the
range a number may give (0 to the end of 9999), so the schema's two forms take the same times."""
_ISO_TIME = re.compile(ISO_TIME)
_ISO_TIME_WITHOUT_OFFSET = re.compile(ISO_TIME.removesuffix(r"(Z|[+-]\d{2}:?\d{2})$") + "$")


def epoch_of_iso_time(value: object) -> object:
    """An ISO 8601 time with its offset ("2025-05-01T10:00:00+02:00", "…Z") as epoch seconds; other values as
    given (a number is checked as epoch seconds). ValueError for a text that is no such time, or a number past the
    year 9999 (one a millisecond clock gives says so)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > LATEST_TIMESTAMP:
        hint = ": this looks like milliseconds (divide by 1,000)" if value < LATEST_TIMESTAMP * 1_000 else ""
        raise ValueError(f"epoch seconds should be less than or equal to {LATEST_TIMESTAMP} (the end of the year "
                         f"9999){hint}")
    if not isinstance(value, str):
        return value
    if _ISO_TIME.fullmatch(value) is None:
        hint = (" (it needs its offset, +02:00 or Z for UTC: without one it could be any zone's)"
                if _ISO_TIME_WITHOUT_OFFSET.fullmatch(value) else "")
        raise ValueError("expected epoch seconds or an ISO 8601 time with its offset, from 1971 to 9998 "
                         f"(2025-05-01T10:00:00+02:00){hint}")
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError as exc:  # a day or hour that does not exist (2025-02-30)
        raise ValueError(f"not a time: {exc}") from None


EventTime = Annotated[float, BeforeValidator(epoch_of_iso_time), Field(ge=0, le=LATEST_TIMESTAMP), WithJsonSchema({
    "anyOf": [{"type": "number", "minimum": 0, "maximum": LATEST_TIMESTAMP},
              {"type": "string", "format": "date-time", "pattern": ISO_TIME}]})]
"""Epoch seconds, or an ISO 8601 time with its offset (stored as its epoch seconds)."""


class EventRequest(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"user_id": "U00001", "item_id": "P00001", "kind": "purchase"}]})

    user_id: Id
    item_id: Id
    kind: Literal["view", "cart", "purchase"] = "view"
    timestamp: EventTime | None = Field(None, description="epoch seconds (not milliseconds: at most the end of the "
                                        "year 9999), or an ISO 8601 time with its offset "
                                        "(2025-05-01T10:00:00+02:00, …Z); default: now")


class EventResponse(BaseModel):
    user_id: str
    events_stored: int


class ItemUpsert(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"item_id": "P09999", "text": "Lumora 50 mm f/1.8 lens. Lenses. Lumora.", "title": "Lumora 50 mm lens",
         "category": "Lenses", "brand": "Lumora", "price": 199.0}]})

    item_id: Id | None = Field(None, description="the path's item id (optional; a different one is refused)")
    text: Text = Field(description="the item's text; with a catalogue item-text template, what the item tower "
                       "encodes only when the template renders nothing from title / category / brand")
    title: Name | None = None
    category: Name | None = None
    brand: Name | None = None
    price: float | None = Field(None, ge=0)


class ItemRecord(ItemUpsert):
    item_id: Id = Field(description="the item's id")


class ItemChanges(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"upsert": [{"item_id": "P09999", "text": "Lumora 50 mm f/1.8 lens. Lenses. Lumora.", "price": 199.0}],
         "deactivate": ["P00012"], "activate": ["P00017"], "delete": ["P00003"]}]})

    upsert: list[ItemRecord] = Field(default_factory=list, max_length=LIST_ITEMS, description="items to add or "
                                     "replace, each as `PUT /v1/admin/items/{item_id}` takes it, with its item_id")
    activate: list[Id] = Field(default_factory=list, max_length=LIST_ITEMS, description="back in stock")
    deactivate: list[Id] = Field(default_factory=list, max_length=LIST_ITEMS, description="out of stock")
    delete: list[Id] = Field(default_factory=list, max_length=LIST_ITEMS, description="removed for good")


class ItemState(BaseModel):
    item_id: str
    active: bool = Field(description="served (in stock); false for an item deactivated or deleted")
    index_items: int = Field(description="items the index serves (the active ones) after the change")


class CatalogueIds(Response):
    model_version: str
    active: list[str] = Field(description="the ids of the items served (in stock)")
    inactive: list[str] = Field(description="the ids of the items known but out of stock")


class ItemsChanged(BaseModel):
    upserted: int
    unchanged: int = Field(description="of the upserts, those the catalogue already served as sent (text and "
                                       "attributes): nothing encoded or changed but their stock")
    activated: int
    deactivated: int
    deleted: int
    index_items: int = Field(description="items the index serves after the changes")
    items: list[ItemState] = Field(description="each item of the request once, after the changes, in the order it "
                                   "first appears (upsert, activate, deactivate, delete)")


class ReloadRequest(Strict):
    bundle: Annotated[str, StringConstraints(min_length=1, max_length=1_024, pattern=VISIBLE)] | None = Field(
        None, description="a bundle (or model) directory under the bundle root (RECSYS_BUNDLE_ROOT), relative to "
        "it; default: the newest version under the root")


class ReloadResponse(Response):
    model_version: str
    previous_version: str


class Health(BaseModel):
    status: Literal["ok"]
    bundle_version: str
    n_items: int
    n_users: int



class Live(BaseModel):
    status: Literal["ok"]
    worker: int = Field(description="the answering process's id")


class Ready(Response):
    status: Literal["ready"]
    model_version: str
    event_store: Literal["available", "unavailable"] = Field(
        description="whether the event store answered this worker's latest check (every RECSYS_SYNC_INTERVAL_MS); "
        "while it is unavailable, known-user lists, similar items for a user, events and catalogue edits answer 503 "
        "'retry shortly', and sessions, similar items and item pages keep serving")


class EncoderInfo(Response):
    kind: str | None = Field(None, description="frozen-bert, peft-bert, …")
    model_name: str | None = Field(None, description="the BERT it was built from (a name, never a path)")
    dim: int | None = None


class RankerInfo(BaseModel):
    trees: int = Field(description="LightGBM trees of the re-ranker")
    features: int = Field(description="features per candidate")
    statistics_through: str = Field(description="the last step whose events its statistics count: train (as it was "
                                    "trained), valid or test (`recsys refresh-stats`)")
    statistics_events: int = Field(description="events its statistics count")
    statistics_live_events: int = Field(0, description="of them, events read from the event store "
                                        "(`recsys refresh-stats --store`)")
    statistics_live_through_seq: int = Field(0, description="the event store's last event seq they count (0: none)")


class DiversifyInfo(BaseModel):
    weight: float = Field(description="MMR diversity weight (0: the ranked order)")
    duplicate_threshold: float | None = Field(description="near-duplicate cosine: items this close to one already "
                                              "in the list go behind the rest (null: off)")
    depth: int = Field(description="ranked candidates each list is picked from")


class ModelInfo(BaseModel):
    """What the served bundle is (its files and paths stay on the server)."""

    name: str
    version: str
    created_at: str | None = None
    bundle_schema_version: int | None = None
    encoder: EncoderInfo
    ranker: RankerInfo | None = Field(None, description="the re-ranker, when the bundle has one")
    diversify: DiversifyInfo | None = Field(None, description="how its lists are diversified (`recsys diversify` "
                                            "writes a version with another setting)")
    metrics: list[dict[str, str | int | float | bool | None]] = Field(
        default_factory=list, description="the build's evaluation rows (model, split, metric → value)")
