"""Application factory: the bundle is loaded in the lifespan and kept on app.state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.routes import health, recommendations
from api.settings import Settings
from recsys.artifacts import read_manifest, resolve_bundle
from recsys.errors import BundleError, UnknownIdError
from recsys.pipeline import Recommender


def create_app(bundle: str | Path | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the app for `bundle` (or `settings.bundle` / RECSYS_BUNDLE)."""
    settings = settings or Settings()
    bundle = bundle or settings.bundle
    if bundle is None:
        raise BundleError("no bundle given: pass one to create_app() or set RECSYS_BUNDLE")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        path = resolve_bundle(bundle)
        app.state.manifest = read_manifest(path)
        app.state.recommender = Recommender.load(path, verify=False)  # verified just above
        app.state.bundle_path = path
        app.state.settings = settings
        yield

    app = FastAPI(title="BERT recommender", version="1", lifespan=lifespan,
                  description="Personalised, session and similar-item recommendations from a BERT-encoded catalogue.")
    app.include_router(health.router)
    app.include_router(recommendations.router)

    @app.exception_handler(UnknownIdError)
    async def unknown_id(_: Request, exc: UnknownIdError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    return app
