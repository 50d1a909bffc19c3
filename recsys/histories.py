"""Stored user histories (user id → item ids, oldest first) in compact arrays instead of a dict of Python lists.

A million users with ten items each as a dict of lists is ~1.5 GB of Python objects per process (and every
serving worker held one); here it is a sorted array of user ids (binary search), one int32 item code per event
and an offsets array: ~80 MB, and loading it is a few column reads. It is a read-only `Mapping`, so code that
reads `recommender.histories.get(user)` / `in` / `len` / iteration works unchanged.

A dataset whose interactions have a `kind` column (`recsys import table --kind-col`) gives each event its kind too
(one small code per event, the bundle's `kinds` column), so the API words an imported purchase's reason as a live
one's (`kinds_of`); without it, histories are what they always were.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import polars as pl

from recsys.data.dataset import KIND_COLUMN
from recsys.splits import ordered_interactions

HISTORY_SCHEMA = {"user_id": pl.Utf8, "history": pl.List(pl.Utf8)}
KINDS = "kinds"
"""The optional histories column of each event's kind (a list aligned with `history`, null where an event has none);
absent in bundles written before kinds were kept, and where the dataset has none."""


class Histories(Mapping):
    """user id → list of item ids (oldest first). `users` sorted; user u's items are
    `vocabulary[codes[offsets[u]:offsets[u + 1]]]`; with kinds, its events' kinds are
    `kind_names[kind_codes[offsets[u]:offsets[u + 1]]]` (code -1: none)."""

    def __init__(self, users: np.ndarray, offsets: np.ndarray, codes: np.ndarray, vocabulary: np.ndarray,
                 kind_codes: np.ndarray | None = None, kind_names: np.ndarray | None = None) -> None:
        self.users = np.asarray(users, dtype=str)
        self.offsets = np.asarray(offsets, np.int64)
        self.codes = np.asarray(codes, np.int32)
        self.vocabulary = np.asarray(vocabulary, dtype=object)  # Python str per item: no conversion per lookup
        self.kind_codes = None if kind_codes is None else np.asarray(kind_codes)
        self.kind_names = None if kind_codes is None else np.asarray(kind_names, dtype=object)
        if len(self.offsets) != len(self.users) + 1 or self.offsets[-1] != len(self.codes):
            raise ValueError("offsets do not match users and codes")
        if self.kind_codes is not None and len(self.kind_codes) != len(self.codes):
            raise ValueError(f"{len(self.kind_codes)} event kinds for {len(self.codes)} events")
        if len(self.users) > 1 and not (self.users[1:] > self.users[:-1]).all():
            raise ValueError("user ids must be unique and sorted")

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_interactions(cls, interactions: pl.DataFrame) -> "Histories":
        """Every user's items by time (file order for equal timestamps), from (user_id, item_id, timestamp, and the
        events' `kind` when the dataset has one)."""
        kind = [KIND_COLUMN] if KIND_COLUMN in interactions.columns else []
        ordered = ordered_interactions(interactions.select("user_id", "item_id", "timestamp", *kind))
        return cls._from_sorted(ordered["user_id"], ordered["item_id"], ordered[KIND_COLUMN] if kind else None)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> "Histories":
        """From a (user_id, history[, kinds]) frame, e.g. the bundle's stats/histories.parquet (one written before
        kinds were kept has no `kinds`)."""
        frame = frame.sort("user_id")
        lengths = frame["history"].list.len().fill_null(0).to_numpy()
        # an empty list explodes to one null: the users with events only
        events = frame.filter(pl.col("history").list.len() > 0) if (lengths == 0).any() else frame
        items = events["history"].explode().drop_nulls()
        kinds = None
        if KINDS in frame.columns:
            if not events.select(pl.col(KINDS).list.len().fill_null(-1) == pl.col("history").list.len()
                                 ).to_series().all():
                raise ValueError(f"the {KINDS!r} lists do not match the histories' lengths")
            kinds = events[KINDS].explode()
        return cls._from_lengths(frame["user_id"], lengths, items, kinds)

    @classmethod
    def empty(cls) -> "Histories":
        """No user at all (e.g. an evaluation-only recommender: the evaluator passes each example's history)."""
        return cls(np.zeros(0, dtype=str), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, dtype=object))

    @classmethod
    def from_dict(cls, histories: Mapping[str, list[str]]) -> "Histories":
        return cls.from_frame(pl.DataFrame({"user_id": list(histories), "history": list(histories.values())},
                                           schema=HISTORY_SCHEMA))

    @classmethod
    def _from_sorted(cls, users: pl.Series, items: pl.Series, kinds: pl.Series | None = None) -> "Histories":
        """`users` sorted (runs of equal ids), `items` (and `kinds`) aligned with them."""
        runs = users.rle()
        return cls._from_lengths(runs.struct.field("value"), runs.struct.field("len").to_numpy(), items, kinds)

    @classmethod
    def _from_lengths(cls, users: pl.Series, lengths: np.ndarray, items: pl.Series,
                      kinds: pl.Series | None = None) -> "Histories":
        vocabulary = items.unique().sort()
        codes = _codes(items, vocabulary)
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        kind_codes = kind_names = None
        if kinds is not None and kinds.null_count() < len(kinds):  # no kind at all: histories as without them
            names = kinds.drop_nulls().unique().sort()
            kind_codes = _codes(kinds.fill_null(names[0]), names).astype(np.int8 if len(names) < 128 else np.int32)
            kind_codes[kinds.is_null().to_numpy()] = -1
            kind_names = np.array(names.to_list(), dtype=object)
        return cls(users.to_numpy().astype(str), offsets, codes, np.array(vocabulary.to_list(), dtype=object),
                   kind_codes, kind_names)

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

    def kinds_of(self, user_id, limit: int | None = None) -> dict[str, str]:
        """item id → the kind of the user's latest stored event on it (view, purchase, …) among the latest `limit`
        (all when None: the items a history of that many holds), for the API's reasons; an item whose latest event
        has no kind is left out, and so is everything without kinds (an older bundle, a dataset without them)."""
        row = self._row(user_id)
        if row < 0 or self.kind_codes is None:
            return {}
        end = int(self.offsets[row + 1])
        events = slice(max(int(self.offsets[row]), end - limit) if limit is not None else int(self.offsets[row]), end)
        latest = dict(zip(self.vocabulary[self.codes[events]].tolist(), self.kind_codes[events].tolist()))
        return {item: self.kind_names[code] for item, code in latest.items() if code >= 0}

    def to_frame(self) -> pl.DataFrame:
        """(user_id, history[, kinds]) rows, users sorted (built from the arrays, no per-item Python objects)."""
        import pyarrow as pa

        def lists(names: np.ndarray, codes: np.ndarray) -> pl.Series:
            values = pl.Series(names.tolist(), dtype=pl.Utf8).gather(codes)
            return pl.from_arrow(pa.LargeListArray.from_arrays(pa.array(self.offsets), values.to_arrow()))

        frame = pl.DataFrame({"user_id": pl.Series(self.users.tolist(), dtype=pl.Utf8),
                              "history": lists(self.vocabulary, self.codes)})
        if self.kind_codes is not None:
            codes = np.where(self.kind_codes >= 0, self.kind_codes, len(self.kind_names))  # a null past the names
            frame = frame.with_columns(lists(np.append(self.kind_names, None), codes).alias(KINDS))
        return frame.cast({**HISTORY_SCHEMA, **({KINDS: pl.List(pl.Utf8)} if self.kind_codes is not None else {})})


def _codes(values: pl.Series, names: pl.Series) -> np.ndarray:
    """Each of `values`' position in the sorted unique `names` (int32; a null's is undefined)."""
    return values.cast(pl.Enum(names.to_list())).to_physical().to_numpy() if len(values) else np.zeros(0, np.int32)


def stored_kinds(histories: Mapping[str, list[str]], user_id: str, limit: int | None = None) -> dict[str, str]:
    """`Histories.kinds_of` for any mapping of histories ({} for one that keeps no kinds, e.g. a dict of lists)."""
    return histories.kinds_of(user_id, limit) if isinstance(histories, Histories) else {}


def histories_frame(histories: Mapping[str, list[str]]) -> pl.DataFrame:
    """(user_id, history) frame of any mapping (compact `Histories` without building Python lists)."""
    if isinstance(histories, Histories):
        return histories.to_frame()
    return pl.DataFrame({"user_id": list(histories), "history": list(histories.values())}, schema=HISTORY_SCHEMA)


__all__ = ["Histories", "histories_frame", "stored_kinds", "HISTORY_SCHEMA", "KINDS"]
