"""Row storage that grows without moving the rows older views see (`AppendOnly`): the catalogue's vectors and ids,
the re-ranker's per-item arrays and the towers' per-row tables are appended to it, so an edit costs what it adds."""

from __future__ import annotations

import numpy as np


GROWTH = 2
"""A full buffer is replaced by one this many times its rows. The room past the rows is address space until rows are
written into it (numpy's large buffers are mapped on demand), so doubling costs no resident memory; at 1 + 1/8 the
100k-item catalogue's 154 MB of vectors were copied (0.4 s, one request's wait) every 12,500 new items."""


class AppendOnly:
    """Row storage whose first n rows never change once written: appends write past them (doubling the buffer
    when full), so the views handed to older states stay valid without copies."""

    def __init__(self, rows: np.ndarray) -> None:
        self._buffer = np.ascontiguousarray(rows)
        self.n = len(rows)

    @classmethod
    def _room(cls, n: int, like: np.ndarray) -> "AppendOnly":
        """Empty storage for rows like `like`'s with room for n of them and the growth step after (n is set by the
        caller once it has written them)."""
        store = cls(np.empty((n + n // 8 + 64, *like.shape[1:]), like.dtype))
        store.n = 0
        return store

    @classmethod
    def with_room(cls, rows: np.ndarray) -> "AppendOnly":
        """Storage of a copy of `rows` with room to grow, so the first appends write in place (`AppendOnly(rows)`
        keeps `rows` itself, and its first append copies them all into a larger buffer: at 100k 384-d vectors
        0.3-0.5 s here, most of it the new memory's first touch). For rows this storage computes and owns: a copy
        of rows its caller keeps would hold them twice."""
        store = cls._room(len(rows), rows)
        store._buffer[: len(rows)] = rows
        store.n = len(rows)
        return store

    @classmethod
    def read_npy(cls, path) -> "AppendOnly":
        """The rows of a `.npy` file (C order, no pickled objects) read into storage with room to grow: what a
        catalogue loads, so its first upserts append in place instead of copying every row, and nothing else
        holds a second copy."""
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            if version not in ((1, 0), (2, 0)):  # a newer format: numpy's own reader, then a copy with room
                return cls.with_room(np.load(path, allow_pickle=False))
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(file)
            if fortran_order or dtype.hasobject or not shape:
                raise ValueError(f"{path}: expected C-order rows of numbers, got shape {shape}, dtype {dtype}")
            store = cls._room(shape[0], np.empty((0, *shape[1:]), dtype))
            rows = store._buffer[: shape[0]]
            if file.readinto(memoryview(rows).cast("B")) != rows.nbytes:
                raise ValueError(f"{path}: shorter than its header says ({shape}, {dtype})")
            store.n = shape[0]
        return store

    @classmethod
    def taken(cls, rows: np.ndarray, keep: np.ndarray) -> "AppendOnly":
        """Storage of `rows[keep]` with room to grow (a compaction's: the upserts that follow append in place)."""
        store = cls._room(len(keep), rows)
        np.take(rows, keep, axis=0, out=store._buffer[: len(keep)])
        store.n = len(keep)
        return store

    def view(self) -> np.ndarray:
        return self._buffer[: self.n]

    def holds(self, view: np.ndarray) -> bool:
        """Whether `view` is this storage's view of all its rows (so appending extends it without a copy)."""
        return len(view) == self.n and (self.n == 0 or view.ctypes.data == self._buffer.ctypes.data)

    @classmethod
    def extended(cls, store: "AppendOnly | None", view: np.ndarray,
                 rows: np.ndarray) -> tuple["AppendOnly", np.ndarray]:
        """`view` followed by `rows`: appended in place when `view` is `store`'s view of all its rows (an edit of
        the latest state), else into a new storage (a copy). Returns the storage and the new view."""
        if store is None or not store.holds(view):
            store = cls(np.asarray(view))
        return store, store.append(rows)

    def append(self, rows: np.ndarray) -> np.ndarray:
        """Write `rows` after the current ones and return the view of all rows. A full buffer is replaced by one of
        twice the rows (`GROWTH`): the rows are copied once each time the storage doubles, not every eighth more."""
        need = self.n + len(rows)
        if need > len(self._buffer):
            grown = np.empty((max(need, GROWTH * self.n, self.n + 64), *self._buffer.shape[1:]), self._buffer.dtype)
            grown[: self.n] = self._buffer[: self.n]
            self._buffer = grown
        self._buffer[self.n:need] = rows
        self.n = need
        return self.view()


__all__ = ["AppendOnly"]
