"""One immutable version of the catalogue (`CatalogueState`: rows, ids, flags, metadata, vectors, the re-ranker's
arrays) and the flags and columns it is made of; `recsys.catalogue.Catalogue` publishes them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from recsys.errors import UnknownIdError
from recsys.positions import RowPositions
from recsys.retrieval.filters import Where, bitmap_selector, where_key, where_mask

if TYPE_CHECKING:
    from recsys.item_arrays import ItemArrays

REMOVED = np.uint8(1)   # gone from the catalogue (until compact() reclaims the row)
INACTIVE = np.uint8(2)  # known but not recommendable (out of stock); activate brings it back
CATALOGUE_COLUMNS = ("item_id", "text", "title", "category", "brand", "price")
FILTER_COLUMNS = ("category", "brand", "price")
"""The catalogue's attributes searches may filter on (`where={"category": …}`): every column but these."""
DESCRIPTIVE_COLUMNS = ("item_id", "text", "title")
WHERE_MASKS = 64  # filter masks cached per catalogue version, at most …
WHERE_MASK_BYTES = 32 * 2**20  # … and at most this many bytes of them (a mask is one byte per row)


@dataclass(frozen=True, eq=False)
class CatalogueState:
    """One immutable version of the catalogue (see the module docstring). Row-aligned: `ids`, `flags`,
    `items` (metadata frame), `vectors` (raw item vectors) and `features` (the re-ranker's arrays)."""

    version: int
    vectors_version: int
    ids: np.ndarray                 # object [rows]: the id stored in each row (tombstones included)
    flags: np.ndarray               # uint8 [rows]: REMOVED | INACTIVE bits
    position: Mapping[str, int]     # id → row of every item not removed (recsys.positions: shared between versions)
    items: pl.DataFrame             # metadata, one row per catalogue row
    vectors: np.ndarray             # float32 [rows, dim]
    features: ItemArrays | None = None
    _records: np.ndarray | None = field(default=None, repr=False)  # carried over by appends when already built
    lineage: object = field(default_factory=object, repr=False)
    """Shared by the states of one catalogue between two compactions (upserts carry it over, a compaction starts a
    new one): of two states of one lineage, the longer one's first rows are the other's rows (ids, metadata,
    vectors), so a table derived per row can be extended with the rows appended since instead of built again."""
    additions_version: int = 0
    """Moves with the changes that can add an item to a search's results: upserts and activations (not
    deactivations, deletions or compactions, which only take items away)."""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @cached_property
    def available(self) -> np.ndarray:
        """bool [rows]: neither removed nor inactive (what a search may return)."""
        return self.flags == 0

    @cached_property
    def n_available(self) -> int:
        return int(self.available.sum())

    @cached_property
    def n_removed(self) -> int:
        return int(((self.flags & REMOVED) != 0).sum())

    @cached_property
    def live_ids(self) -> list[str]:
        """Ids of the items not removed (active or not), in row order."""
        return self.ids[(self.flags & REMOVED) == 0].tolist()

    @cached_property
    def attributes(self) -> pl.DataFrame | None:
        """The filterable attribute columns (rows aligned), or None when the catalogue has none."""
        columns = [c for c in self.items.columns if c not in DESCRIPTIVE_COLUMNS]
        return self.items.select(columns) if columns else None

    @cached_property
    def records(self) -> np.ndarray:
        """object [rows]: every row's metadata as a dict (for responses)."""
        return self._records if self._records is not None else objects(self.items.to_dicts())

    @cached_property
    def _where_masks(self) -> dict:
        return {}

    @cached_property
    def selector(self) -> tuple:
        """faiss selector (+ bitmap to keep alive) over the available rows."""
        return bitmap_selector(self.available)

    def where_mask(self, where: Where) -> np.ndarray:
        """bool [rows] of rows matching `where` (mapping filters cached for this version, at most `WHERE_MASKS`
        of them and `WHERE_MASK_BYTES` in all)."""
        key = where_key(where)
        cached = self._where_masks.get(key) if key is not None else None
        if cached is None:
            cached = where_mask(self.attributes, where)
            masks = len(self._where_masks) + 1
            if key is not None and masks <= WHERE_MASKS and masks * cached.nbytes <= WHERE_MASK_BYTES:
                self._where_masks[key] = cached
        return cached

    def rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Row of each id (-1: not in the catalogue)."""
        if isinstance(self.position, RowPositions):
            return self.position.rows(item_ids)
        try:  # the common case (retrieved candidates, served histories): every id known, a C-level map
            return np.fromiter(map(self.position.__getitem__, item_ids), np.int64, len(item_ids))
        except KeyError:
            get = self.position.get
            return np.fromiter((get(i, -1) for i in item_ids), np.int64, len(item_ids))

    def is_active(self, item_id: str) -> bool:
        row = self.position.get(item_id)
        return row is not None and self.flags[row] == 0

    def check(self, item_ids: Iterable[str]) -> None:
        """Raise UnknownIdError naming every id not in the catalogue (each once, in first-seen order)."""
        unknown = list(dict.fromkeys(i for i in item_ids if i not in self.position))
        if unknown:
            raise UnknownIdError("item", unknown)

    def record(self, item_id: str) -> dict | None:
        """The metadata of a live item (a copy), None when it is not in the catalogue."""
        row = self.position.get(item_id)
        return None if row is None else dict(self.records[row])

    def records_of(self, item_ids: Sequence[str]) -> list[dict]:
        """Metadata dicts of live items, in the given order (copies)."""
        self.check(item_ids)
        records = self.records
        return [dict(records[self.position[i]]) for i in item_ids]


@dataclass(frozen=True)
class CandidateRows:
    """The catalogue rows of retrieved lists (one int64 array per list) and the catalogue state they index:
    readers that work on rows skip mapping the lists' ids back, as long as that state is still current."""

    state: CatalogueState
    rows: list[np.ndarray]

    def subset(self, lists: Sequence[int]) -> "CandidateRows":
        """The rows of the lists at `lists`, in that order."""
        return CandidateRows(self.state, [self.rows[n] for n in lists])

    def valid_in(self, state: CatalogueState) -> list[np.ndarray] | None:
        """The rows when they index `state` (the catalogue has not changed since the search), else None."""
        return self.rows if state is self.state else None


def objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-d object array of `values` (dicts stay elements: numpy does not unpack them)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


__all__ = ["CatalogueState", "CandidateRows", "objects", "REMOVED", "INACTIVE", "CATALOGUE_COLUMNS", "FILTER_COLUMNS",
           "DESCRIPTIVE_COLUMNS"]
