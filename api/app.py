"""Application factory: the bundle is loaded in the lifespan and kept on app.state."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from api.cached_similar import CachedSimilarMiddleware
from api.cors import PublicCORS
from api.contract import (DeclaredQueryOnly, install_contract, kept_upsert_fields, settings_limits,
                          single_valued_body_keys)
from api.errors import install_error_handlers
from api.methods import HeadAsGet
from api.metrics import BodyLimitMiddleware, MetricsMiddleware
from api.path_ids import RoutingPaths
from api.routes import admin, demo, events, health, recommendations
from api.service import Service
from api.settings import Settings, load_settings
from recsys.errors import BundleError

DESCRIPTION = """Personalised, session and similar-item recommendations from a BERT-encoded catalogue.

Every list says which strategy served it (`personalised`, `session`, `similar`, `popular_fallback`)
and every item carries its score and a short reason. Admin routes need `Authorization: Bearer <token>`.
Every error answer has one shape, `{"detail": "…", "errors": [{"loc", "msg", "type"}, …]}` (`errors` lists each
invalid field of a 422); the limits stated here are the ones this server enforces."""


def create_app(bundle: str | Path | None = None, settings: Settings | None = None,
               service: Service | None = None, *, check_shop: bool = True) -> FastAPI:
    """Build the app for `bundle` (or `settings.bundle` / RECSYS_BUNDLE). Its start-up refuses an event store of
    another shop's catalogue (StoreError, `api.store_check`; `check_shop=False`: the caller checked it) and serves the
    bundle the latest recorded reload swapped in when it supersedes `bundle` (`Service.start`)."""
    settings = settings or (service.settings if service else load_settings())
    bundle = bundle or settings.bundle
    if bundle is None:
        raise BundleError("no bundle given: pass one to create_app() or set RECSYS_BUNDLE")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = service or Service(settings)
        try:
            app.state.service.start(bundle, check_shop=check_shop)
        except Exception:
            if service is None:  # (its event store: opened here, closed here)
                app.state.service.close()
            raise
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
    # redirect_slashes off: a trailing slash is redirected by the 404 handler, with a relative Location
    # (api.path_ids.trailing_slash_redirect)
    app = FastAPIOffline(title="BERT recommender", version="1", lifespan=lifespan, description=DESCRIPTION,
                         dependencies=[Depends(DeclaredQueryOnly()), Depends(single_valued_body_keys)],
                         redirect_slashes=False)
    for router in (recommendations.router, events.router, health.router, admin.router, demo.router):  # hot first
        app.include_router(router)

    def served() -> Service | None:
        return getattr(app.state, "service", None)

    def bundle_roots() -> list[Path]:
        root = served().bundle_root if served() is not None else None
        return [root] if root is not None else []

    def attributes() -> list[str] | None:
        loaded = served().current if served() is not None else None
        columns = loaded.recommender.index.attributes if loaded is not None else None
        return None if loaded is None else (list(columns.columns) if columns is not None else [])

    def kept() -> set[str] | None:
        loaded = served().current if served() is not None else None
        return None if loaded is None else kept_upsert_fields(loaded.recommender)

    install_error_handlers(app, settings.max_body_bytes, bundle_roots, settings_limits(settings))
    install_contract(app, settings, attributes, kept)
    app.add_middleware(HeadAsGet)  # innermost: HEAD routed as GET, its body dropped (api.methods)
    # body limit, 1: every body is counted while it is read, whatever its transfer encoding (chunked too): once
    # over the limit, reading stops and the request is answered 413 (through the error handlers above)
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=settings.max_body_bytes)
    app.add_middleware(CachedSimilarMiddleware, source=app)  # the metrics still count its answers
    app.add_middleware(MetricsMiddleware, metrics_source=app)
    # body limit, 2: a Content-Length over the limit is answered 413 before routing (outermost)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:  # pages of these origins may call the public routes (api.cors); off by default
        app.add_middleware(PublicCORS, origins=settings.cors_origins)
    # outermost: every middleware and the router read the path with an id's encoded slashes kept (api.path_ids)
    app.add_middleware(RoutingPaths)
    return app
