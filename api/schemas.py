"""Request and response models (they shape the OpenAPI document)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Strategy = Literal["personalised", "session", "similar", "popular_fallback"]


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    title: str | None = None
    text: str


class RecommendationResponse(BaseModel):
    strategy: Strategy = Field(description="which path served the list")
    items: list[RecommendedItem]


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"item_ids": ["B0000223SI", "B0000223SK"], "k": 10, "exclude_seen": True}]})

    item_ids: list[str] = Field(min_length=1, description="the session's recent item ids, oldest first")
    k: int = Field(10, ge=1, le=10_000)
    exclude_seen: bool = True


class Health(BaseModel):
    status: Literal["ok"]
    bundle_version: str
    n_items: int
    n_users: int


class ErrorResponse(BaseModel):
    detail: str
