"""Query-time eligibility: attribute filters, allow/exclude lists, faiss bitmap selectors, a RW lock."""

from __future__ import annotations

import threading
from collections.abc import Collection, Hashable, Iterable, Mapping
from contextlib import contextmanager
from typing import Any, Union

import faiss
import numpy as np
import polars as pl

from recsys.text_format import named

Where = Union[Mapping[str, Any], pl.Expr]
"""`{"category": "cameras"}` (equality), `{"category": ["a", "b"]}` (membership; all keys ANDed),
or any boolean Polars expression over the attribute table, e.g. `pl.col("price") < 100`."""


def _is_collection(value: Any) -> bool:
    return isinstance(value, (Collection, np.ndarray)) and not isinstance(value, (str, bytes))


def where_key(where: Where) -> Hashable | None:
    """Cache key for a mapping filter (None for expressions, which are not cached)."""
    if not isinstance(where, Mapping):
        return None
    try:
        return tuple(sorted((str(k), frozenset(v) if _is_collection(v) else v) for k, v in where.items()))
    except TypeError:
        return None


def where_mask(attributes: pl.DataFrame | None, where: Where) -> np.ndarray:
    """Boolean mask over the attribute rows; nulls never match."""
    if attributes is None:
        raise ValueError("this index has no item attributes; build/add with attributes=… to filter with where=")
    if isinstance(where, Mapping):
        unknown = [c for c in where if c not in attributes.columns]
        if unknown:
            raise ValueError(f"unknown attribute {named('column', unknown)}; have {attributes.columns}")
        exprs = [pl.col(c).is_in(list(v)) if _is_collection(v) else pl.col(c) == v for c, v in where.items()]
        expr = pl.all_horizontal(exprs) if exprs else pl.lit(True)
    elif isinstance(where, pl.Expr):
        expr = where
    else:
        raise ValueError(f"where= must be a mapping such as {{'category': 'Cameras'}} or a Polars expression, got "
                         f"{type(where).__name__} {where!r}")
    mask = attributes.select(expr.fill_null(False).alias("m")).to_series()
    if mask.dtype != pl.Boolean or len(mask) != attributes.height:
        raise ValueError("where= must evaluate to one boolean per item")
    return mask.to_numpy()


def rows_of(ids: Iterable, position: Mapping[Any, int]) -> np.ndarray:
    """Row numbers of the known ids (unknown ids are ignored: they cannot be returned anyway)."""
    rows = [position[i] for i in ids if i in position]
    return np.fromiter(rows, dtype=np.int64, count=len(rows))


def bitmap_selector(mask: np.ndarray) -> tuple[faiss.IDSelector, np.ndarray]:
    """A faiss IDSelectorBitmap over row labels; keep the returned bitmap alive while searching."""
    bitmap = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap)), bitmap


def normalise_attributes(attributes: pl.DataFrame | Mapping[str, Any] | None, n: int) -> pl.DataFrame | None:
    if attributes is None:
        return None
    frame = attributes if isinstance(attributes, pl.DataFrame) else pl.DataFrame(dict(attributes))
    if frame.height != n:
        raise ValueError(f"attributes have {frame.height} rows for {n} items")
    return frame


class RWLock:
    """Many concurrent searches, one writer (add / remove / compact / a catalogue change) at a time. A waiting
    writer goes first: new readers wait behind it, so a steady stream of searches cannot starve a change (a
    thread must not take the read lock again while it holds it)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self):
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            self._waiting_writers += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


__all__ = ["Where", "where_key", "where_mask", "rows_of", "bitmap_selector", "normalise_attributes", "RWLock"]
