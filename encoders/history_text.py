"""Rendering item rows and behaviour histories as text for the BERT towers."""

from __future__ import annotations

import string
from collections.abc import Sequence

import polars as pl

PART_SEPARATOR = " | "


def _fields(part: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(part) if name]


def render_items(items: pl.DataFrame, template: str) -> list[str]:
    """One text per item row from a template such as "title: {title} | category: {category} | brand: {brand}".

    Parts are separated by " | "; a part whose fields are missing or empty is dropped, and an item whose every
    part is dropped falls back to its `text` column."""
    parts = template.split(PART_SEPARATOR)
    out: list[str] = []
    for row in items.iter_rows(named=True):
        kept = []
        for part in parts:
            names = _fields(part)
            values = {n: row.get(n) for n in names}
            if any(v is None or (isinstance(v, str) and not v.strip()) for v in values.values()):
                continue
            kept.append(part.format(**{n: str(v).strip() for n, v in values.items()}))
        out.append(PART_SEPARATOR.join(kept) if kept else str(row.get("text") or ""))
    return out


def history_snippets(items: pl.DataFrame, field: str) -> list[str]:
    """Per catalogue item, the short text that stands for it inside a history (its title, or its text)."""
    if field in items.columns:
        values = items[field].to_list()
        texts = items["text"].to_list()
        return [v if isinstance(v, str) and v.strip() else t for v, t in zip(values, texts)]
    return items["text"].to_list()


def render_history(positions: Sequence[int], snippets: Sequence[str], separator: str, max_items: int) -> str:
    """A history (catalogue positions, oldest first) as text: most recent item first, `separator` between items;
    the tokenizer's max_length then truncates the oldest items away."""
    recent = list(positions)[-max_items:][::-1]
    return separator.join(snippets[p] for p in recent)
