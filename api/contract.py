"""The OpenAPI document is the contract: the limits it states are the ones this service enforces (read from
its Settings), the filters it offers are the attributes the served catalogue has, and the item fields an upsert
takes are those the catalogue keeps (`kept_upsert_fields`).

The routes' own models carry the fixed limits (id lengths, hard caps); the settings-driven ones (RECSYS_MAX_K,
RECSYS_MAX_SESSION_ITEMS, RECSYS_MAX_EXCLUDE_ITEMS, RECSYS_MAX_TEXT_CHARS, RECSYS_MAX_BATCH_ITEMS) are written into
the document here and enforced by the routes from the same settings."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from types import UnionType
from typing import TYPE_CHECKING, Union, get_args, get_origin

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from api.settings import Settings
from recsys.data.item_text import template_fields

if TYPE_CHECKING:
    from recsys.pipeline import Recommender

FILTERS = ("category", "brand")
ITEM_ATTRIBUTES = ("title", "category", "brand", "price")
"""The upsert fields a catalogue keeps only when it has the column or its item-text template renders the field."""


def kept_upsert_fields(recommender: Recommender) -> set[str]:
    """The `ITEM_ATTRIBUTES` an upsert into this catalogue keeps: its attribute columns, and the fields its
    item-text template renders (they live on in the item's text)."""
    kept = set(recommender.catalogue.state.items.columns) | set(template_fields(recommender.text_template))
    return {name for name in ITEM_ATTRIBUTES if name in kept}


def settings_limits(settings: Settings) -> dict[str, dict[str, int]]:
    """field or query parameter name → JSON Schema keywords, for every limit a setting controls."""
    return {
        "k": {"maximum": settings.max_k},
        "exclude": {"maxItems": settings.max_exclude_items},
        "item_ids": {"maxItems": settings.max_session_items},
        "text": {"maxLength": settings.max_text_chars},
        **{name: {"maxItems": settings.max_batch_items} for name in ("upsert", "activate", "deactivate", "delete")},
    }


def _constrain(schema: dict, keywords: dict[str, int]) -> None:
    """Apply `keywords` to `schema`, or to its non-null `anyOf` branches (optional fields)."""
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"] or [schema]
    for branch in branches:
        branch.update(keywords)


def _not_null(schema: dict) -> None:
    """An optional parameter is documented as `anyOf: [<type>, null]`; a URL cannot carry a null (an absent
    parameter is how it is left out), so it is documented as <type> alone."""
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1 and len(schema["anyOf"]) == 2:
        del schema["anyOf"]
        schema.update(branches[0])


def apply_contract(document: dict, settings: Settings, attributes: Collection[str] | None,
                   kept: Collection[str] | None = None) -> dict:
    """`document` (modified in place) with the settings' limits, without the filters that `attributes` (the served
    catalogue's filterable attributes; None: unknown, all kept) does not have, and without the upsert fields not in
    `kept` (`kept_upsert_fields`; None: unknown, all kept)."""
    limits = settings_limits(settings)
    missing = set() if attributes is None else set(FILTERS) - set(attributes)
    unkept = set() if kept is None else set(ITEM_ATTRIBUTES) - set(kept)
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            parameters = [p for p in operation.get("parameters", [])
                          if not (p["in"] == "query" and p["name"] in missing)]
            for parameter in parameters:
                _not_null(parameter["schema"])
                if parameter["in"] == "query" and parameter["name"] in limits:
                    _constrain(parameter["schema"], limits[parameter["name"]])
            if "parameters" in operation:
                operation["parameters"] = parameters
    schemas = document.get("components", {}).get("schemas", {})
    for name, fields in (("SessionRequest", ("k", "exclude", "item_ids", "text")), ("ItemUpsert", ("text",)),
                         ("ItemRecord", ("text",)), ("ItemChanges", ("upsert", "activate", "deactivate", "delete"))):
        for field in fields:
            _constrain(schemas[name]["properties"][field], limits[field])
    for attribute in missing:
        schemas["Filters"]["properties"].pop(attribute, None)
    for attribute in unkept:
        schemas["ItemUpsert"]["properties"].pop(attribute, None)
        schemas["ItemRecord"]["properties"].pop(attribute, None)
    _drop_from_examples(schemas, unkept)
    return document


def _drop_from_examples(schemas: dict, unkept: Collection[str]) -> None:
    """The upsert examples without the fields the catalogue cannot keep: the docs' "Try it out" sends an example
    as it is, and one naming such a field is refused (422)."""
    def kept(item: dict) -> dict:  # a copy: the models' own examples may be the very objects in the document
        return {key: value for key, value in item.items() if key not in unkept}

    for name in ("ItemUpsert", "ItemRecord"):
        if "examples" in schemas[name]:
            schemas[name]["examples"] = [kept(example) for example in schemas[name]["examples"]]
    if "examples" in schemas["ItemChanges"]:
        schemas["ItemChanges"]["examples"] = [{**changes, "upsert": [kept(item) for item in changes.get("upsert", [])]}
                                              for changes in schemas["ItemChanges"]["examples"]]


def install_contract(app: FastAPI, settings: Settings, attributes: Callable[[], Collection[str] | None],
                     kept: Callable[[], Collection[str] | None]) -> None:
    """Serve `apply_contract(...)` as the app's OpenAPI document; `attributes()` names the served catalogue's
    filterable attributes and `kept()` the upsert fields it keeps (the document is rebuilt when they change, e.g.
    after a reload)."""
    generate = app.openapi
    built: dict[tuple, dict] = {}

    def openapi() -> dict:
        names, fields = attributes(), kept()
        key = tuple(None if v is None else tuple(sorted(v)) for v in (names, fields))
        if key not in built:
            app.openapi_schema = None  # FastAPI's generator caches its answer there: make it build afresh
            built.clear()
            built[key] = apply_contract(generate(), settings, names, fields)
        app.openapi_schema = built[key]
        return built[key]

    app.openapi = openapi


class DeclaredQueryOnly:
    """An app-wide dependency, so that query strings are as strict as bodies: a parameter the route does not
    declare (a typo such as `?K=5`) and a single-valued one given twice (`?k=5&k=50`) are 422s, not silently
    ignored. Routes left out of the OpenAPI document are exempt."""

    def __init__(self) -> None:
        self._declared: dict[int, tuple[frozenset[str], frozenset[str]]] = {}

    async def __call__(self, request: Request) -> None:
        route = request.scope.get("route")
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            return
        known = self._declared.get(id(route))
        if known is None:
            known = self._declared[id(route)] = _query_names(route.dependant)
        names, lists = known
        errors = []
        for name in dict.fromkeys(request.query_params):
            if name not in names:
                errors.append({"type": "extra_forbidden", "loc": ("query", name), "msg": "Unknown query parameter"})
            elif name not in lists and len(request.query_params.getlist(name)) > 1:
                errors.append({"type": "value_error", "loc": ("query", name), "msg": "Given more than once"})
        if errors:
            raise RequestValidationError(errors)


async def single_valued_body_keys(request: Request) -> None:
    """An app-wide dependency, so that bodies are as strict as query strings: a JSON object that names a key
    twice (`{"k": 2, "k": 50}`) is a 422, not its last value taken silently. Malformed or non-UTF-8 bodies are
    left to FastAPI's own answers."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    body = await request.body()  # cached by the request: FastAPI has read it already
    repeated: list[str] = []

    def pairs(items: list[tuple[str, object]]) -> dict:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                repeated.append(key)
            seen.add(key)
        return dict(items)

    try:
        json.loads(body, object_pairs_hook=pairs) if body else None
    except ValueError:
        return
    if repeated:
        raise RequestValidationError([{"type": "value_error", "loc": ("body", key), "msg": "Given more than once"}
                                      for key in dict.fromkeys(repeated)])


def _query_names(dependant: Dependant) -> tuple[frozenset[str], frozenset[str]]:
    """(every query parameter the route reads, those that take several values)."""
    names = {field.alias for field in dependant.query_params}
    lists = {field.alias for field in dependant.query_params if _is_list(field.field_info.annotation)}
    for sub in dependant.dependencies:
        sub_names, sub_lists = _query_names(sub)
        names |= sub_names
        lists |= sub_lists
    return frozenset(names), frozenset(lists)


def _is_list(annotation: object) -> bool:
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    return origin in (Union, UnionType) and any(_is_list(arg) for arg in get_args(annotation))
