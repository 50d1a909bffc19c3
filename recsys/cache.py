"""A least-recently-used cache bounded in bytes, shared by several parts (e.g. query vectors and serialised
responses) under one memory budget. Keys are hashed, so a client-chosen key (a 200-item history, a long
exclude list) costs a fixed 16 bytes however long it is."""

from __future__ import annotations

import hashlib
import sys
import threading
from collections import Counter
from collections.abc import Hashable, Iterator, MutableMapping

import numpy as np
from cachetools import LRUCache

ENTRY_OVERHEAD = 320
"""Bytes an entry costs beyond its value's payload: the hashed key tuple, the LRU's bookkeeping, the value's
object header (an upper estimate, so the budget is an upper bound on what the entries hold)."""


def entry_bytes(value: object) -> int:
    """What one cached value costs: its payload (bytes, array data) plus `ENTRY_OVERHEAD`."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        payload = len(value)
    elif isinstance(value, np.ndarray):
        payload = value.nbytes
    elif isinstance(value, tuple):  # e.g. (version, vector): its parts and the tuple itself
        payload = sum(entry_bytes(part) - ENTRY_OVERHEAD for part in value) + sys.getsizeof(value)
    else:
        payload = sys.getsizeof(value)
    return payload + ENTRY_OVERHEAD


def key_digest(key: Hashable) -> bytes:
    """16-byte digest of a canonical key (tuples of str / int / bytes; sets must be sorted first)."""
    return hashlib.blake2b(repr(key).encode("utf-8", "surrogatepass"), digest_size=16).digest()


class _CountingLRU(LRUCache):
    """An LRU sized by `entry_bytes` that counts its entries per (part, generation)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(maxsize=max_bytes, getsizeof=entry_bytes)
        self.counts: Counter = Counter()

    def __setitem__(self, key, value) -> None:
        new = key not in self
        super().__setitem__(key, value)
        if new:
            self.counts[key[:2]] += 1

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        group = key[:2]
        self.counts[group] -= 1
        if not self.counts[group]:
            del self.counts[group]


class ByteBudgetCache:
    """Thread-safe LRU holding at most `max_bytes` (as counted by `entry_bytes`); `part(name)` hands out
    namespaces that share the budget, so whichever is used more gets more of it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._lru = _CountingLRU(self.max_bytes)
        self.lock = threading.Lock()
        self._parts = 0

    @property
    def currsize(self) -> int:
        """Bytes held now (never above `max_bytes`)."""
        return self._lru.currsize

    def part(self, name: str) -> CachePart:
        """A new namespace (each call gives a separate one, even for the same name)."""
        with self.lock:
            self._parts += 1
            return CachePart(self, f"{name}#{self._parts}")

    def clear(self) -> None:
        with self.lock:
            self._lru.clear()


class CachePart(MutableMapping):
    """One namespace of a `ByteBudgetCache`: a mapping whose keys are stored hashed. `clear()` starts a new
    generation (old entries become unreachable and age out of the LRU), so it costs nothing however full."""

    def __init__(self, cache: ByteBudgetCache, name: str) -> None:
        self.cache = cache
        self.name = name
        self.generation = 0

    @property
    def maxsize(self) -> int:
        """The shared budget in bytes (0: nothing is ever stored)."""
        return self.cache.max_bytes

    def sibling(self) -> CachePart:
        """A new, empty part of the same cache (e.g. for a tower over another catalogue)."""
        return self.cache.part(self.name.rsplit("#", 1)[0])

    def capacity(self, value_bytes: int) -> int:
        """How many more values of `value_bytes` fit in the budget without evicting anything."""
        free = self.cache.max_bytes - self.cache.currsize
        return max(free, 0) // (value_bytes + ENTRY_OVERHEAD)

    def _key(self, key: Hashable) -> tuple:
        return (self.name, self.generation, key_digest(key))

    def __getitem__(self, key: Hashable):
        stored = self._key(key)
        with self.cache.lock:
            return self.cache._lru[stored]

    def get(self, key: Hashable, default=None):
        stored = self._key(key)
        with self.cache.lock:
            return self.cache._lru.get(stored, default)

    def __contains__(self, key: object) -> bool:
        stored = self._key(key)
        with self.cache.lock:
            return stored in self.cache._lru

    def __setitem__(self, key: Hashable, value) -> None:
        """Store `value` (evicting the least recently used entries of any part); a value larger than the whole
        budget is not stored."""
        stored = self._key(key)
        if entry_bytes(value) > self.cache.max_bytes:
            return
        with self.cache.lock:
            self.cache._lru[stored] = value

    def __delitem__(self, key: Hashable) -> None:
        stored = self._key(key)
        with self.cache.lock:
            del self.cache._lru[stored]

    def __len__(self) -> int:
        with self.cache.lock:
            return self.cache._lru.counts.get((self.name, self.generation), 0)

    def __iter__(self) -> Iterator:
        raise TypeError("a cache part's keys are stored hashed: it cannot list them")

    def clear(self) -> None:
        self.generation += 1
