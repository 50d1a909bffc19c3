"""A cache of each item's nearest catalogue neighbours, for "similar items" on product pages.

Similar-item lists are the same for every visitor, so the API keeps each item's top `depth`
neighbours (computed in one batched search at load, or on first use) and answers a request by
dropping excluded, deactivated and deleted items from that list. The lists key on the catalogue's additions
version (`CatalogueState.additions_version`): an upsert or an activation, which may put a new item in any list,
empties the cache (lists searched across one are not stored); a deactivation, a deletion or a compaction only
takes items away, which the read already drops, so the lists stay."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np
from cachetools import LRUCache

if TYPE_CHECKING:
    from recsys.catalogue import Catalogue

Search = Callable[[Sequence[str]], tuple[list[list[str]], list[list[float]]]]
"""item ids → (neighbour ids, scores) per item, best first, the item itself left out."""


class NeighbourCache:
    """item id → its top `depth` neighbours (ids and scores as numpy arrays), LRU-bounded, for one catalogue
    additions version at a time (`catalogue=None`: versions move only with `clear()`)."""

    def __init__(self, catalogue: Catalogue | None = None, depth: int = 50, maxsize: int = 100_000) -> None:
        self.catalogue = catalogue
        self.depth = depth
        self._cache: LRUCache = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()
        self._cleared = 0
        self._version = self.version
        self.hits = 0
        self.misses = 0

    @property
    def version(self) -> tuple[int, int]:
        """What the stored lists depend on: the catalogue's additions version (and explicit clears)."""
        return (self.catalogue.additions_version if self.catalogue is not None else 0), self._cleared

    def __len__(self) -> int:
        with self._lock:
            self._current()
            return len(self._cache)

    def _current(self) -> tuple[int, int]:
        """The version now, emptying the cache when it moved (call under the lock)."""
        version = self.version
        if version != self._version:
            self._cache.clear()
            self._version = version
        return version

    def clear(self) -> None:
        with self._lock:
            self._cleared += 1
            self._current()

    def fill(self, item_ids: Sequence[str], search: Search, batch_size: int = 1024) -> int:
        """Compute and store the lists of `item_ids` (batched searches); returns how many are stored."""
        item_ids = list(item_ids)[: self._cache.maxsize]
        for start in range(0, len(item_ids), batch_size):
            chunk = item_ids[start:start + batch_size]
            version = self.version
            self._store(chunk, *search(chunk), version=version)
        return len(self)

    def _store(self, item_ids: Sequence[str], ids: list[list[str]], scores: list[list[float]],
               version: tuple[int, int]) -> None:
        with self._lock:
            if self._current() != version:  # the catalogue changed during the search
                return
            for item_id, row_ids, row_scores in zip(item_ids, ids, scores):
                self._cache[item_id] = (np.array(row_ids, dtype=object), np.asarray(row_scores, dtype=np.float32))

    def top(self, item_id: str, k: int, exclude: Collection[str], is_active: Callable[[str], bool],
            search: Search) -> tuple[list[str], list[float]] | None:
        """The first k cached neighbours of `item_id` that are active and not excluded; None when
        k is deeper than the cache or too few survive the filters (the caller searches instead)."""
        if k > self.depth:
            return None
        with self._lock:
            version = self._current()
            entry = self._cache.get(item_id)
        if entry is None:
            self.misses += 1
            self._store([item_id], *search([item_id]), version=version)
            with self._lock:
                entry = self._cache.get(item_id) if self._current() == version else None
            if entry is None:  # maxsize 0, or the catalogue changed meanwhile: the caller searches
                return None
        else:
            self.hits += 1
        ids, scores = entry
        keep = [n for n, i in enumerate(ids) if i not in exclude and is_active(i)][:k]
        if len(keep) < k and len(ids) >= self.depth:  # filtered below k: the list was too short to tell
            return None
        return ids[keep].tolist(), scores[keep].tolist()
