"""Liveness, readiness, model information and Prometheus metrics."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from api.deps import get_loaded, get_service
from api.schemas import Health
from api.loaded import Loaded
from api.service import Service

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(loaded: Annotated[Loaded, Depends(get_loaded)]) -> Health:
    recommender = loaded.recommender
    return Health(status="ok", bundle_version=loaded.version, n_items=recommender.index.n_available,
                  n_users=len(recommender.histories))


@router.get("/health/live")
def live() -> dict:
    """The process answers (`worker`: its process id, to tell the workers of `recsys serve --workers N` apart)."""
    return {"status": "ok", "worker": os.getpid()}


@router.get("/health/ready", responses={503: {"description": "no bundle loaded"}})
def ready(loaded: Annotated[Loaded, Depends(get_loaded)]) -> dict:
    """A bundle is loaded and serving."""
    return {"status": "ready", "model_version": loaded.version}


@router.get("/v1/model")
def model_info(loaded: Annotated[Loaded, Depends(get_loaded)]) -> dict:
    """The bundle's manifest (without the file checksum list)."""
    return {k: v for k, v in loaded.manifest.items() if k != "files"}


@router.get("/metrics", include_in_schema=False)
def metrics(service: Annotated[Service, Depends(get_service)]) -> Response:
    return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")
