"""Liveness and model information."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from api.deps import get_recommender
from api.schemas import Health
from recsys.pipeline import Recommender

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(request: Request, recommender: Annotated[Recommender, Depends(get_recommender)]) -> Health:
    return Health(status="ok", bundle_version=request.app.state.bundle_path.name,
                  n_items=len(recommender.item_ids), n_users=len(recommender.histories))


@router.get("/v1/model")
def model_info(request: Request) -> dict:
    """The bundle's manifest (without the file checksum list)."""
    return {k: v for k, v in request.app.state.manifest.items() if k != "files"}
