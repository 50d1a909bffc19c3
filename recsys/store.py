"""Event stores: the source of truth for what happened after a bundle was built — user events (they extend the
bundle's histories) and catalogue changes (upserts with their vectors, active flags, deletions, bundle reloads).

Both are append-only logs numbered by a sequence (`seq`) that only grows: a reader that remembers the last seq
it applied asks for what came after (`changes(after=…)`), cheaply and in order, so every API worker, every
reload and every batch job converges to the same state. SQLite (default: one file in the service's state
directory, shared by the workers of one machine) or Redis (several machines).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from recsys.event_log import (EVENT_BATCH, EVENT_KINDS, EVENT_SCHEMA, HISTORY_LIMIT, Change, ChangeKind, EventRow,
                              EventStore, event_frame_of, merged_history)
from recsys.store_redis import REDIS_TIMEOUT_S, RedisEventStore, redact
from recsys.store_sqlite import WRITE_TIMEOUT_S, SQLiteEventStore


def open_store(kind: Literal["sqlite", "redis"], state_dir: str | Path, redis_url: str | None = None,
               redis_timeout_s: float = REDIS_TIMEOUT_S, sqlite_write_timeout_s: float = WRITE_TIMEOUT_S) -> EventStore:
    """The SQLite store in `state_dir` (events.sqlite) or the Redis store at `redis_url` (`redis_timeout_s`: see
    `RedisEventStore`; `sqlite_write_timeout_s`: `SQLiteEventStore`'s `write_timeout_s`)."""
    if kind == "redis":
        if not redis_url:
            raise ValueError("the Redis event store needs a URL")
        return RedisEventStore(redis_url, timeout_s=redis_timeout_s)
    return SQLiteEventStore(Path(state_dir) / "events.sqlite", write_timeout_s=sqlite_write_timeout_s)


__all__ = ["EventStore", "SQLiteEventStore", "RedisEventStore", "Change", "ChangeKind", "EventRow", "EVENT_SCHEMA",
           "event_frame_of", "merged_history",
           "open_store", "redact", "EVENT_BATCH", "EVENT_KINDS", "HISTORY_LIMIT", "REDIS_TIMEOUT_S"]
