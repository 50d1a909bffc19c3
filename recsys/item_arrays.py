"""Per-item arrays the re-ranker's features read (`ItemArrays`), aligned with the catalogue's rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recsys.append_only import AppendOnly
from recsys.feature_config import ATTRIBUTE_FEATURES
from recsys.stats import InteractionStats

if TYPE_CHECKING:
    from recsys.catalogue import CatalogueState


def attribute_codes(values: pl.Series) -> np.ndarray:
    """Integer code per value (equal values, equal codes), -1 for null."""
    codes = values.cast(pl.Utf8).cast(pl.Categorical).to_physical().cast(pl.Int64)
    return codes.fill_null(-1).to_numpy()


class ItemArrays:
    """Per-item arrays the features read, aligned with catalogue rows: L2-normalised vectors, attribute codes,
    prices and the statistics' item codes (-1: no training event). Held by the catalogue's state: an upsert
    appends the new rows' arrays exactly as they are computed for imported items (`appended`: in place, past the
    rows of the states before, so an edit costs what it adds, not the catalogue's size), compaction keeps the
    surviving rows (`taken`)."""

    def __init__(self, vectors: AppendOnly, attributes: list[str], codes: dict[str, np.ndarray],
                 vocabulary: dict[str, dict], price: np.ndarray | None, stats_code: np.ndarray,
                 stats: InteractionStats, stores: dict[str, AppendOnly] | None = None) -> None:
        self._vectors = vectors
        self.vectors = vectors.view()
        self.attributes = attributes
        self.codes = codes
        self.vocabulary = vocabulary  # attribute value → code, so appended rows get the codes of equal values
        self.price = price
        self.stats_code = stats_code
        self.stats = stats
        self._stores = stores if stores is not None else {}  # the storage each other array was last appended into

    @classmethod
    def of(cls, state: CatalogueState, stats: InteractionStats, attributes: list[str] | None = None) -> "ItemArrays":
        """The arrays of every row of a catalogue state, for `stats`; `attributes` (default: the attribute columns
        with a value) fixes which attribute features there are (the model's feature names)."""
        items = state.items
        if attributes is None:
            attributes = [a for a in ATTRIBUTE_FEATURES if a in items.columns and items[a].null_count() < items.height]
        codes = {a: attribute_codes(items[a]) for a in ("category", "brand") if a in attributes}
        vocabulary = {a: {v: int(c) for v, c in zip(items[a].cast(pl.Utf8).to_list(), codes[a].tolist()) if c >= 0}
                      for a in codes}
        price = prices(items) if "price" in attributes else None
        return cls(unit_store(state.vectors), attributes, codes, vocabulary, price,
                   stats.codes(state.ids.tolist()), stats)

    def appended(self, items: pl.DataFrame, vectors: np.ndarray) -> "ItemArrays":
        """These arrays plus rows for new catalogue rows (`items` frame + raw `vectors`)."""
        stores = dict(self._stores)

        def extended(name: str, view: np.ndarray, rows: np.ndarray) -> np.ndarray:
            stores[name], out = AppendOnly.extended(stores.get(name), view, rows)
            return out

        codes, vocabulary = {}, {}
        for attr, old in self.codes.items():
            known, new = self.vocabulary[attr], []
            values = items[attr].cast(pl.Utf8).to_list() if attr in items.columns else [None] * items.height
            unseen = [v for v in dict.fromkeys(values) if v is not None and v not in known]
            if unseen:
                first = max(known.values(), default=-1) + 1
                known = {**known, **{value: first + j for j, value in enumerate(unseen)}}
            new = [-1 if value is None else known[value] for value in values]
            codes[attr], vocabulary[attr] = extended(f"codes.{attr}", old, np.asarray(new, np.int64)), known
        price = extended("price", self.price, prices(items)) if self.price is not None else None
        stats_code = extended("stats_code", self.stats_code, self.stats.codes(items["item_id"].to_list()))
        store = self._vectors if self._vectors.holds(self.vectors) else AppendOnly(self.vectors.copy())
        store.append(unit_rows(vectors))  # rows past this state's: earlier views stay valid
        return ItemArrays(store, self.attributes, codes, vocabulary, price, stats_code, self.stats, stores)

    def only(self, attributes: list[str]) -> "ItemArrays":
        """These arrays with only `attributes`' codes and prices (the vectors and statistics codes shared)."""
        out = ItemArrays(self._vectors, [a for a in self.attributes if a in attributes],
                         {a: c for a, c in self.codes.items() if a in attributes},
                         {a: v for a, v in self.vocabulary.items() if a in attributes},
                         self.price if "price" in attributes else None, self.stats_code, self.stats)
        out.vectors = self.vectors  # this state's rows, whatever a later state appended to the shared store
        return out

    def taken(self, rows: np.ndarray) -> "ItemArrays":
        """Only `rows` (compaction), in that order."""
        return ItemArrays(AppendOnly.taken(self.vectors, rows), self.attributes,
                          {a: c[rows] for a, c in self.codes.items()}, self.vocabulary,
                          self.price[rows] if self.price is not None else None, self.stats_code[rows], self.stats)


NORM_ROWS = 16_384
"""Rows whose norms `unit_rows` takes at a time: `np.linalg.norm` squares its whole input first (a temporary as large
as the vectors), and each row's norm is the same whatever the block."""


def unit_rows(vectors: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """`vectors` L2-normalised per row (zero rows stay zero), float32; into `out` when given (it may be `vectors`)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.concatenate([np.linalg.norm(vectors[start:start + NORM_ROWS], axis=1, keepdims=True)
                            for start in range(0, len(vectors), NORM_ROWS)]) if len(vectors) else \
        np.zeros((0, 1), np.float32)
    if out is None:
        return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0))
    return np.divide(vectors, np.where(norms > 0, norms, 1.0), out=out)


def unit_store(vectors: np.ndarray) -> AppendOnly:
    """`unit_rows(vectors)` in append-only storage with room to grow (one buffer: normalised in place)."""
    store = AppendOnly.with_room(np.asarray(vectors, dtype=np.float32))
    unit_rows(store.view(), out=store.view())
    return store


def prices(items: pl.DataFrame) -> np.ndarray:
    if "price" not in items.columns:
        return np.full(items.height, np.nan)
    return items["price"].cast(pl.Float64).fill_null(np.nan).to_numpy()
