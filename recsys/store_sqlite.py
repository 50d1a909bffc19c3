"""The SQLite event store: one file in the service's state directory, shared by the workers of one machine."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl

from recsys.event_log import Change, ChangeKind, event_frame_of, vector_bytes, vector_of


WAL_TRIES = 50  # × 0.1 s
OPEN_TIMEOUT_S = 30.0
"""How long opening a store (WAL switch, migrations, counts) and every read wait on a locked file: start-up answers
no client, and a WAL reader hardly ever waits."""
WRITE_TIMEOUT_S = 30.0
"""How long a write waits by default on another process's write before 'database is locked' (the API passes its
shorter `RECSYS_SQLITE_WRITE_TIMEOUT_S`: a client is waiting)."""


def _enable_wal(db: sqlite3.Connection) -> None:
    """Switch a store to WAL. Two processes opening a new store at once (a batch job and the API, uvicorn's workers)
    both convert it, and SQLite answers one of them 'database is locked' at once, without waiting for the busy
    timeout: retry briefly."""
    for attempt in range(WAL_TRIES):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_TRIES - 1:
                raise
            time.sleep(0.1)


class SQLiteEventStore:
    """Thread-safe SQLite store (WAL; several processes may share the file): one connection for writes and one for
    reads, each guarded by its lock, so a read never queues behind a write (WAL readers do not wait for the writer;
    a write waits up to `write_timeout_s` while another process writes, then raises sqlite3.OperationalError
    'database is locked'; it waits as long at most for this process's earlier writes, so a queue of writes behind a
    locked file fails within about twice the timeout each, not one timeout after the other). Tables `events` and
    `changes`, each keyed by its seq, and `user_events`: each user's event count, so an insert costs the same for a
    user with one event or a million."""

    reads_wait = False  # WAL: the reader connection never waits for a writer (`EventStore.reads_wait`)
    COUNT = ("INSERT INTO user_events (user_id, n) VALUES (?, ?) ON CONFLICT(user_id) DO UPDATE SET n = n + "
             "excluded.n RETURNING n")

    def __init__(self, path: str | Path, write_timeout_s: float = WRITE_TIMEOUT_S) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self.write_timeout_s = write_timeout_s
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=OPEN_TIMEOUT_S)
        _enable_wal(self._db)
        self._db.execute("CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT, "
                         "item_id TEXT, kind TEXT, ts REAL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS events_user ON events(user_id, seq)")
        self._db.execute("CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, "
                         "item_id TEXT, record TEXT, vector BLOB, space TEXT, active INTEGER, ts REAL)")
        self._migrate()
        self._count_users()
        self._db.execute(f"PRAGMA busy_timeout = {max(1, round(write_timeout_s * 1000))}")  # the writes from here on
        self._read_lock = threading.Lock()
        self._reader = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                       timeout=OPEN_TIMEOUT_S)

    def _migrate(self) -> None:
        """State directories written before the change log kept items / item_state tables: copy them into it."""
        with self._lock:
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "items" not in tables or self._db.execute("SELECT COUNT(*) FROM changes").fetchone()[0]:
                return
            self._db.execute("BEGIN IMMEDIATE")
            for item_id, record, vector in self._db.execute("SELECT item_id, record, vector FROM items ORDER BY seq"):
                self._db.execute("INSERT INTO changes (kind, item_id, record, vector, ts) "
                                 "VALUES ('upsert', ?, ?, ?, ?)",
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
    def _writing(self) -> Iterator[None]:
        """The writer connection, once this process's earlier writes are done: they may each wait up to the
        timeout for another process's lock, so the wait for them is bounded too ('database is locked', as SQLite
        says it)."""
        if not self._lock.acquire(timeout=self.write_timeout_s):
            raise sqlite3.OperationalError(f"database is locked (this process's earlier writes held it for "
                                           f"{self.write_timeout_s:g} s)")
        try:
            yield
        finally:
            self._lock.release()

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
        with self._writing(), self._transaction():
            self._db.executemany("INSERT INTO events (user_id, item_id, kind, ts) VALUES (?, ?, ?, ?)", rows)
            return self._db.execute(self.COUNT, (user_id, len(rows))).fetchall()[0][0]

    def events(self, user_id: str, limit: int, until: int | None = None) -> list[str]:
        return [item_id for item_id, _ in self.events_with_kinds(user_id, limit, until)]

    def events_with_kinds(self, user_id: str, limit: int, until: int | None = None) -> list[tuple[str, str]]:
        bound, args = ("AND seq <= ? ", (until,)) if until is not None else ("", ())
        with self._read_lock:
            rows = self._reader.execute(f"SELECT item_id, kind FROM events WHERE user_id = ? {bound}ORDER BY seq "
                                        "DESC LIMIT ?", (user_id, *args, limit)).fetchall()
        return rows[::-1]

    def events_for(self, user_ids: Iterable[str], limit: int, until: int | None = None) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        users = list(dict.fromkeys(user_ids))
        bound, args = ("AND seq <= ? ", (until,)) if until is not None else ("", ())
        for start in range(0, len(users), 500):
            chunk = users[start:start + 500]
            marks = ",".join("?" * len(chunk))
            with self._read_lock:
                rows = self._reader.execute(f"SELECT user_id, item_id FROM events WHERE user_id IN ({marks}) {bound}"
                                            "ORDER BY seq", (*chunk, *args)).fetchall()
            for user_id, item_id in rows:
                out.setdefault(user_id, []).append(item_id)
        return {user: items[-limit:] for user, items in out.items()}

    def event_users(self, until: int | None = None) -> list[str]:
        bound, args = ("WHERE seq <= ? ", (until,)) if until is not None else ("", ())
        with self._read_lock:
            return [r[0] for r in self._reader.execute(f"SELECT DISTINCT user_id FROM events {bound}ORDER BY user_id",
                                                       args)]

    def last_event_seq(self) -> int:
        with self._read_lock:
            return int(self._reader.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    def event_items(self, limit: int) -> list[str]:
        with self._read_lock:
            return [r[0] for r in self._reader.execute("SELECT item_id FROM events ORDER BY seq LIMIT ?", (limit,))]

    def event_frame(self, until: int | None = None, kinds: Collection[str] | None = None) -> pl.DataFrame:
        where, args = ["seq <= ?"] if until is not None else [], [until] if until is not None else []
        if kinds is not None:
            kinds = list(kinds)
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args += kinds
        sql = ("SELECT seq, user_id, item_id, kind, ts FROM events " + (f"WHERE {' AND '.join(where)} " if where
                                                                        else "") + "ORDER BY seq")
        with self._read_lock:  # the cursor is read while the lock is held: one statement on the connection at a time
            return event_frame_of(self._reader.execute(sql, args))

    # ---- catalogue changes ------------------------------------------------------------------------
    def record_change(self, kind: ChangeKind, item_id: str | None = None, record: dict | None = None,
                      vector: np.ndarray | None = None, space: str | None = None, active: bool | None = None) -> int:
        return self.record_changes([Change(0, kind, item_id, record, vector, space, active)])[0]

    def record_changes(self, changes: Sequence[Change]) -> list[int]:
        now = time.time()
        with self._writing(), self._transaction():
            return [int(self._db.execute(
                "INSERT INTO changes (kind, item_id, record, vector, space, active, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (c.kind, c.item_id, None if c.record is None else json.dumps(c.record), vector_bytes(c.vector),
                 c.space, None if c.active is None else int(c.active), now)).lastrowid) for c in changes]

    def changes(self, after: int = 0, until: int | None = None) -> list[Change]:
        bound, args = ("AND seq <= ? ", (until,)) if until is not None else ("", ())
        with self._read_lock:
            rows = self._reader.execute(f"SELECT seq, kind, item_id, record, vector, space, active FROM changes "
                                        f"WHERE seq > ? {bound}ORDER BY seq", (after, *args)).fetchall()
        return [Change(seq, kind, item_id, None if record is None else json.loads(record), vector_of(vector), space,
                       None if active is None else bool(active))
                for seq, kind, item_id, record, vector, space, active in rows]

    def changed_items(self) -> list[tuple[str, str | None]]:
        with self._read_lock:
            return [(kind, item_id) for kind, item_id in
                    self._reader.execute("SELECT kind, item_id FROM changes ORDER BY seq").fetchall()]

    def latest_bundle(self) -> dict | None:
        with self._read_lock:
            row = self._reader.execute("SELECT record FROM changes WHERE kind = 'bundle' ORDER BY seq DESC "
                                       "LIMIT 1").fetchone()
        return None if row is None or row[0] is None else json.loads(row[0])

    def last_change_seq(self) -> int:
        with self._read_lock:
            return int(self._reader.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0])

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._reader.close()
            self._db.close()
