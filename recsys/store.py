"""Event stores: the source of truth for what happened after a bundle was built — user events (they extend the
bundle's histories) and catalogue changes (upserts with their vectors, active flags, deletions, bundle reloads).

Both are append-only logs numbered by a sequence (`seq`) that only grows: a reader that remembers the last seq
it applied asks for what came after (`changes(after=…)`), cheaply and in order, so every API worker, every
reload and every batch job converges to the same state. SQLite (default: one file in the service's state
directory, shared by the workers of one machine) or Redis (several machines).
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import polars as pl

from recsys.errors import StoreError

EVENT_KINDS = ("view", "cart", "purchase")
HISTORY_LIMIT = 200
"""Most recent items of a history (bundle history + events) a query reads, in the API and in batch jobs."""
ChangeKind = Literal["upsert", "active", "delete", "bundle"]
EventRow = tuple[int, str, str, str, float]
"""One stored event: (seq, user_id, item_id, kind, timestamp in seconds)."""
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

    def kinds(self, user_id: str, item_ids: Collection[str], limit: int = HISTORY_LIMIT) -> dict[str, str]:
        """The kind of the user's latest event on each of `item_ids` that has one among the user's most recent
        `limit` events (view, cart, purchase): what a history of `limit` items needs, read in the same time
        whatever the user's whole history."""

    def event_users(self, until: int | None = None) -> list[str]:
        """Every user with at least one event (seq ≤ `until`)."""

    def last_event_seq(self) -> int: ...

    def event_frame(self, until: int | None = None, kinds: Collection[str] | None = None) -> pl.DataFrame:
        """Every stored event (seq ≤ `until` when given; only `kinds` when given) as an `EVENT_SCHEMA` frame in seq
        order, read in batches: what `recsys refresh-stats --store` counts."""

    def record_change(self, kind: ChangeKind, item_id: str | None = None, record: dict | None = None,
                      vector: np.ndarray | None = None, space: str | None = None, active: bool | None = None) -> int:
        """Append a catalogue change; returns its seq."""

    def changes(self, after: int = 0, until: int | None = None) -> list[Change]:
        """Changes with after < seq ≤ until, in order."""

    def last_change_seq(self) -> int: ...

    def close(self) -> None: ...


def _vector_bytes(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.asarray(vector, dtype=np.float32).tobytes()


def _vector(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()


class SQLiteEventStore:
    """Thread-safe SQLite store (WAL; several processes may share the file); one connection per store guarded by
    a lock. Tables `events` and `changes`, each keyed by its seq, and `user_events`: each user's event count, so
    an insert costs the same for a user with one event or a million."""

    COUNT = ("INSERT INTO user_events (user_id, n) VALUES (?, ?) ON CONFLICT(user_id) DO UPDATE SET n = n + "
             "excluded.n RETURNING n")

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT, "
                         "item_id TEXT, kind TEXT, ts REAL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS events_user ON events(user_id, seq)")
        self._db.execute("CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, "
                         "item_id TEXT, record TEXT, vector BLOB, space TEXT, active INTEGER, ts REAL)")
        self._migrate()
        self._count_users()

    def _migrate(self) -> None:
        """State directories written before the change log kept items / item_state tables: copy them into it."""
        with self._lock:
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "items" not in tables or self._db.execute("SELECT COUNT(*) FROM changes").fetchone()[0]:
                return
            self._db.execute("BEGIN IMMEDIATE")
            for item_id, record, vector in self._db.execute("SELECT item_id, record, vector FROM items ORDER BY seq"):
                self._db.execute("INSERT INTO changes (kind, item_id, record, vector, ts) VALUES ('upsert', ?, ?, ?, ?)",
                                 (item_id, record, vector, time.time()))
            if "item_state" in tables:
                for item_id, active in self._db.execute("SELECT item_id, active FROM item_state"):
                    self._db.execute("INSERT INTO changes (kind, item_id, active, ts) VALUES ('active', ?, ?, ?)",
                                     (item_id, int(active), time.time()))
            self._db.execute("COMMIT")

    def _count_users(self) -> None:
        """Each user's event count, kept per insert; a new store, or one written before the counts existed, is
        counted once, here."""
        with self._lock, self._transaction():
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

    # ---- events -------------------------------------------------------------------------------
    def append(self, user_id: str, item_id: str, kind: str, timestamp: float | None = None) -> int:
        return self.append_many(user_id, [item_id], kind, timestamp)

    def append_many(self, user_id: str, item_ids: Iterable[str], kind: str = "view",
                    timestamp: float | None = None) -> int:
        ts = timestamp if timestamp is not None else time.time()
        rows = [(user_id, item_id, kind, ts) for item_id in item_ids]
        with self._lock, self._transaction():
            self._db.executemany("INSERT INTO events (user_id, item_id, kind, ts) VALUES (?, ?, ?, ?)", rows)
            return self._db.execute(self.COUNT, (user_id, len(rows))).fetchall()[0][0]

    def events(self, user_id: str, limit: int, until: int | None = None) -> list[str]:
        bound, args = ("AND seq <= ? ", (until,)) if until is not None else ("", ())
        with self._lock:
            rows = self._db.execute(f"SELECT item_id FROM events WHERE user_id = ? {bound}ORDER BY seq DESC LIMIT ?",
                                    (user_id, *args, limit)).fetchall()
        return [r[0] for r in reversed(rows)]

    def events_for(self, user_ids: Iterable[str], limit: int, until: int | None = None) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        users = list(dict.fromkeys(user_ids))
        bound, args = ("AND seq <= ? ", (until,)) if until is not None else ("", ())
        for start in range(0, len(users), 500):
            chunk = users[start:start + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(f"SELECT user_id, item_id FROM events WHERE user_id IN ({marks}) {bound}"
                                        "ORDER BY seq", (*chunk, *args)).fetchall()
            for user_id, item_id in rows:
                out.setdefault(user_id, []).append(item_id)
        return {user: items[-limit:] for user, items in out.items()}

    def kinds(self, user_id: str, item_ids: Collection[str], limit: int = HISTORY_LIMIT) -> dict[str, str]:
        wanted = list(dict.fromkeys(item_ids))[:500]
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        with self._lock:
            rows = self._db.execute("SELECT item_id, kind FROM (SELECT seq, item_id, kind FROM events WHERE "
                                    f"user_id = ? ORDER BY seq DESC LIMIT ?) WHERE item_id IN ({marks}) ORDER BY seq",
                                    (user_id, limit, *wanted)).fetchall()
        return dict(rows)

    def event_users(self, until: int | None = None) -> list[str]:
        bound, args = ("WHERE seq <= ? ", (until,)) if until is not None else ("", ())
        with self._lock:
            return [r[0] for r in self._db.execute(f"SELECT DISTINCT user_id FROM events {bound}ORDER BY user_id",
                                                   args)]

    def last_event_seq(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    def event_frame(self, until: int | None = None, kinds: Collection[str] | None = None) -> pl.DataFrame:
        where, args = ["seq <= ?"] if until is not None else [], [until] if until is not None else []
        if kinds is not None:
            kinds = list(kinds)
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args += kinds
        sql = ("SELECT seq, user_id, item_id, kind, ts FROM events " + (f"WHERE {' AND '.join(where)} " if where
                                                                        else "") + "ORDER BY seq")
        with self._lock:  # the cursor is read while the lock is held: one statement on the connection at a time
            return event_frame_of(self._db.execute(sql, args))

    # ---- catalogue changes ------------------------------------------------------------------------
    def record_change(self, kind: ChangeKind, item_id: str | None = None, record: dict | None = None,
                      vector: np.ndarray | None = None, space: str | None = None, active: bool | None = None) -> int:
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO changes (kind, item_id, record, vector, space, active, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (kind, item_id, None if record is None else json.dumps(record), _vector_bytes(vector), space,
                 None if active is None else int(active), time.time()))
            return int(cursor.lastrowid)

    def changes(self, after: int = 0, until: int | None = None) -> list[Change]:
        bound, args = ("AND seq <= ? ", (until,)) if until is not None else ("", ())
        with self._lock:
            rows = self._db.execute(f"SELECT seq, kind, item_id, record, vector, space, active FROM changes "
                                    f"WHERE seq > ? {bound}ORDER BY seq", (after, *args)).fetchall()
        return [Change(seq, kind, item_id, None if record is None else json.loads(record), _vector(vector), space,
                       None if active is None else bool(active))
                for seq, kind, item_id, record, vector, space, active in rows]

    def last_change_seq(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


# Redis: each log is appended by a Lua script, so taking the next seq and writing the entry are one atomic step
# (a reader never sees seq n+1 before n).
_APPEND_EVENT = """
local seq = redis.call('INCR', KEYS[1])
local n = redis.call('RPUSH', KEYS[2], cjson.encode({item_id=ARGV[1], kind=ARGV[2], ts=tonumber(ARGV[3]), seq=seq}))
redis.call('SADD', KEYS[3], ARGV[4])
return n
"""
_APPEND_CHANGE = """
local seq = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], seq, seq .. '|' .. ARGV[1])
return seq
"""


class RedisEventStore:
    """Shared store for several replicas (needs the `redis` package and a Redis server): events in a list per
    user, changes in a sorted set scored by seq."""

    def __init__(self, url: str, prefix: str = "recsys") -> None:
        import redis

        try:
            self._redis = redis.Redis.from_url(url, socket_connect_timeout=5)
            self._redis.ping()
        except (redis.RedisError, ValueError) as exc:
            raise StoreError(f"cannot reach Redis at {redact(url)}: {exc}") from None
        self._prefix = prefix
        self._append_event = self._redis.register_script(_APPEND_EVENT)
        self._append_change = self._redis.register_script(_APPEND_CHANGE)

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    # ---- events -------------------------------------------------------------------------------
    def _event_keys(self, user_id: str) -> list[str]:
        return [self._key("event_seq"), self._key("events", user_id), self._key("users")]

    def append(self, user_id: str, item_id: str, kind: str, timestamp: float | None = None) -> int:
        stamp = repr(float(timestamp if timestamp is not None else time.time()))
        # one round trip; RPUSH answers the list's length: O(1) whatever the user's history
        return int(self._append_event(keys=self._event_keys(user_id), args=[item_id, kind, stamp, user_id]))

    def append_many(self, user_id: str, item_ids: Iterable[str], kind: str = "view",
                    timestamp: float | None = None, batch: int = 10_000) -> int:
        keys = self._event_keys(user_id)
        stamp = repr(float(timestamp if timestamp is not None else time.time()))
        items, count = list(item_ids), None
        for start in range(0, len(items), batch):  # one round trip per batch, each event its own seq
            pipe = self._redis.pipeline(transaction=False)
            for item_id in items[start:start + batch]:
                self._append_event(keys=keys, args=[item_id, kind, stamp, user_id], client=pipe)
            count = int(pipe.execute()[-1])
        return count if count is not None else int(self._redis.llen(self._key("events", user_id)))

    def _entries(self, user_id: str, limit: int | None, until: int | None) -> list[str]:
        raw = self._redis.lrange(self._key("events", user_id), 0 if until is not None or limit is None else -limit, -1)
        entries = [json.loads(e) for e in raw]
        if until is not None:
            entries = [e for e in entries if e.get("seq", 0) <= until]
        items = [e["item_id"] for e in entries]
        return items[-limit:] if limit is not None else items

    def events(self, user_id: str, limit: int, until: int | None = None) -> list[str]:
        return self._entries(user_id, limit, until)

    def events_for(self, user_ids: Iterable[str], limit: int, until: int | None = None) -> dict[str, list[str]]:
        out = {user: self._entries(user, limit, until) for user in dict.fromkeys(user_ids)}
        return {user: items for user, items in out.items() if items}

    def kinds(self, user_id: str, item_ids: Collection[str], limit: int = HISTORY_LIMIT) -> dict[str, str]:
        wanted = set(item_ids)
        if not wanted:
            return {}
        events = (json.loads(e) for e in self._redis.lrange(self._key("events", user_id), -limit, -1))
        return {e["item_id"]: e["kind"] for e in events if e["item_id"] in wanted}

    def event_users(self, until: int | None = None) -> list[str]:
        users = sorted(u.decode() for u in self._redis.smembers(self._key("users")))
        return users if until is None else [u for u in users if self._entries(u, 1, until)]

    def last_event_seq(self) -> int:
        return int(self._redis.get(self._key("event_seq")) or 0)

    def event_frame(self, until: int | None = None, kinds: Collection[str] | None = None) -> pl.DataFrame:
        wanted = None if kinds is None else set(kinds)

        def rows() -> Iterator[EventRow]:
            for user in sorted(u.decode() for u in self._redis.smembers(self._key("users"))):
                for raw in self._redis.lrange(self._key("events", user), 0, -1):
                    entry = json.loads(raw)
                    seq = int(entry.get("seq", 0))  # entries written before events had a seq count as the oldest
                    if (until is None or seq <= until) and (wanted is None or entry["kind"] in wanted):
                        yield seq, user, entry["item_id"], entry["kind"], float(entry.get("ts", 0.0))

        return event_frame_of(rows()).sort("seq", maintain_order=True)

    # ---- catalogue changes ------------------------------------------------------------------------
    def record_change(self, kind: ChangeKind, item_id: str | None = None, record: dict | None = None,
                      vector: np.ndarray | None = None, space: str | None = None, active: bool | None = None) -> int:
        blob = _vector_bytes(vector)
        payload = json.dumps({"kind": kind, "item_id": item_id, "record": record, "space": space, "active": active,
                              "vector": None if blob is None else base64.b64encode(blob).decode()})
        return int(self._append_change(keys=[self._key("change_seq"), self._key("changes")], args=[payload]))

    def changes(self, after: int = 0, until: int | None = None) -> list[Change]:
        members = self._redis.zrangebyscore(self._key("changes"), f"({after}", "+inf" if until is None else until)
        out = []
        for member in members:
            seq, payload = member.decode().split("|", 1)
            entry = json.loads(payload)
            vector = None if entry["vector"] is None else _vector(base64.b64decode(entry["vector"]))
            out.append(Change(int(seq), entry["kind"], entry["item_id"], entry["record"], vector, entry["space"],
                              entry["active"]))
        return out

    def last_change_seq(self) -> int:
        return int(self._redis.get(self._key("change_seq")) or 0)

    def close(self) -> None:
        self._redis.close()


def redact(url: str) -> str:
    """`url` without its password (error messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def open_store(kind: Literal["sqlite", "redis"], state_dir: str | Path, redis_url: str | None = None) -> EventStore:
    """The SQLite store in `state_dir` (events.sqlite) or the Redis store at `redis_url`."""
    if kind == "redis":
        if not redis_url:
            raise ValueError("the Redis event store needs a URL")
        return RedisEventStore(redis_url)
    return SQLiteEventStore(Path(state_dir) / "events.sqlite")


__all__ = ["EventStore", "SQLiteEventStore", "RedisEventStore", "Change", "ChangeKind", "EventRow", "EVENT_SCHEMA",
           "event_frame_of", "merged_history",
           "open_store", "redact", "EVENT_KINDS", "HISTORY_LIMIT"]
