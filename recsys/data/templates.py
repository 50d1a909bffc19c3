"""The item-text template: one renderer for import, training, live upserts and free-text queries.

A template such as "title: {title} | category: {category} | brand: {brand}" names item fields; a field that is
missing or empty drops with its label and the separator before it. The dataset records the template it was
imported with, every bundle built from it records the same, and everything that turns an item (or a query)
into text goes through `render_frame`, so BERT always reads item text in one form."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence

import polars as pl

IDENTITY = "{text}"


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


def render_frame(items: pl.DataFrame, template: str | None) -> list[str]:
    """One text per row: `template` over the row's fields (columns it lacks count as empty), falling back to the
    row's `text` when every field is empty; the `text` column as it is without a template."""
    if not template or template == IDENTITY:
        return [str(t or "") for t in items["text"].to_list()]
    missing = [f for f in template_fields(template) if f not in items.columns]
    frame = items.with_columns([pl.lit(None, dtype=pl.Utf8).alias(f) for f in missing])
    rendered = frame.select(template_expr(template).str.strip_chars().alias("__t"))["__t"].to_list()
    fallback = frame["text"].to_list() if "text" in frame.columns else [""] * frame.height
    return [r if r else str(t or "") for r, t in zip(rendered, fallback)]


def render_records(records: Sequence[Mapping], template: str | None) -> list[str]:
    """`render_frame` for plain records (live upserts): the same text the catalogue's rows got."""
    if not records:
        return []
    columns = sorted({key for record in records for key in record if isinstance(key, str)})
    frame = pl.DataFrame({c: [None if r.get(c) is None else str(r.get(c)) for r in records] for c in columns},
                         schema={c: pl.Utf8 for c in columns})
    return render_frame(frame, template)


def render_query(text: str, template: str | None) -> str:
    """A free-text query in the catalogue's form: the template rendered for an item whose title (or, for a
    template without one, whose first field) is the query."""
    if not template or template == IDENTITY:
        return text
    fields = template_fields(template)
    field = "title" if "title" in fields else fields[0]
    return render_records([{field: text, "text": text}], template)[0]
