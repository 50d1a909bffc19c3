"""Which item ids the catalogue's latest changes touched (`ChangeLog`), so that what was derived from an earlier
version (a cached query vector, a cached similar-items response) can tell whether those changes concern it instead
of being thrown away at every change."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import NamedTuple

KEPT = 256
"""How many of the latest changes the log remembers …"""
MAX_IDS = 1024
"""… and the ids of each, up to this many (a bigger change counts as one that touched everything)."""


class Change(NamedTuple):
    version: int            # the catalogue version it made
    vectors_version: int    # the catalogue vectors version after it
    ids: frozenset | None   # the ids it touched (None: too many to list)
    moves_vectors: bool     # whether it changed item vectors (upserts, deletions) or only flags / rows


class ChangeLog:
    """The latest `KEPT` catalogue changes. `record` is called by the catalogue's one writer before it publishes
    the version; readers see an immutable tuple, replaced on each record."""

    def __init__(self) -> None:
        self._changes: tuple[Change, ...] = ()
        self._lock = threading.Lock()

    def record(self, version: int, vectors_version: int, ids: Iterable[str], moves_vectors: bool) -> None:
        ids = frozenset(ids)
        change = Change(version, vectors_version, ids if len(ids) <= MAX_IDS else None, moves_vectors)
        with self._lock:
            self._changes = (*self._changes[-(KEPT - 1):], change)

    def between(self, since: int, now: int) -> frozenset | None:
        """The ids touched by the changes that made versions `since` + 1 … `now`; None when the log does not reach
        back that far or one of them touched too many to list."""
        return self._union(since, now, lambda c: c.version, lambda c: c.version - 1, vectors_only=False)

    def vectors_between(self, since: int, now: int) -> frozenset | None:
        """The ids whose vectors changed from vectors version `since` to `now` (upserted, replaced, deleted); None as
        for `between`."""
        return self._union(since, now, lambda c: c.vectors_version, lambda c: c.vectors_version - c.moves_vectors,
                           vectors_only=True)

    def _union(self, since: int, now: int, after, before, vectors_only: bool) -> frozenset | None:
        if since >= now:
            return frozenset()
        changes = self._changes
        if not changes or before(changes[0]) > since or after(changes[-1]) < now:
            return None  # the log starts after `since`, or has not reached `now` yet
        touched: set = set()
        for change in reversed(changes):
            if after(change) <= since:
                break
            if after(change) > now or (vectors_only and not change.moves_vectors):
                continue
            if change.ids is None:
                return None
            touched |= change.ids
        return frozenset(touched)


__all__ = ["ChangeLog", "Change", "KEPT", "MAX_IDS"]
