"""Stored user histories (user id → item ids, oldest first) in compact arrays instead of a dict of Python lists.

A million users with ten items each as a dict of lists is ~1.5 GB of Python objects per process (and every
serving worker held one); here it is a sorted array of user ids (binary search), one int32 item code per event
and an offsets array: ~80 MB, and loading it is a few column reads. It is a read-only `Mapping`, so code that
reads `recommender.histories.get(user)` / `in` / `len` / iteration works unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import polars as pl

from recsys.splits import ordered_interactions

HISTORY_SCHEMA = {"user_id": pl.Utf8, "history": pl.List(pl.Utf8)}


class Histories(Mapping):
    """user id → list of item ids (oldest first). `users` sorted; user u's items are
    `vocabulary[codes[offsets[u]:offsets[u + 1]]]`."""

    def __init__(self, users: np.ndarray, offsets: np.ndarray, codes: np.ndarray, vocabulary: np.ndarray) -> None:
        self.users = np.asarray(users, dtype=str)
        self.offsets = np.asarray(offsets, np.int64)
        self.codes = np.asarray(codes, np.int32)
        self.vocabulary = np.asarray(vocabulary, dtype=object)  # Python str per item: no conversion per lookup
        if len(self.offsets) != len(self.users) + 1 or self.offsets[-1] != len(self.codes):
            raise ValueError("offsets do not match users and codes")
        if len(self.users) > 1 and not (self.users[1:] > self.users[:-1]).all():
            raise ValueError("user ids must be unique and sorted")

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_interactions(cls, interactions: pl.DataFrame) -> "Histories":
        """Every user's items by time (file order for equal timestamps), from (user_id, item_id, timestamp)."""
        ordered = ordered_interactions(interactions.select("user_id", "item_id", "timestamp"))
        return cls._from_sorted(ordered["user_id"], ordered["item_id"])

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> "Histories":
        """From a (user_id, history) frame, e.g. the bundle's stats/histories.parquet."""
        frame = frame.sort("user_id")
        lengths = frame["history"].list.len().fill_null(0).to_numpy()
        users = frame["user_id"]
        items = frame["history"].explode().drop_nulls()
        return cls._from_lengths(users, lengths, items)

    @classmethod
    def empty(cls) -> "Histories":
        """No user at all (e.g. an evaluation-only recommender: the evaluator passes each example's history)."""
        return cls(np.zeros(0, dtype=str), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, dtype=object))

    @classmethod
    def from_dict(cls, histories: Mapping[str, list[str]]) -> "Histories":
        return cls.from_frame(pl.DataFrame({"user_id": list(histories), "history": list(histories.values())},
                                           schema=HISTORY_SCHEMA))

    @classmethod
    def _from_sorted(cls, users: pl.Series, items: pl.Series) -> "Histories":
        """`users` sorted (runs of equal ids), `items` aligned with them."""
        runs = users.rle()
        return cls._from_lengths(runs.struct.field("value"), runs.struct.field("len").to_numpy(), items)

    @classmethod
    def _from_lengths(cls, users: pl.Series, lengths: np.ndarray, items: pl.Series) -> "Histories":
        vocabulary = items.unique().sort()
        codes = items.cast(pl.Enum(vocabulary.to_list())).to_physical().to_numpy() if len(items) else \
            np.zeros(0, np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        return cls(users.to_numpy().astype(str), offsets, codes, np.array(vocabulary.to_list(), dtype=object))

    # ---- Mapping ------------------------------------------------------------------------------
    def _row(self, user_id) -> int:
        if not isinstance(user_id, str) or not len(self.users):
            return -1
        row = int(np.searchsorted(self.users, user_id))
        return row if row < len(self.users) and self.users[row] == user_id else -1

    def __getitem__(self, user_id) -> list[str]:
        row = self._row(user_id)
        if row < 0:
            raise KeyError(user_id)
        return self.vocabulary[self.codes[self.offsets[row]:self.offsets[row + 1]]].tolist()

    def __contains__(self, user_id) -> bool:
        return self._row(user_id) >= 0

    def __iter__(self) -> Iterator[str]:
        return iter(self.users.tolist())

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_events(self) -> int:
        return len(self.codes)

    def to_frame(self) -> pl.DataFrame:
        """(user_id, history) rows, users sorted (built from the arrays, no per-item Python objects)."""
        import pyarrow as pa

        items = pl.Series(self.vocabulary.tolist(), dtype=pl.Utf8).gather(self.codes).to_arrow()
        lists = pa.LargeListArray.from_arrays(pa.array(self.offsets), items)
        return pl.DataFrame({"user_id": pl.Series(self.users.tolist(), dtype=pl.Utf8),
                             "history": pl.from_arrow(lists)}).cast(HISTORY_SCHEMA)


def histories_frame(histories: Mapping[str, list[str]]) -> pl.DataFrame:
    """(user_id, history) frame of any mapping (compact `Histories` without building Python lists)."""
    if isinstance(histories, Histories):
        return histories.to_frame()
    return pl.DataFrame({"user_id": list(histories), "history": list(histories.values())}, schema=HISTORY_SCHEMA)


__all__ = ["Histories", "histories_frame", "HISTORY_SCHEMA"]
