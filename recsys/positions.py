"""The catalogue's id → row map, shared between its versions (`RowPositions`).

Each catalogue version needs its own id → row map, and copying a dict of every id on each edit made one edit cost
O(catalogue) (~20 ms at 500k items). A version's map is instead a base dict, shared by the versions that follow and
never changed once built, plus a small dict of the changes since it (a row, or `GONE` for an id removed). An edit
copies only the changes; once they outnumber `fold_at(len(base))` they are folded into a new base (one full copy
every few thousand edits). A state with no changes holds the plain dict, the fastest map to read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import repeat

import numpy as np

GONE = -1
"""A change's row for an id that is no longer in the catalogue."""
FOLD_AT = 4096
"""At most this many changes over a base before they are folded into a new one …"""
FOLD_SHARE = 8
"""… and at most one per `FOLD_SHARE` ids of the base (a small catalogue copies its small dict instead)."""

_ABSENT = object()


def fold_at(base_size: int) -> int:
    """How many changes a map over a base of `base_size` ids holds before they are folded into a new base."""
    return min(FOLD_AT, base_size // FOLD_SHARE)


class RowPositions(Mapping[str, int]):
    """id → row: `base` (shared, never changed) overlaid with `changes` (row, or `GONE`). Build with `changed`."""

    __slots__ = ("_base", "_changes", "_size")

    def __init__(self, base: dict[str, int], changes: dict[str, int], size: int) -> None:
        self._base, self._changes, self._size = base, changes, size

    def __getitem__(self, key: str) -> int:
        row = self._changes.get(key, _ABSENT)
        if row is _ABSENT:
            return self._base[key]
        if row == GONE:
            raise KeyError(key)
        return row

    def get(self, key: str, default=None):
        row = self._changes.get(key, _ABSENT)
        if row is _ABSENT:
            return self._base.get(key, default)
        return default if row == GONE else row

    def __contains__(self, key: object) -> bool:
        row = self._changes.get(key, _ABSENT)
        return key in self._base if row is _ABSENT else row != GONE

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[str]:
        changes = self._changes
        yield from (key for key in self._base if key not in changes)
        yield from (key for key, row in changes.items() if row != GONE)

    def __repr__(self) -> str:
        return f"RowPositions({len(self)} ids, {len(self._changes)} changes over a base of {len(self._base)})"

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        """int64 row of each key (`GONE`: not in the map): the base's C-level lookups, then the few keys changed."""
        out = np.fromiter(map(self._base.get, keys, repeat(GONE)), np.int64, len(keys))
        changes = self._changes
        if not changes.keys().isdisjoint(keys):
            for j, key in enumerate(keys):
                row = changes.get(key)
                if row is not None:
                    out[j] = row
        return out

    @property
    def n_changes(self) -> int:
        return len(self._changes)

    def folded(self) -> dict[str, int]:
        """A plain dict of the same map (a full copy)."""
        out = dict(self._base)
        for key, row in self._changes.items():
            if row == GONE:
                out.pop(key, None)
            else:
                out[key] = row
        return out


def changed(position: Mapping[str, int], rows: Iterable[tuple[str, int]] = (),
            gone: Iterable[str] = ()) -> Mapping[str, int]:
    """`position` with the ids of `rows` at those rows (added or moved) and the ids of `gone` removed (unknown
    ones ignored); `position` itself is left as it was. A plain dict or a `RowPositions` (see the module
    docstring)."""
    if isinstance(position, RowPositions):
        base, changes, size = position._base, dict(position._changes), len(position)
    else:
        base, changes, size = position, {}, len(position)
    for key in gone:
        row = changes.get(key, _ABSENT)
        if (key in base) if row is _ABSENT else row != GONE:
            size -= 1
            changes[key] = GONE
    for key, row in rows:
        old = changes.get(key, _ABSENT)
        if not ((key in base) if old is _ABSENT else old != GONE):
            size += 1
        changes[key] = row
    if not changes:
        return base
    out = RowPositions(base, changes, size)
    return out.folded() if len(changes) > fold_at(len(base)) else out


__all__ = ["RowPositions", "changed", "fold_at", "GONE", "FOLD_AT"]
