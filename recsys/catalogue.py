"""Live catalogue changes on a loaded Recommender: upsert items (new text → new vector) and
activate / deactivate them, without rebuilding the index."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from recsys.data.templates import render_query, render_records
from recsys.pipeline import Recommender, item_attributes


def text_template(recommender: Recommender) -> str | None:
    """The item-text template the bundle's catalogue text was rendered with (None: the source's own text)."""
    return recommender.encoder_info.get("text_template")


def item_text(recommender: Recommender, record: dict) -> str:
    """A new or edited item's text, rendered from its fields by the catalogue's own template (its `text` when it
    has none of the template's fields), so it reads like every catalogue item the towers have seen."""
    return render_records([record], text_template(recommender))[0]


def query_text(recommender: Recommender, text: str) -> str:
    """A free-text query rendered like an item whose title is the query (`recsys.data.templates.render_query`)."""
    return render_query(text, text_template(recommender))


def upsert_items(recommender: Recommender, records: Sequence[dict], vectors: np.ndarray) -> None:
    """Insert or replace catalogue rows and their vectors (rows of `vectors` align with `records`).

    Readers see either the old or the new state of each attribute: new frames/arrays are built
    aside and assigned, and the index is updated last."""
    if len(records) != len(vectors):
        raise ValueError(f"{len(records)} records but {len(vectors)} vectors")
    if not records:
        return
    ids = [r["item_id"] for r in records]
    frame = pl.DataFrame(list(records)).select([c for c in recommender.items.columns if c in records[0]])
    frame = frame.cast({c: recommender.items.schema[c] for c in frame.columns})
    kept = recommender.items.filter(~pl.col("item_id").is_in(ids))
    kept_vectors = recommender.item_vectors[[recommender.item_position[i] for i in kept["item_id"].to_list()]]
    items = pl.concat([kept, frame], how="diagonal_relaxed")
    item_vectors = np.vstack([kept_vectors, np.asarray(vectors, dtype=np.float32)])
    item_ids = items["item_id"].to_list()

    recommender.items, recommender.item_vectors = items, item_vectors
    recommender.item_ids, recommender.item_position = item_ids, {i: n for n, i in enumerate(item_ids)}
    if hasattr(recommender.user_tower, "add_items"):  # towers with an item table (pooled, ID fusion)
        recommender.user_tower.add_items(ids, np.asarray(vectors, dtype=np.float32))
    recommender.index.add(np.asarray(vectors, dtype=np.float32), ids, attributes=item_attributes(frame))
    recommender.neighbours.clear()


def set_active(recommender: Recommender, item_ids: Sequence[str], active: bool) -> int:
    """Deactivate (out of stock) or reactivate items; returns how many changed state."""
    changed = recommender.index.activate(item_ids) if active else recommender.index.deactivate(item_ids)
    if changed:
        recommender.neighbours.clear()
    return changed
