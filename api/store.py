"""Event stores: user events after the bundle was built, and live catalogue changes.

SQLite (default, one file in the service's state directory) for a single replica; Redis for
several replicas sharing one state."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Collection
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from recsys.errors import RecsysError

EVENT_KINDS = ("view", "cart", "purchase")


class StoreError(RecsysError):
    """The event store cannot be opened or reached (one line, naming the setting to fix)."""


class EventStore(Protocol):
    def append(self, user_id: str, item_id: str, kind: str, timestamp: float | None = None) -> int:
        """Record one event; returns the user's number of stored events (in constant time, whatever the
        user's history length)."""

    def append_many(self, user_id: str, item_ids: Iterable[str], kind: str = "view",
                    timestamp: float | None = None) -> int:
        """Record many events of one user at once (imports, benchmarks); returns the user's count."""

    def events(self, user_id: str, limit: int) -> list[str]:
        """The user's most recent `limit` item ids, oldest first."""

    def kinds(self, user_id: str, item_ids: Collection[str]) -> dict[str, str]:
        """The kind of the user's latest event on each of `item_ids` that has one (view, cart, purchase)."""

    def upsert_item(self, record: dict, vector: np.ndarray) -> None: ...

    def set_active(self, item_id: str, active: bool) -> None: ...

    def catalogue_changes(self) -> tuple[list[tuple[dict, np.ndarray]], dict[str, bool]]:
        """(upserted items with their vectors, item id → active flag) in the order they happened."""

    def close(self) -> None: ...


class SQLiteEventStore:
    """Thread-safe SQLite store (WAL); one connection guarded by a lock. Each user's event count is kept in
    its own table, so an insert costs the same for a user with one event or a million."""

    COUNT = ("INSERT INTO user_events (user_id, n) VALUES (?, ?) ON CONFLICT(user_id) DO UPDATE SET n = n + "
             "excluded.n RETURNING n")

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT, "
                         "item_id TEXT, kind TEXT, ts REAL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS events_user ON events(user_id, seq)")
        self._db.execute("CREATE TABLE IF NOT EXISTS items (item_id TEXT PRIMARY KEY, seq INTEGER, record TEXT, "
                         "vector BLOB)")
        self._db.execute("CREATE TABLE IF NOT EXISTS item_state (item_id TEXT PRIMARY KEY, active INTEGER)")
        with self._transaction():  # a new store, or one written before the counts existed: count once, here
            if self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'user_events'").fetchone() is None:
                self._db.execute("CREATE TABLE user_events (user_id TEXT PRIMARY KEY, n INTEGER NOT NULL) "
                                 "WITHOUT ROWID")
                self._db.execute("INSERT INTO user_events SELECT user_id, COUNT(*) FROM events GROUP BY user_id")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN … COMMIT (ROLLBACK on error): events and their count land together."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def append(self, user_id: str, item_id: str, kind: str, timestamp: float | None = None) -> int:
        return self.append_many(user_id, [item_id], kind, timestamp)

    def append_many(self, user_id: str, item_ids: Iterable[str], kind: str = "view",
                    timestamp: float | None = None) -> int:
        ts = timestamp if timestamp is not None else time.time()
        rows = [(user_id, item_id, kind, ts) for item_id in item_ids]
        with self._lock, self._transaction():
            self._db.executemany("INSERT INTO events (user_id, item_id, kind, ts) VALUES (?, ?, ?, ?)", rows)
            return self._db.execute(self.COUNT, (user_id, len(rows))).fetchall()[0][0]

    def events(self, user_id: str, limit: int) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT item_id FROM events WHERE user_id = ? ORDER BY seq DESC LIMIT ?",
                                    (user_id, limit)).fetchall()
        return [r[0] for r in reversed(rows)]

    def kinds(self, user_id: str, item_ids: Collection[str]) -> dict[str, str]:
        wanted = list(dict.fromkeys(item_ids))[:500]
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        with self._lock:
            rows = self._db.execute(f"SELECT item_id, kind FROM events WHERE user_id = ? AND item_id IN ({marks}) "
                                    "ORDER BY seq", (user_id, *wanted)).fetchall()
        return dict(rows)

    def upsert_item(self, record: dict, vector: np.ndarray) -> None:
        blob = np.asarray(vector, dtype=np.float32).tobytes()
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO items VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM items), "
                             "?, ?)", (record["item_id"], json.dumps(record), blob))

    def set_active(self, item_id: str, active: bool) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO item_state VALUES (?, ?)", (item_id, int(active)))

    def catalogue_changes(self) -> tuple[list[tuple[dict, np.ndarray]], dict[str, bool]]:
        with self._lock:
            items = self._db.execute("SELECT record, vector FROM items ORDER BY seq").fetchall()
            states = self._db.execute("SELECT item_id, active FROM item_state").fetchall()
        return ([(json.loads(r), np.frombuffer(v, dtype=np.float32).copy()) for r, v in items],
                {i: bool(a) for i, a in states})

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisEventStore:
    """Shared store for several replicas (needs the `redis` package and a Redis server)."""

    def __init__(self, url: str, prefix: str = "recsys") -> None:
        import redis

        try:
            self._redis = redis.Redis.from_url(url, socket_connect_timeout=5)
            self._redis.ping()
        except (redis.RedisError, ValueError) as exc:
            raise StoreError(f"cannot reach Redis at {redact(url)}: {exc}") from None
        self._prefix = prefix

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def append(self, user_id: str, item_id: str, kind: str, timestamp: float | None = None) -> int:
        return self.append_many(user_id, [item_id], kind, timestamp)

    def append_many(self, user_id: str, item_ids: Iterable[str], kind: str = "view",
                    timestamp: float | None = None) -> int:
        ts = timestamp if timestamp is not None else time.time()
        entries = [json.dumps({"item_id": item_id, "kind": kind, "ts": ts}) for item_id in item_ids]
        if not entries:
            return int(self._redis.llen(self._key("events", user_id)))
        return int(self._redis.rpush(self._key("events", user_id), *entries))  # RPUSH answers the length: O(1)

    def events(self, user_id: str, limit: int) -> list[str]:
        return [json.loads(e)["item_id"] for e in self._redis.lrange(self._key("events", user_id), -limit, -1)]

    def kinds(self, user_id: str, item_ids: Collection[str]) -> dict[str, str]:
        wanted = set(item_ids)
        if not wanted:
            return {}
        events = (json.loads(e) for e in self._redis.lrange(self._key("events", user_id), 0, -1))
        return {e["item_id"]: e["kind"] for e in events if e["item_id"] in wanted}

    def upsert_item(self, record: dict, vector: np.ndarray) -> None:
        pipe = self._redis.pipeline()
        pipe.hset(self._key("items"), record["item_id"], json.dumps(record))
        pipe.hset(self._key("vectors"), record["item_id"], np.asarray(vector, dtype=np.float32).tobytes())
        pipe.zadd(self._key("item_order"), {record["item_id"]: self._redis.incr(self._key("item_seq"))})
        pipe.execute()

    def set_active(self, item_id: str, active: bool) -> None:
        self._redis.hset(self._key("item_state"), item_id, int(active))

    def catalogue_changes(self) -> tuple[list[tuple[dict, np.ndarray]], dict[str, bool]]:
        order = [i.decode() for i in self._redis.zrange(self._key("item_order"), 0, -1)]
        records = self._redis.hgetall(self._key("items"))
        vectors = self._redis.hgetall(self._key("vectors"))
        items = [(json.loads(records[i.encode()]), np.frombuffer(vectors[i.encode()], dtype=np.float32).copy())
                 for i in order]
        states = {k.decode(): bool(int(v)) for k, v in self._redis.hgetall(self._key("item_state")).items()}
        return items, states

    def close(self) -> None:
        self._redis.close()


def redact(url: str) -> str:
    """`url` without its password (error messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
