"""Batch jobs read the API's event store: a snapshot of it (events and catalogue changes up to the sequence numbers
taken when the job starts) so the lists are the API's lists at that moment, and a resumed job scores the rest
from the same snapshot.

The snapshot lives in the job directory: each user's stored events in `_job/users.parquet` (column `events`),
the catalogue changes in `_job/catalogue_changes.parquet`; the engines (local or Ray actors on other machines)
read those files, never the store itself."""

from __future__ import annotations

import base64
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from jobs.batch.layout import JOB_DIR, JOB_FILE, atomic_write
from recsys.errors import StoreError
from recsys.store import REDIS_TIMEOUT_S, Change, EventStore, open_store
from recsys.store_redis import redact

CHANGES_FILE = "catalogue_changes.parquet"


@dataclass(frozen=True)
class StoreSource:
    """Where the store is: a state directory (SQLite) or a Redis URL (and how long to wait for its answers)."""

    state_dir: Path | None = None
    redis_url: str | None = None
    redis_timeout_s: float = REDIS_TIMEOUT_S

    @property
    def label(self) -> str:
        """The store as manifests and messages name it (a Redis URL without its password)."""
        return redact(self.redis_url) if self.redis_url else str(Path(self.state_dir or ".") / "events.sqlite")

    def exists(self) -> bool:
        return bool(self.redis_url) or (self.state_dir is not None
                                        and (Path(self.state_dir) / "events.sqlite").is_file())

    def open(self) -> EventStore:
        """The store; StoreError naming it when the SQLite file cannot be opened (not a database, no access)."""
        if self.redis_url:
            return open_store("redis", ".", self.redis_url, redis_timeout_s=self.redis_timeout_s)
        try:
            return open_store("sqlite", self.state_dir)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.label}: cannot open the event store: {exc}") from None


@dataclass(frozen=True)
class Snapshot:
    """The store as the job sees it: events with seq ≤ events_seq, changes with seq ≤ changes_seq."""

    source: str
    events_seq: int
    changes_seq: int

    def identity(self) -> dict:
        return {"source": self.source, "events_seq": self.events_seq, "changes_seq": self.changes_seq}


def take_snapshot(store: EventStore, source: StoreSource, out: Path, fresh: bool) -> Snapshot:
    """The store's current sequence numbers, or those of the job already in `out` reading the same store (so a
    resumed job scores from the snapshot it started with), unless `fresh`."""
    previous = _previous_store(out)
    if not fresh and previous is not None and previous.get("source") == source.label:
        return Snapshot(source.label, int(previous["events_seq"]), int(previous["changes_seq"]))
    return Snapshot(source.label, store.last_event_seq(), store.last_change_seq())


def _previous_store(out: Path) -> dict | None:
    job_file = Path(out) / JOB_DIR / JOB_FILE
    if not job_file.is_file():
        return None
    try:
        return json.loads(job_file.read_text()).get("store")
    except (OSError, ValueError):
        return None


def with_events(users: pl.DataFrame, store: EventStore, snapshot: Snapshot, limit: int) -> pl.DataFrame:
    """`users` (a `user_id` column) with each user's most recent `limit` stored events (column `events`)."""
    ids = users["user_id"].to_list()
    found = store.events_for(ids, limit, until=snapshot.events_seq)
    return users.with_columns(pl.Series("events", [found.get(u, []) for u in ids], dtype=pl.List(pl.Utf8)))


def write_changes(path: Path, changes: list[Change]) -> None:
    """The snapshot's catalogue changes as Parquet (vectors as float32 bytes)."""
    frame = pl.DataFrame({
        "seq": [c.seq for c in changes], "kind": [c.kind for c in changes], "item_id": [c.item_id for c in changes],
        "record": [None if c.record is None else json.dumps(c.record) for c in changes],
        "vector": [None if c.vector is None else base64.b64encode(c.vector.tobytes()).decode() for c in changes],
        "space": [c.space for c in changes], "active": [c.active for c in changes],
    }, schema={"seq": pl.Int64, "kind": pl.Utf8, "item_id": pl.Utf8, "record": pl.Utf8, "vector": pl.Utf8,
               "space": pl.Utf8, "active": pl.Boolean})
    atomic_write(path, frame.write_parquet)


def read_changes(path: Path) -> list[Change]:
    import numpy as np

    if not path.is_file():
        return []
    return [Change(row["seq"], row["kind"], row["item_id"],
                   None if row["record"] is None else json.loads(row["record"]),
                   None if row["vector"] is None else np.frombuffer(base64.b64decode(row["vector"]), np.float32).copy(),
                   row["space"], row["active"])
            for row in pl.read_parquet(path).iter_rows(named=True)]


__all__ = ["StoreSource", "Snapshot", "take_snapshot", "with_events", "write_changes", "read_changes", "CHANGES_FILE"]
