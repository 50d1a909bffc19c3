"""A compaction's rows (`KeptRows`): the rows it keeps, copied outside the catalogue's locks, and the swap's replay
of what changed while it built (`recsys.catalogue.Catalogue.compact`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recsys.append_only import AppendOnly
from recsys.catalogue_state import REMOVED, CatalogueState

if TYPE_CHECKING:
    from recsys.item_arrays import ItemArrays


@dataclass
class KeptRows:
    """A compaction's rows carried over from the state it started from (built outside the catalogue's locks: the
    first rows of a state never change), and the swap's replay of what changed since (`replayed`)."""

    old: CatalogueState
    keep: np.ndarray
    ids: AppendOnly
    items: pl.DataFrame
    vectors: AppendOnly
    position: dict[str, int]
    features: ItemArrays | None

    @classmethod
    def of(cls, old: CatalogueState, keep: np.ndarray, step: int = 16_384) -> "KeptRows":
        ids = AppendOnly.taken(old.ids, keep)
        position: dict[str, int] = {}
        for start in range(0, len(keep), step):  # (a step at a time: the edits going on get the GIL in between)
            position.update(zip(ids.view()[start:start + step].tolist(), range(start, start + step)))
        return cls(old, keep, ids, old.items[keep], AppendOnly.taken(old.vectors, keep), position,
                   old.features.taken(keep) if old.features is not None else None)

    def replayed(self, now: CatalogueState, appended: Sequence[tuple[int, int]],
                 features_attached: bool) -> CatalogueState:
        """The compacted `now`: the kept rows then every row appended since the compaction started (`appended`:
        the upserts' row ranges), with `now`'s flags. The re-ranker's arrays: the kept ones extended by the upserts'
        rows as each upsert extended them, or, when arrays were attached during the build, `now`'s rows taken."""
        start, n = len(self.old), len(self.keep)
        tail = np.arange(start, len(now))
        flags = np.concatenate([now.flags[self.keep], now.flags[start:]])
        ids = self.ids.append(now.ids[start:])
        position = self.position
        for row in np.flatnonzero(flags[:n] & REMOVED).tolist():  # deleted (or replaced) during the build
            del position[ids[row]]
        live = np.flatnonzero((flags[n:] & REMOVED) == 0)
        position.update(zip(ids[n + live].tolist(), (n + live).tolist()))
        items = pl.concat([self.items, now.items[start:]], how="vertical_relaxed") if len(tail) else self.items
        if len(tail):
            self.vectors.append(now.vectors[start:])
        if now.features is None:
            arrays = None
        elif features_attached or self.features is None:
            arrays = now.features.taken(np.concatenate([self.keep, tail]))
        else:
            arrays = self.features
            for first, end in appended:
                arrays = arrays.appended(now.items[first:end], now.vectors[first:end])
        return CatalogueState(now.version + 1, now.vectors_version, ids, flags, position, items, self.vectors.view(),
                              arrays, additions_version=now.additions_version)


__all__ = ["KeptRows"]
