"""Application factory: the bundle is loaded in the lifespan and kept on app.state."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from api.cached_similar import CachedSimilarMiddleware
from api.metrics import BodyLimitMiddleware, MetricsMiddleware
from api.routes import admin, demo, events, health, recommendations
from api.service import Service
from api.settings import Settings
from recsys.errors import BundleError, UnknownIdError

DESCRIPTION = """Personalised, session and similar-item recommendations from a BERT-encoded catalogue.

Every list says which strategy served it (`personalised`, `session`, `similar`, `popular_fallback`)
and every item carries its score and a short reason. Admin routes need `Authorization: Bearer <token>`."""


def create_app(bundle: str | Path | None = None, settings: Settings | None = None,
               service: Service | None = None) -> FastAPI:
    """Build the app for `bundle` (or `settings.bundle` / RECSYS_BUNDLE)."""
    settings = settings or (service.settings if service else Settings())
    bundle = bundle or settings.bundle
    if bundle is None:
        raise BundleError("no bundle given: pass one to create_app() or set RECSYS_BUNDLE")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = service or Service(settings)
        app.state.service.load(bundle)
        gc.collect()
        gc.freeze()  # the loaded bundle is long-lived: keep it out of the collector's full passes (tail latency)
        syncing = asyncio.create_task(app.state.service.sync_forever())  # converge to the event store
        try:
            yield
        finally:
            syncing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await syncing
            app.state.service.close()
            gc.unfreeze()

    # /docs (Swagger UI) and /redoc with their JavaScript and CSS served from the fastapi-offline package, not a
    # CDN: shops run this in private networks
    app = FastAPIOffline(title="BERT recommender", version="1", lifespan=lifespan, description=DESCRIPTION)
    for router in (recommendations.router, events.router, health.router, admin.router, demo.router):  # hot first
        app.include_router(router)

    @app.exception_handler(BundleError)
    async def unavailable(_: Request, exc: BundleError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.exception_handler(UnknownIdError)
    async def unknown_id(_: Request, exc: UnknownIdError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    app.add_middleware(CachedSimilarMiddleware, source=app)  # innermost: the metrics still count its answers
    app.add_middleware(MetricsMiddleware, metrics_source=app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app
