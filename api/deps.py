"""Dependencies: the loaded recommender and settings live on app.state, never in globals."""

from __future__ import annotations

from fastapi import HTTPException, Request

from api.settings import Settings
from recsys.pipeline import Recommender


def get_recommender(request: Request) -> Recommender:
    return request.app.state.recommender


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def check_k(k: int, settings: Settings) -> None:
    if k > settings.max_k:
        raise HTTPException(status_code=422, detail=f"k={k} is above the limit of {settings.max_k}")
