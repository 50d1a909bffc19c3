"""Event store benchmark: the cost of recording one event, and of reading the user's recent history, for a user
whose history grows to millions of events.

For each history length, `inserts` timed `append` calls (each one committed, as the API makes them) and as many
timed reads of the user's last `HISTORY_LIMIT` events (what a request reads) on the SQLite store, and, for
comparison, the previous implementation's insert (the same INSERT followed by `SELECT COUNT(*)` over the user's
events) on the same file; optionally the Redis store. Writes store.json,
store.md and store.png via benchmarks/common.py."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.store import HISTORY_LIMIT, REDIS_TIMEOUT_S, RedisEventStore, SQLiteEventStore
from benchmarks.common import Column, environment, write_report

USER = "heavy-user"
PREVIOUS_INSERT = ("INSERT INTO events (user_id, item_id, kind, ts) VALUES (?, ?, 'view', ?)",
                   "SELECT COUNT(*) FROM events WHERE user_id = ?")


def _timed(call: Callable[[int], object], n: int) -> dict[str, float]:
    """Median, p99 and mean of `n` calls, in milliseconds."""
    seconds = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        seconds.append(time.perf_counter() - started)
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def _grow(store, have: int, want: int, batch: int = 50_000) -> None:
    for start in range(have, want, batch):
        store.append_many(USER, [f"i{j % 1_000}" for j in range(start, min(start + batch, want))])


def _sqlite_rows(lengths: Sequence[int], inserts: int, directory: Path, log) -> list[dict]:
    path = directory / "events.sqlite"
    store = SQLiteEventStore(path)
    previous = sqlite3.connect(str(path), isolation_level=None)  # the previous implementation's statements
    rows, have = [], 0
    for length in lengths:
        _grow(store, have, length)
        have = length
        now = _timed(lambda i: store.append(USER, f"n{i}", "view"), inserts)
        have += inserts
        read = _timed(lambda i: store.events(USER, HISTORY_LIMIT), inserts)

        def previous_insert(i: int) -> int:
            previous.execute(PREVIOUS_INSERT[0], (USER, f"p{i}", time.time()))
            return previous.execute(PREVIOUS_INSERT[1], (USER,)).fetchone()[0]

        before = _timed(previous_insert, max(inserts // 5, 10))
        have += max(inserts // 5, 10)  # (those bypassed the store's counter: nothing reads it here)
        rows.append({"store": "sqlite", "history_events": length, "insert_p50_ms": now["p50_ms"],
                     "insert_p99_ms": now["p99_ms"], "history_p50_ms": read["p50_ms"],
                     "history_p99_ms": read["p99_ms"], "previous_insert_p50_ms": before["p50_ms"],
                     "previous_insert_p99_ms": before["p99_ms"]})
        log(f"sqlite, {length:,} events: insert p50 {now['p50_ms']:.3f} ms (previously {before['p50_ms']:.3f} ms), "
            f"history read p50 {read['p50_ms']:.3f} ms")
    previous.close()
    store.close()
    return rows


def _redis_rows(lengths: Sequence[int], inserts: int, url: str, log) -> list[dict]:
    import redis

    prefix = f"recsys-bench-{time.time_ns()}"
    store = RedisEventStore(url, prefix=prefix)
    rows, have = [], 0
    try:
        for length in lengths:
            _grow(store, have, length)
            have = length
            now = _timed(lambda i: store.append(USER, f"n{i}", "view"), inserts)
            have += inserts
            read = _timed(lambda i: store.events(USER, HISTORY_LIMIT), inserts)
            rows.append({"store": "redis", "history_events": length, "insert_p50_ms": now["p50_ms"],
                         "insert_p99_ms": now["p99_ms"], "history_p50_ms": read["p50_ms"],
                         "history_p99_ms": read["p99_ms"]})
            log(f"redis, {length:,} events: insert p50 {now['p50_ms']:.3f} ms, "
                f"history read p50 {read['p50_ms']:.3f} ms")
    finally:
        store.close()
        with redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_S,
                                  socket_timeout=REDIS_TIMEOUT_S) as client:
            client.delete(f"{prefix}:events:{USER}")
    return rows


def _chart(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for store in dict.fromkeys(r["store"] for r in rows):
        mine = [r for r in rows if r["store"] == store]
        xs = [max(r["history_events"], 1) for r in mine]
        ax.plot(xs, [r["insert_p50_ms"] for r in mine], marker="o", label=f"{store}: insert p50")
        ax.plot(xs, [r["insert_p99_ms"] for r in mine], marker=".", linestyle=":", label=f"{store}: insert p99")
        if "previous_insert_p50_ms" in mine[0]:
            ax.plot(xs, [r["previous_insert_p50_ms"] for r in mine], marker="s", linestyle="--",
                    label=f"{store}: previous insert (COUNT(*)) p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("events already stored for the user")
    ax.set_ylabel("ms per recorded event")
    ax.set_title("Event store: cost of one insert vs the user's history")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(out: Path, lengths: Sequence[int], inserts: int = 300, redis_url: str | None = None, command: str = "",
        log=print) -> dict[str, Path]:
    """Benchmark each history length (cumulative: one user's history grows through them) and write the report."""
    if redis_url:  # an unreachable Redis (StoreError) fails now, not after the SQLite runs
        RedisEventStore(redis_url, prefix="recsys-bench-check").close()
    with tempfile.TemporaryDirectory(prefix="recsys-bench-store-") as tmp:
        rows = _sqlite_rows(lengths, inserts, Path(tmp), log)
    if redis_url:
        rows += _redis_rows(lengths, inserts, redis_url, log)
    notes = [f"command: `{command}`" if command else "command: (library call)",
             f"{inserts} timed inserts per history length, each committed on its own (as `POST /v1/events` does); "
             "one user's history grows through the lengths",
             "previous insert: the store before issue 15 (INSERT, then `SELECT COUNT(*)` over the user's events, "
             "under the store lock), run on the same file",
             "SQLite in WAL mode with its default synchronous=FULL: every insert waits for the disk",
             f"history read: the user's last {HISTORY_LIMIT} events (`events(user, {HISTORY_LIMIT})`, what a request "
             "reads), timed as often as the inserts"]
    columns = [Column("store"), Column("history_events", "events stored", ",.0f"),
               Column("insert_p50_ms", "insert p50 ms", ".3f"), Column("insert_p99_ms", "insert p99 ms", ".3f"),
               Column("history_p50_ms", "history read p50 ms", ".3f"),
               Column("history_p99_ms", "history read p99 ms", ".3f"),
               Column("previous_insert_p50_ms", "previous p50 ms", ".3f"),
               Column("previous_insert_p99_ms", "previous p99 ms", ".3f")]
    meta = {"environment": environment(("numpy", "redis")), "command": command, "inserts": inserts,
            "lengths": list(lengths), "redis": bool(redis_url)}
    title = "Event store: one insert and one history read vs the user's history length"
    return write_report(out, "store", rows, columns, title=title, meta=meta, notes=notes, chart=_chart)
