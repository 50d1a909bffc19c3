"""Zero-shot user tower (a recency-weighted pool of the history's item vectors, NumPy only) and the query-vector
cache every serving tower is wrapped in."""

from __future__ import annotations

import threading
from collections.abc import MutableMapping, Sequence

import numpy as np
from cachetools import LRUCache

from recsys.cache import ENTRY_OVERHEAD, entry_bytes
from recsys.catalogue import Catalogue
from recsys.config import UserTowerConfig
from recsys.towers import UserTower, WrappedUserTower, innermost_tower

HistoryEncoder = UserTower  # the name earlier code used


class PooledHistoryEncoder(UserTower):
    """user = normalise(Σ decay^age · item_vector), age 0 = the most recent item, over the catalogue's vectors
    (`columns` of them: e.g. the zero-shot block of blended item vectors).

    Items unknown to the catalogue (or deleted) are skipped; an empty history gives a zero vector.
    """

    def __init__(self, catalogue: Catalogue, config: UserTowerConfig, columns: slice = slice(None)) -> None:
        self.config = config
        self._catalogue = catalogue
        self.columns = columns

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogue

    def over(self, catalogue: Catalogue) -> "PooledHistoryEncoder":
        return PooledHistoryEncoder(catalogue, self.config, self.columns)

    @property
    def dim(self) -> int:
        return len(range(*self.columns.indices(self._catalogue.dim)))

    @property
    def cheap(self) -> bool:
        return True

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """float32 [len(histories), dim], L2-normalised rows (zero rows for empty histories)."""
        state = self._catalogue.state
        position, vectors = state.position, state.vectors[:, self.columns]
        out = np.zeros((len(histories), vectors.shape[1]), dtype=np.float32)
        decay = self.config.recency_decay
        for row, history in enumerate(histories):
            rows = [position[i] for i in history[-self.config.max_history:] if i in position]
            if not rows:
                continue
            weights = decay ** np.arange(len(rows) - 1, -1, -1, dtype=np.float32)
            vector = weights @ vectors[rows]
            norm = np.linalg.norm(vector)
            if norm > 0:
                out[row] = vector / norm
        return out


class CachedHistoryEncoder(WrappedUserTower):
    """LRU cache of query vectors keyed by the history itself, so a new event (a new history) never hits a
    stale entry. Each entry keeps the catalogue's `vectors_version` it was computed at; when the catalogue's item
    vectors have changed since, the entry still serves if none of its history's items changed
    (`Catalogue.ids_changed_since`: a query vector depends only on its history's items), so a catalogue feed
    does not empty the cache.

    `cache` (e.g. a `recsys.cache.CachePart`: bounded in bytes, keys stored hashed) replaces the default cache
    of `maxsize` entries."""

    def __init__(self, tower: UserTower, maxsize: int = 100_000, cache: MutableMapping | None = None) -> None:
        super().__init__(tower)
        self._maxsize = maxsize
        self._cache: MutableMapping = cache if cache is not None else LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def over(self, catalogue: Catalogue) -> "CachedHistoryEncoder":
        sibling = getattr(self._cache, "sibling", None)  # a new part of the same byte budget
        return CachedHistoryEncoder(self.tower.over(catalogue), self._maxsize, sibling() if sibling else None)

    # ---- the cache ------------------------------------------------------------------------------
    def _now(self) -> int | None:
        catalogue = self.tower.catalogue
        return catalogue.vectors_version if catalogue is not None else None

    def _valid(self, key: tuple, entry: tuple | None, now: int | None) -> np.ndarray | None:
        """The cached vector of `entry` (version, vector) when it holds for the catalogue's vectors at `now`, else
        None; an entry found valid across changes is stored again at `now` (call under the lock)."""
        if entry is None:
            return None
        version, vector = entry
        if version == now:
            return vector
        changed = self.tower.catalogue.ids_changed_since(version, now) if version is not None else None
        if changed is None or not changed.isdisjoint(key):
            return None
        self._cache[key] = (now, vector)  # checked across these changes once
        return vector

    def has(self, history: Sequence[str]) -> bool:
        """Whether this history's query vector is cached and still valid."""
        key = tuple(history)
        with self._lock:
            return self._valid(key, self._cache.get(key), self._now()) is not None

    def _room(self) -> int:
        """How many more vectors the cache takes before it starts evicting."""
        capacity = getattr(self._cache, "capacity", None)
        if capacity is not None:  # what one dated vector costs beyond the entry's overhead
            return capacity(entry_bytes((0, np.zeros(self.dim, np.float32))) - ENTRY_OVERHEAD)
        return max(self._maxsize - len(self._cache), 0)

    def warm(self, histories: Sequence[Sequence[str]], batch_size: int = 256) -> int:
        """Encode `histories` (in batches, through the wrapped tower) into the cache ahead of the requests that
        will ask for them, as many as it holds without evicting (the first ones); returns how many entries were
        added. The batches go shortest history first, so a batch pads to histories of about its own length."""
        before = len(self._cache)
        todo = sorted((list(h) for h in histories[: self._room()]), key=len)
        for start in range(0, len(todo), batch_size):
            self.encode_histories(todo[start:start + batch_size])
        return len(self._cache) - before

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        keys = [tuple(h) for h in histories]
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        missing: list[int] = []
        with self._lock:
            version = self._now()
            for row, key in enumerate(keys):
                vector = self._valid(key, self._cache.get(key), version)
                if vector is None:
                    missing.append(row)
                else:
                    out[row] = vector
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
        if missing:
            computed = np.asarray(self.tower.encode_histories([histories[r] for r in missing]), dtype=np.float32)
            out[missing] = computed
            with self._lock:  # dated at the version before the encode: any change it may have read makes it stale
                for row, vector in zip(missing, computed):
                    self._cache[keys[row]] = (version, vector.copy())  # its own buffer: the budget counts it
        return out


def rebound(tower: UserTower, catalogue: Catalogue) -> UserTower:
    """`tower` reading `catalogue` (itself when it already does, or reads no catalogue at all)."""
    return tower if tower.catalogue is None or tower.catalogue is catalogue else tower.over(catalogue)


__all__ = ["HistoryEncoder", "PooledHistoryEncoder", "CachedHistoryEncoder", "innermost_tower", "rebound"]
