"""Event stores: user events after the bundle was built, and live catalogue changes.

SQLite (default, one file in the service's state directory) for a single replica; Redis for
several replicas sharing one state."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

import numpy as np

EVENT_KINDS = ("view", "cart", "purchase")


class EventStore(Protocol):
    def append(self, user_id: str, item_id: str, kind: str, timestamp: float | None = None) -> int:
        """Record one event; returns the user's number of stored events."""

    def events(self, user_id: str, limit: int) -> list[str]:
        """The user's most recent `limit` item ids, oldest first."""

    def upsert_item(self, record: dict, vector: np.ndarray) -> None: ...

    def set_active(self, item_id: str, active: bool) -> None: ...

    def catalogue_changes(self) -> tuple[list[tuple[dict, np.ndarray]], dict[str, bool]]:
        """(upserted items with their vectors, item id → active flag) in the order they happened."""

    def close(self) -> None: ...


class SQLiteEventStore:
    """Thread-safe SQLite store (WAL); one connection guarded by a lock."""

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

    def append(self, user_id: str, item_id: str, kind: str, timestamp: float | None = None) -> int:
        with self._lock:
            self._db.execute("INSERT INTO events (user_id, item_id, kind, ts) VALUES (?, ?, ?, ?)",
                             (user_id, item_id, kind, timestamp if timestamp is not None else time.time()))
            return self._db.execute("SELECT COUNT(*) FROM events WHERE user_id = ?", (user_id,)).fetchone()[0]

    def events(self, user_id: str, limit: int) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT item_id FROM events WHERE user_id = ? ORDER BY seq DESC LIMIT ?",
                                    (user_id, limit)).fetchall()
        return [r[0] for r in reversed(rows)]

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

        self._redis = redis.Redis.from_url(url)
        self._redis.ping()
        self._prefix = prefix

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def append(self, user_id: str, item_id: str, kind: str, timestamp: float | None = None) -> int:
        entry = json.dumps({"item_id": item_id, "kind": kind, "ts": timestamp if timestamp is not None else time.time()})
        return int(self._redis.rpush(self._key("events", user_id), entry))

    def events(self, user_id: str, limit: int) -> list[str]:
        return [json.loads(e)["item_id"] for e in self._redis.lrange(self._key("events", user_id), -limit, -1)]

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
