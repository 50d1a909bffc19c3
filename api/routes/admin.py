"""Catalogue admin and bundle reload, behind a bearer token."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Response
from starlette.concurrency import run_in_threadpool

from api.contract import ITEM_ATTRIBUTES, kept_upsert_fields
from api.deps import current, get_loaded, get_service, get_settings, invalid, require_admin
from api.errors import documented
from api.limits import ID_CHARS, VISIBLE
from api.responses import json_response
from api.schemas import CatalogueIds, ItemChanges, ItemsChanged, ItemState, ItemUpsert, ReloadRequest, ReloadResponse
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
    _check_upsert(item, settings, kept_upsert_fields(loaded.recommender), "body")
    serving = await run_in_threadpool(service.upsert_item, loaded, {**item.model_dump(), "item_id": item_id})
    return _state(serving, item_id)


def _check_upsert(item: ItemUpsert, settings: Settings, kept: Collection[str], *loc: str | int) -> None:
    """422 for a text over the limit or an attribute the catalogue cannot keep (`loc`: where the item is)."""
    if len(item.text) > settings.max_text_chars:
        raise invalid(f"text is {len(item.text)} characters; the limit is {settings.max_text_chars}", *loc, "text")
    unkept = [name for name in ITEM_ATTRIBUTES if getattr(item, name) is not None and name not in kept]
    if unkept:
        raise invalid(f"this catalogue has no {unkept[0]} attribute and its item-text template does not use one: its "
                      "items cannot keep it", *loc, unkept[0])


CHANGE_LISTS = ("upsert", "activate", "deactivate", "delete")


def _check_each_once(ids: list[tuple[str, int, str]]) -> None:
    """409 for an id changed twice in one request: once among the upserts, once among the activations,
    deactivations and deletions (an upserted item may be (de)activated after it, not deleted)."""
    first: dict[tuple[str, bool], str] = {}
    for name, n, item_id in ids:
        keys = [(item_id, name == "upsert")] + ([(item_id, True)] if name == "delete" else [])
        clash = next((first[key] for key in keys if key in first), None)
        if clash is not None:
            raise HTTPException(409, f"item {item_id[:60]!r} is changed twice in one request ({clash} and "
                                     f"{name}[{n}]); an upserted item may be activated or deactivated in the same "
                                     "request, nothing else twice")
        first[keys[0]] = f"{name}[{n}]"


@router.post("/items", response_model=ItemsChanged, responses={**BODY, **documented(404, 409)})
async def change_items(changes: Annotated[ItemChanges, Body()], loaded: Annotated[Loaded, Depends(get_loaded)],
                       service: Annotated[Service, Depends(get_service)],
                       settings: Annotated[Settings, Depends(get_settings)]) -> ItemsChanged:
    """Many catalogue changes in one request, as a shop's catalogue feed sends them: items to `upsert` (each as
    `PUT /v1/admin/items/{item_id}` takes one, with its `item_id`), ids to `activate`, `deactivate` and `delete`.
    They are recorded together (all or none) and every worker applies them in one step; the upserts' texts are
    encoded in one batch, the (de)activations applied after them. An id is changed once in a request, except that an
    upserted item may be activated or deactivated too (409 otherwise); each list holds at most
    `RECSYS_MAX_BATCH_ITEMS` entries (422), and the body at most `RECSYS_MAX_BODY_BYTES` (413); an id to activate,
    deactivate or delete must be in the catalogue or upserted in the same request (404 naming every unknown one,
    and nothing changes). A request with no change changes nothing."""
    for name in CHANGE_LISTS:
        size = len(getattr(changes, name))
        if size > settings.max_batch_items:
            raise invalid(f"{size:,} entries; the limit is {settings.max_batch_items:,} a list", "body", name)
    ids = [(name, n, item.item_id if name == "upsert" else item)
           for name in CHANGE_LISTS for n, item in enumerate(getattr(changes, name))]
    _check_each_once(ids)
    kept = kept_upsert_fields(loaded.recommender)
    for n, item in enumerate(changes.upsert):
        _check_upsert(item, settings, kept, "body", "upsert", n)
    active = {**dict.fromkeys(changes.activate, True), **dict.fromkeys(changes.deactivate, False)}
    serving, unchanged = await run_in_threadpool(
        service.change_items, loaded, [item.model_dump() for item in changes.upsert], active, changes.delete) \
        if ids else (loaded, [])
    state, deleted = serving.recommender.catalogue.state, set(changes.delete)
    return ItemsChanged(upserted=len(changes.upsert), unchanged=len(unchanged), activated=len(changes.activate),
                        deactivated=len(changes.deactivate), deleted=len(changes.delete), index_items=state.n_available,
                        items=[ItemState(item_id=item_id, active=item_id not in deleted and state.is_active(item_id),
                                         index_items=state.n_available)
                               for item_id in dict.fromkeys(item_id for _, _, item_id in ids)])  # each item once


@router.get("/items", response_model=CatalogueIds)
async def catalogue_ids(loaded: Annotated[Loaded, Depends(get_loaded)],
                        service: Annotated[Service, Depends(get_service)]) -> Response:
    """The ids of every catalogue item, active (served) and inactive (out of stock), after every change recorded
    so far: what a catalogue feed compares its file with (`recsys push-items --missing`)."""
    serving, active, inactive = await run_in_threadpool(service.catalogue_ids, loaded)
    return json_response(CatalogueIds(model_version=serving.version, active=active, inactive=inactive))


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
async def reload(service: Annotated[Service, Depends(get_service)],
                 request: Annotated[ReloadRequest | None, Body()] = None) -> ReloadResponse:
    """Load a newer bundle under the bundle root and swap it in (every worker follows); in-flight requests finish
    on the old one. No body, or `{}`: the newest version under the root. A corrupted or mismatched bundle, or one
    outside the root, is refused (409) and the current one keeps serving."""
    version = current(service).version  # (no reference kept: the replaced bundle is freed after its last request)
    try:
        new = await run_in_threadpool(service.reload, request.bundle if request is not None else None)
    except BundleError as exc:
        logger.warning("reload refused: %s", exc)
        raise HTTPException(409, f"reload refused, still serving {version}: {exc}") from exc
    return ReloadResponse(model_version=new.version, previous_version=version)
