"""Catalogue admin and bundle reload, behind a bearer token."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path
from starlette.concurrency import run_in_threadpool

from api.contract import ITEM_ATTRIBUTES, kept_upsert_fields
from api.deps import current, get_loaded, get_service, get_settings, invalid, require_admin
from api.errors import documented
from api.limits import ID_CHARS, VISIBLE
from api.schemas import ItemState, ItemUpsert, ReloadRequest, ReloadResponse
from api.service import Loaded, Service
from api.settings import Settings
from recsys.errors import BundleError

logger = logging.getLogger("recsys.api")
router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)],
                   responses=documented(401, 403, 422, 503))
ItemId = Annotated[str, Path(max_length=ID_CHARS, pattern=VISIBLE)]
BODY = documented(400, 413, 415)


@router.put("/items/{item_id:id}", response_model=ItemState, responses={**BODY, **documented(409)})
async def upsert_item(item_id: ItemId, item: Annotated[ItemUpsert, Body()],
                      loaded: Annotated[Loaded, Depends(get_loaded)],
                      service: Annotated[Service, Depends(get_service)],
                      settings: Annotated[Settings, Depends(get_settings)]) -> ItemState:
    """Add or replace an item: its fields go through the bundle's item-text template and item tower, the change
    is recorded in the event store and applied to every worker's live catalogue. The path names the item; a
    different `item_id` in the body is refused (409), and so (422) is a title, category, brand or price the
    catalogue could not keep (no such column, and the template does not render it)."""
    if item.item_id is not None and item.item_id != item_id:
        raise HTTPException(409, f"item_id in the body ({item.item_id[:60]!r}) differs from the path "
                                 f"({item_id[:60]!r})")
    if len(item.text) > settings.max_text_chars:
        raise invalid(f"text is {len(item.text)} characters; the limit is {settings.max_text_chars}", "body", "text")
    kept = kept_upsert_fields(loaded.recommender)
    unkept = [name for name in ITEM_ATTRIBUTES if getattr(item, name) is not None and name not in kept]
    if unkept:
        raise invalid(f"this catalogue has no {unkept[0]} attribute and its item-text template does not use one: its "
                      "items cannot keep it", "body", unkept[0])
    serving = await run_in_threadpool(service.upsert_item, loaded, {**item.model_dump(), "item_id": item_id})
    return _state(serving, item_id)


@router.post("/items/{item_id:id}/deactivate", response_model=ItemState, responses=documented(404))
async def deactivate_item(item_id: ItemId, loaded: Annotated[Loaded, Depends(get_loaded)],
                          service: Annotated[Service, Depends(get_service)]) -> ItemState:
    """Out of stock: never recommended until reactivated."""
    return _state(await run_in_threadpool(service.set_item_active, loaded, item_id, False), item_id)


@router.post("/items/{item_id:id}/activate", response_model=ItemState, responses=documented(404))
async def activate_item(item_id: ItemId, loaded: Annotated[Loaded, Depends(get_loaded)],
                        service: Annotated[Service, Depends(get_service)]) -> ItemState:
    """Back in stock."""
    return _state(await run_in_threadpool(service.set_item_active, loaded, item_id, True), item_id)


@router.delete("/items/{item_id:id}", response_model=ItemState, responses=documented(404))
async def delete_item(item_id: ItemId, loaded: Annotated[Loaded, Depends(get_loaded)],
                      service: Annotated[Service, Depends(get_service)]) -> ItemState:
    """Remove an item from the catalogue for good (not only deactivate it): never recommended, 404 on lookup.
    Deleted and replaced items leave tombstones that an index compaction reclaims (built aside and swapped in,
    without a pause in serving) once they are more than `RECSYS_COMPACT_SHARE` of the index."""
    return _state(await run_in_threadpool(service.delete_item, loaded, item_id), item_id, deleted=True)


def _state(loaded: Loaded, item_id: str, deleted: bool = False) -> ItemState:
    state = loaded.recommender.catalogue.state
    return ItemState(item_id=item_id, active=not deleted and state.is_active(item_id), index_items=state.n_available)


@router.post("/reload", response_model=ReloadResponse, responses={**BODY, **documented(409)})
async def reload(request: Annotated[ReloadRequest, Body()],
                 service: Annotated[Service, Depends(get_service)]) -> ReloadResponse:
    """Load a newer bundle under the bundle root and swap it in (every worker follows); in-flight requests finish
    on the old one. A corrupted or mismatched bundle, or one outside the root, is refused (409) and the current
    one keeps serving."""
    version = current(service).version  # (no reference kept: the replaced bundle is freed after its last request)
    try:
        new = await run_in_threadpool(service.reload, request.bundle)
    except BundleError as exc:
        logger.warning("reload refused: %s", exc)
        raise HTTPException(409, f"reload refused, still serving {version}: {exc}") from exc
    return ReloadResponse(model_version=new.version, previous_version=version)
