"""Rendering behaviour histories as text for the BERT towers (item text: `recsys.data.item_text`)."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl


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
