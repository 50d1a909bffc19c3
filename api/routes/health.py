"""Liveness, readiness, model information and Prometheus metrics."""

from __future__ import annotations

import os
from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from api.deps import get_loaded, get_service
from api.errors import documented
from api.loaded import Loaded
from api.schemas import DiversifyInfo, EncoderInfo, Health, Live, ModelInfo, RankerInfo, Ready
from api.service import Service

router = APIRouter(tags=["health"])
UNAVAILABLE = documented(503)


@router.get("/health", response_model=Health, responses=UNAVAILABLE)
async def health(loaded: Annotated[Loaded, Depends(get_loaded)]) -> Health:
    recommender = loaded.recommender
    return Health(status="ok", bundle_version=loaded.version, n_items=recommender.index.n_available,
                  n_users=len(recommender.histories))


@router.get("/health/live", response_model=Live)
async def live() -> Live:
    """The process answers (`worker`: its process id, to tell the workers of `recsys serve --workers N` apart).
    The health routes run on the event loop, not in the thread pool, which requests waiting on a hung event store
    can fill."""
    return Live(status="ok", worker=os.getpid())


@router.get("/health/ready", response_model=Ready, responses=UNAVAILABLE)
async def ready(loaded: Annotated[Loaded, Depends(get_loaded)],
          service: Annotated[Service, Depends(get_service)]) -> Ready:
    """A bundle is loaded and serving (503 before that). `event_store` says whether the event store answers; an
    unavailable one is reported (and logged when it goes and comes back), but the answer stays 200."""
    # Why 200 with the store down: the store is shared by every worker (SQLite on a machine, Redis across replicas),
    # so it fails for all of them at once, and a 503 here would take every replica out of the load balancer
    # together. That would turn an outage of what needs the store (known users' lists, events, edits: they answer
    # 503 + Retry-After themselves and recover on their own) into an outage of everything, sessions, similar items
    # and item pages included, which serve from the bundle alone. Alert on `event_store` / recsys_event_store_up.
    return Ready(status="ready", model_version=loaded.version,
                 event_store="available" if service.store_available else "unavailable")


@router.get("/v1/model", response_model=ModelInfo, responses=UNAVAILABLE)
def model_info(loaded: Annotated[Loaded, Depends(get_loaded)]) -> ModelInfo:
    """The served bundle: name, version, when it was built, its encoder, its re-ranker (and how far its statistics
    count) and its evaluation metrics."""
    manifest = loaded.manifest
    encoder = manifest.get("encoder") or {}
    scalar = (str, int, float, bool, type(None))
    reranker = loaded.recommender.reranker
    ranker = None if reranker is None else RankerInfo(
        trees=reranker.ranker.n_trees, features=len(reranker.builder.names),
        statistics_through=reranker.stats.config.through, statistics_events=reranker.stats.events(),
        statistics_live_events=reranker.stats.config.live_events,
        statistics_live_through_seq=reranker.stats.config.live_through_seq)
    return ModelInfo(
        name=str(loaded.bundle.name), version=loaded.version,
        created_at=manifest.get("created_at"), bundle_schema_version=manifest.get("bundle_schema_version"),
        encoder=EncoderInfo(kind=encoder.get("kind"), dim=encoder.get("dim"),
                            model_name=_model_name(encoder.get("model_name"))), ranker=ranker,
        diversify=DiversifyInfo(**loaded.recommender.config.diversify.model_dump()),
        metrics=[{k: v for k, v in row.items() if isinstance(v, scalar)}
                 for row in manifest.get("metrics") or [] if isinstance(row, dict)])


def _model_name(name: str | None) -> str | None:
    """A hub name as it is; a local model directory by its last component (never the path)."""
    if not name:
        return None
    return PurePath(name).name if PurePath(name).is_absolute() or name.startswith((".", "~")) else name


@router.get("/metrics", include_in_schema=False)
def metrics(service: Annotated[Service, Depends(get_service)]) -> Response:
    return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")
