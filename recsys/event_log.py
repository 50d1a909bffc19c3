"""The event log's shared parts: event and change records, the `EventStore` protocol every store implements
(`recsys.store_sqlite`, `recsys.store_redis`; `recsys.store` opens one), and the helpers both stores use."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import polars as pl

EVENT_KINDS = ("view", "cart", "purchase")
HISTORY_LIMIT = 200
"""Most recent items of a history (bundle history + events) a query reads, in the API and in batch jobs."""
ChangeKind = Literal["upsert", "active", "delete", "bundle"]
EventRow = tuple[int, str, str, str, float]
"""One stored event: (seq, user_id, item_id, kind, timestamp in seconds)."""
LATEST_TIMESTAMP = 253_402_300_799
"""An event's latest timestamp: 9999-12-31 23:59:59 UTC in epoch seconds. A millisecond clock's values (1.7e12)
lie above it, and every value below it stays a 64-bit integer second."""
EVENT_SCHEMA = {"seq": pl.Int64, "user_id": pl.Utf8, "item_id": pl.Utf8, "kind": pl.Utf8, "ts": pl.Float64}
"""The columns of `EventStore.event_frame`: one row per stored event (an `EventRow`)."""
EVENT_BATCH = 100_000
"""Events turned from Python objects into a columnar frame at a time while a whole log is read."""


def event_frame_of(rows: Iterable[EventRow], batch: int = EVENT_BATCH) -> pl.DataFrame:
    """`rows` as an `EVENT_SCHEMA` frame, converted `batch` rows at a time: reading a log of millions of events
    holds one batch of Python tuples, not the whole log's (~300 bytes an event)."""
    frames, chunk = [], []
    for row in rows:
        chunk.append(row)
        if len(chunk) == batch:
            frames.append(pl.DataFrame(chunk, schema=EVENT_SCHEMA, orient="row"))
            chunk = []
    frames.append(pl.DataFrame(chunk, schema=EVENT_SCHEMA, orient="row"))
    return pl.concat(frames, rechunk=True)


@dataclass(frozen=True)
class Change:
    """One catalogue change: `upsert` (record + vector, in the item space `space`), `active` (flag), `delete`,
    or `bundle` (a worker swapped in the bundle at record["path"]; the others follow)."""

    seq: int
    kind: ChangeKind
    item_id: str | None = None
    record: dict | None = None
    vector: np.ndarray | None = None
    space: str | None = None
    active: bool | None = None


def merged_history(stored: Sequence[str] | None, events: Sequence[str],
                   limit: int = HISTORY_LIMIT) -> list[str] | None:
    """A user's history as every path reads it: the bundle's history, then the events recorded since, the most
    recent `limit` items; None when the user has neither (an unknown user)."""
    if stored is None and not events:
        return None
    return [*(stored or ()), *events][-limit:]


class EventStore(Protocol):
    reads_wait: bool
    """Whether a read can wait on something outside this process (a network round trip): the API reads such a
    store in its thread pool, never on the event loop; a local store whose reads never queue (SQLite's own reader
    connection in WAL mode) is read on the loop, which spares every request a thread hop."""

    def append(self, user_id: str, item_id: str, kind: str, timestamp: float | None = None) -> int:
        """Record one event; returns the user's number of stored events (in constant time, whatever the
        user's history length)."""

    def append_many(self, user_id: str, item_ids: Iterable[str], kind: str = "view",
                    timestamp: float | None = None) -> int:
        """Record many events of one user at once (imports, benchmarks); returns the user's count."""

    def events(self, user_id: str, limit: int, until: int | None = None) -> list[str]:
        """The user's most recent `limit` item ids (events with seq ≤ `until` when given), oldest first."""

    def events_for(self, user_ids: Iterable[str], limit: int, until: int | None = None) -> dict[str, list[str]]:
        """`events` of many users (those with events only)."""

    def events_with_kinds(self, user_id: str, limit: int, until: int | None = None) -> list[tuple[str, str]]:
        """`events` with each event's kind (view, cart, purchase): (item_id, kind) pairs, oldest first, in one
        read (the API's known-user request needs both: the history and the reasons' kinds); read in the same time
        whatever the user's whole history."""

    def event_users(self, until: int | None = None) -> list[str]:
        """Every user with at least one event (seq ≤ `until`)."""

    def last_event_seq(self) -> int: ...

    def event_items(self, limit: int) -> list[str]:
        """The item ids of up to `limit` stored events, read in one cheap pass whatever the store's size (SQLite: the
        first events by seq; Redis: the first events of the users one scan step of its user set returns): a
        sample of the items the events name, e.g. for `api.store_check`."""

    def event_frame(self, until: int | None = None, kinds: Collection[str] | None = None) -> pl.DataFrame:
        """Every stored event (seq ≤ `until` when given; only `kinds` when given) as an `EVENT_SCHEMA` frame in seq
        order, read in batches: what `recsys refresh-stats --store` counts."""

    def record_change(self, kind: ChangeKind, item_id: str | None = None, record: dict | None = None,
                      vector: np.ndarray | None = None, space: str | None = None, active: bool | None = None) -> int:
        """Append a catalogue change; returns its seq."""

    def record_changes(self, changes: Sequence[Change]) -> list[int]:
        """Append catalogue changes in one step, all or none (their own `seq` is ignored); returns their seqs, in
        order: a reader sees all of them or none."""

    def changes(self, after: int = 0, until: int | None = None) -> list[Change]:
        """Changes with after < seq ≤ until, in order."""

    def changed_items(self) -> list[tuple[str, str | None]]:
        """(kind, item_id) of every change, in order: which items the log names, without reading (or decoding) the
        records and vectors `changes` returns."""

    def last_change_seq(self) -> int: ...

    def latest_bundle(self) -> dict | None:
        """The record of the latest `bundle` change (a reload: {"path", "rollback"}), None when there is none; read
        without the other changes' records and vectors."""

    def close(self) -> None: ...




def vector_bytes(vector: np.ndarray | None) -> bytes | None:
    """A stored change's vector as float32 bytes (None stays None)."""
    return None if vector is None else np.asarray(vector, dtype=np.float32).tobytes()


def vector_of(blob: bytes | None) -> np.ndarray | None:
    """The float32 vector `vector_bytes` stored (a writable copy; None stays None)."""
    return None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()
