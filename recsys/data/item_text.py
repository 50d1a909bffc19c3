"""The item-text template: how an item's fields become the one text its item tower encodes.

Training renders every catalogue item through the tower's template (`TowerConfig.item_template`, e.g.
"title: {title} | category: {category} | brand: {brand}"); live upserts and free-text queries go through
the same function, so a new item's vector is computed exactly like an imported item's."""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

PART_SEPARATOR = " | "
DEFAULT_TEMPLATE = "{text}"


def _fields(part: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(part) if name]


def item_text(record: Mapping[str, Any], template: str = DEFAULT_TEMPLATE) -> str:
    """One item's text: parts of the template are separated by " | "; a part whose fields are missing or empty
    is dropped, and an item whose every part is dropped falls back to its `text` field."""
    kept = []
    for part in template.split(PART_SEPARATOR):
        values = {name: record.get(name) for name in _fields(part)}
        if any(v is None or (isinstance(v, str) and not v.strip()) for v in values.values()):
            continue
        kept.append(part.format(**{name: str(v).strip() for name, v in values.items()}))
    return PART_SEPARATOR.join(kept) if kept else str(record.get("text") or "")


def item_texts(records: Iterable[Mapping[str, Any]] | pl.DataFrame, template: str = DEFAULT_TEMPLATE) -> list[str]:
    """`item_text` of every record (or row of an items frame)."""
    rows = records.iter_rows(named=True) if isinstance(records, pl.DataFrame) else records
    return [item_text(row, template) for row in rows]


def query_record(text: str) -> dict[str, str]:
    """A free-text query as an item record: it goes through the same template as the catalogue's items."""
    return {"text": text}


__all__ = ["item_text", "item_texts", "query_record", "PART_SEPARATOR", "DEFAULT_TEMPLATE"]
