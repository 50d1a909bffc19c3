"""Service settings from the environment (prefix RECSYS_) or explicit arguments."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSYS_", frozen=True)

    bundle: Path | None = Field(None, description="bundle directory (or model directory: newest version)")
    max_k: int = Field(100, ge=1, le=10_000, description="largest k a request may ask for")
    max_session_items: int = Field(200, ge=1, description="most item ids a session request may post")
    unknown_user_fallback: bool = Field(True, description="unknown users get popular items instead of a 404")
