"""The item-text template: the one renderer for import, training, live upserts and free-text queries.

A template such as "title: {title} | category: {category} | brand: {brand}" names item fields; a field that is
missing or empty drops with its label and the separator before it, and an item whose every field is empty falls
back to its `text`. The dataset records the template it was imported with (`Dataset.text_template`), every bundle
built from it records the same (`encoder/encoder.json`, `text_template`), the towers train on the dataset's
rendered text, and the bundle's item tower renders new items and queries through it (`ItemTower.template`), so
BERT always reads item text in one form."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

DEFAULT_TEMPLATE = "{text}"


def template_fields(template: str) -> list[str]:
    """The named fields of `template`; ValueError for positional fields or format specs."""
    parts = list(string.Formatter().parse(template))
    fields = [f for _, f, _, _ in parts if f is not None]
    if not fields or any(not f for f in fields) or any(s or c for _, f, s, c in parts if f is not None):
        raise ValueError(f"an item-text template needs named fields without format specs, got {template!r}")
    return fields


def template_expr(template: str) -> pl.Expr:
    """Vectorised rendering (a Utf8 expression over the fields' columns): an empty field drops its label and
    the separator before it; "" when every field is empty."""
    template_fields(template)
    chunks, any_before, suffix = [], pl.lit(False), ""
    for literal, field, _, _ in string.Formatter().parse(template):
        if field is None:
            suffix = literal
            continue
        sep = re.match(r"^[\s|,;:./\\-]*", literal).group(0) if chunks else ""
        value = pl.col(field).cast(pl.Utf8).str.strip_chars()
        present = value.is_not_null() & (value != "")
        lead = pl.when(any_before).then(pl.lit(sep)).otherwise(pl.lit(""))
        chunks.append(pl.when(present).then(pl.concat_str([lead, pl.lit(literal[len(sep):]), value]))
                      .otherwise(pl.lit("")))
        any_before = any_before | present
    return pl.concat_str([*chunks, pl.when(any_before).then(pl.lit(suffix)).otherwise(pl.lit(""))])


def _frame(records: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    records = list(records)
    columns = sorted({key for record in records for key in record if isinstance(key, str)})
    return pl.DataFrame({c: [None if r.get(c) is None else str(r.get(c)) for r in records] for c in columns},
                        schema={c: pl.Utf8 for c in columns})


def item_texts(records: Iterable[Mapping[str, Any]] | pl.DataFrame, template: str | None = DEFAULT_TEMPLATE
               ) -> list[str]:
    """One text per record (or row of an items frame): `template` over its fields (fields it lacks count as
    empty), its `text` when every field is empty; the `text` as it is without a template."""
    items = records if isinstance(records, pl.DataFrame) else _frame(records)
    if not items.height:
        return []
    if not template or template == DEFAULT_TEMPLATE:
        return [str(t or "") for t in items["text"].to_list()] if "text" in items.columns else [""] * items.height
    missing = [f for f in template_fields(template) if f not in items.columns]
    frame = items.with_columns([pl.lit(None, dtype=pl.Utf8).alias(f) for f in missing])
    rendered = frame.select(template_expr(template).str.strip_chars().alias("__t"))["__t"].to_list()
    fallback = frame["text"].to_list() if "text" in frame.columns else [""] * frame.height
    return [r if r else str(t or "") for r, t in zip(rendered, fallback)]


def item_text(record: Mapping[str, Any], template: str | None = DEFAULT_TEMPLATE) -> str:
    """`item_texts` of one record."""
    return item_texts([record], template)[0]


def query_record(text: str, template: str | None = DEFAULT_TEMPLATE) -> dict[str, str]:
    """A free-text query as an item record whose title (or, for a template without one, whose first field) is the
    query: rendered through the catalogue's template it reads like the items ("title: red boots")."""
    if not template or template == DEFAULT_TEMPLATE:
        return {"text": text}
    fields = template_fields(template)
    return {"title" if "title" in fields else fields[0]: text, "text": text}


__all__ = ["item_text", "item_texts", "query_record", "template_fields", "template_expr", "DEFAULT_TEMPLATE"]
