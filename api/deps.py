"""Dependencies: the service lives on app.state (never in globals) and reaches routes here."""

from __future__ import annotations

import secrets
from collections.abc import Container
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.loaded import Loaded
from api.service import Service
from api.settings import Settings

bearer = HTTPBearer(auto_error=False, description="admin token (RECSYS_ADMIN_TOKEN)")


async def get_service(request: Request) -> Service:
    return request.app.state.service


async def get_loaded(service: Annotated[Service, Depends(get_service)]) -> Loaded:
    """The bundle serving this request (a reload mid-request does not change it)."""
    return current(service)


def current(service: Service) -> Loaded:
    """The loaded bundle, or 503 before the first load."""
    loaded = service.current
    if loaded is None:
        raise HTTPException(503, "no model loaded yet")
    return loaded


def serving(request: Request) -> tuple[Service, Loaded]:
    """Service and bundle for the hot recommendation routes, read straight off app.state: the same as
    the `get_service`/`get_loaded` dependencies without their per-request resolution cost. Checks the event
    store for catalogue changes at most every `sync_interval_ms` (see `Service.poll_if_due`)."""
    service = request.app.state.service
    service.poll_if_due()
    return service, current(service)


async def get_settings(service: Annotated[Service, Depends(get_service)]) -> Settings:
    return service.settings


def invalid(message: str, *loc: str | int) -> RequestValidationError:
    """A 422 like the models' own validation errors (the same `ErrorResponse` body)."""
    return RequestValidationError([{"type": "value_error", "loc": tuple(loc), "msg": message}])


def check_k(k: int, settings: Settings, *loc: str) -> None:
    if k > settings.max_k:
        raise invalid(f"k={k} is above the limit of {settings.max_k}", *(loc or ("query", "k")))


def split_exclude(exclude: list[str], known: Container[str]) -> list[str]:
    """A query's `exclude` values, each `a,b,c` that is not itself a `known` item id split on its commas (clients
    often send one comma-separated value instead of repeating the parameter; ignoring it would return the very
    items meant to be left out)."""
    if not any("," in value for value in exclude):
        return exclude
    ids: list[str] = []
    for value in exclude:
        if "," in value and value not in known:
            ids += [part.strip() for part in value.split(",") if part.strip()]
        else:
            ids.append(value)
    return ids


def check_exclude(exclude: list[str], settings: Settings, *loc: str) -> None:
    if len(exclude) > settings.max_exclude_items:
        raise invalid(f"{len(exclude)} ids to exclude; the limit is {settings.max_exclude_items}",
                      *(loc or ("query", "exclude")))


async def require_admin(settings: Annotated[Settings, Depends(get_settings)],
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """Bearer token check; admin routes are closed (403) when no token (or an empty one) is configured."""
    if not settings.admin_enabled:
        raise HTTPException(403, "admin routes are disabled: set RECSYS_ADMIN_TOKEN to enable them")
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(credentials.credentials.encode(), settings.admin_token.get_secret_value().encode()):
        raise HTTPException(401, "wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
