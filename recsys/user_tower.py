"""Zero-shot user tower: a recency-weighted pool of the history's item embeddings (NumPy only)."""

from __future__ import annotations

import threading
from collections.abc import MutableMapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from cachetools import LRUCache

from recsys.config import UserTowerConfig


@runtime_checkable
class HistoryEncoder(Protocol):
    """A user tower: histories (item ids, oldest first) → L2-normalised query vectors in item space.

    Implementations that carry weights also define `save(directory)`, called with the bundle's
    `encoder/` directory; a zero row means "nothing known" and triggers the popularity fallback.
    """

    @property
    def dim(self) -> int: ...

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray: ...




class PooledHistoryEncoder:
    """user = normalise(Σ decay^age · item_vector), age 0 = the most recent item.

    Items unknown to the catalogue are skipped; an empty history gives a zero vector.
    """

    def __init__(self, item_ids: Sequence[str], item_vectors: np.ndarray, config: UserTowerConfig) -> None:
        self.config = config
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.position = {item_id: i for i, item_id in enumerate(item_ids)}

    @property
    def dim(self) -> int:
        return self.item_vectors.shape[1]

    def add_items(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add or replace item vectors (live catalogue); vectors are swapped in before positions."""
        matrix = self.item_vectors.copy()
        position = dict(self.position)
        new_rows = []
        for item_id, vector in zip(item_ids, np.asarray(vectors, dtype=np.float32)):
            if item_id in position:
                matrix[position[item_id]] = vector
            else:
                position[item_id] = len(matrix) + len(new_rows)
                new_rows.append(vector)
        self.item_vectors = np.vstack([matrix, *new_rows]) if new_rows else matrix
        self.position = position

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """float32 [len(histories), dim], L2-normalised rows (zero rows for empty histories)."""
        out = np.zeros((len(histories), self.dim), dtype=np.float32)
        decay = self.config.recency_decay
        for row, history in enumerate(histories):
            rows = [self.position[i] for i in history[-self.config.max_history:] if i in self.position]
            if not rows:
                continue
            weights = decay ** np.arange(len(rows) - 1, -1, -1, dtype=np.float32)
            vector = weights @ self.item_vectors[rows]
            norm = np.linalg.norm(vector)
            if norm > 0:
                out[row] = vector / norm
        return out


class CachedHistoryEncoder:
    """LRU cache of query vectors keyed by the history itself, so a new event (a new history)
    never hits a stale entry; cleared when item vectors change.

    `cache` (e.g. a `recsys.cache.CachePart`, bounded in bytes and storing keys hashed) replaces the
    default cache of `maxsize` entries."""

    def __init__(self, tower: HistoryEncoder, maxsize: int = 100_000, cache: MutableMapping | None = None) -> None:
        self.tower = tower
        self._cache: MutableMapping = cache if cache is not None else LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def dim(self) -> int:
        return self.tower.dim

    def __getattr__(self, name: str):  # config, save, … of the wrapped tower
        return getattr(self.tower, name)

    def add_items(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        if hasattr(self.tower, "add_items"):
            self.tower.add_items(item_ids, vectors)
        with self._lock:
            self._cache.clear()

    def has(self, history: Sequence[str]) -> bool:
        """Whether this history's query vector is cached (does not touch the LRU order)."""
        with self._lock:
            return tuple(history) in self._cache

    def _room(self) -> int:
        """How many more vectors the cache takes before it starts evicting."""
        capacity = getattr(self._cache, "capacity", None)
        if capacity is not None:
            return capacity(self.dim * np.dtype(np.float32).itemsize)
        return max(self._cache.maxsize - len(self._cache), 0)

    def warm(self, histories: Sequence[Sequence[str]], batch_size: int = 256) -> int:
        """Encode `histories` (in batches, through the wrapped tower) into the cache ahead of the
        requests that will ask for them, as many as it holds without evicting; returns how many were added."""
        before = len(self._cache)
        todo = [list(h) for h in histories][: self._room()]
        for start in range(0, len(todo), batch_size):
            self.encode_histories(todo[start:start + batch_size])
        return len(self._cache) - before

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        keys = [tuple(h) for h in histories]
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        missing: list[int] = []
        with self._lock:
            for row, key in enumerate(keys):
                vector = self._cache.get(key)
                if vector is None:
                    missing.append(row)
                else:
                    out[row] = vector
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
        if missing:
            computed = np.asarray(self.tower.encode_histories([histories[r] for r in missing]), dtype=np.float32)
            out[missing] = computed
            with self._lock:
                for row, vector in zip(missing, computed):
                    self._cache[keys[row]] = vector.copy()  # its own buffer: the budget counts what it keeps
        return out
