"""Serving internals: query-vector cache, micro-batching, event stores (SQLite and Redis)."""

import random
import socket
import threading
import time

import numpy as np
import pytest

from api.batching import MicroBatchingEncoder
from recsys.catalogue import Catalogue
from recsys.config import UserTowerConfig
from recsys.store import EVENT_SCHEMA, Change, RedisEventStore, SQLiteEventStore
from recsys.towers import UserTower
from recsys.user_tower import CachedHistoryEncoder, PooledHistoryEncoder


class CountingTower(UserTower):
    dim = 2

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = []
        self.delay = delay

    def encode_histories(self, histories):
        self.calls.append(len(histories))
        time.sleep(self.delay)
        return np.array([[len(h), 1.0] for h in histories], dtype=np.float32)


def test_cache_hits_same_history_and_misses_after_an_event():
    tower = CountingTower()
    cached = CachedHistoryEncoder(tower, maxsize=10)
    first = cached.encode_histories([["a"], ["a", "b"]])
    again = cached.encode_histories([["a", "b"], ["a", "b", "c"]])  # new event: a new history
    np.testing.assert_array_equal(first[1], again[0])
    assert tower.calls == [2, 1] and (cached.hits, cached.misses) == (1, 3)


def test_cache_warm_encodes_in_batches_up_to_its_size():
    tower = CountingTower()
    cached = CachedHistoryEncoder(tower, maxsize=5)
    added = cached.warm([["a"] * n for n in range(1, 8)], batch_size=2)
    assert added == 5 and tower.calls == [2, 2, 1]  # only as many as the cache holds
    assert cached.has(["a", "a"]) and not cached.has(["a"] * 6)
    cached.encode_histories([["a", "a"]])
    assert tower.calls == [2, 2, 1] and cached.hits == 1


def test_cache_warm_batches_histories_of_similar_length():
    class RecordingTower(CountingTower):
        def encode_histories(self, histories):
            self.calls.append([len(h) for h in histories])
            return np.array([[len(h), 1.0] for h in histories], dtype=np.float32)

    tower = RecordingTower()
    cached = CachedHistoryEncoder(tower, maxsize=4)
    assert cached.warm([["a"] * n for n in (7, 1, 50, 2, 6)], batch_size=2) == 4
    assert tower.calls == [[1, 2], [7, 50]]  # the first four (the cache holds four), shortest first
    assert not cached.has(["a"] * 6)


def test_cache_is_cleared_when_item_vectors_change():
    catalogue = Catalogue.from_ids(["a", "b"], np.eye(2, dtype=np.float32))
    cached = CachedHistoryEncoder(PooledHistoryEncoder(catalogue, UserTowerConfig()))
    np.testing.assert_allclose(cached.encode_histories([["a"]])[0], [1, 0])
    catalogue.set_active(["a"], False)  # a stock change: query vectors stay valid
    assert cached.has(["a"])
    catalogue.upsert([{"item_id": "a"}, {"item_id": "c"}], np.array([[0, 1], [1, 0]], dtype=np.float32))
    assert not cached.has(["a"])
    np.testing.assert_allclose(cached.encode_histories([["a"]])[0], [0, 1])
    np.testing.assert_allclose(cached.encode_histories([["c"]])[0], [1, 0])


def test_micro_batching_merges_concurrent_calls_and_keeps_order():
    tower = CountingTower(delay=0.05)
    batcher = MicroBatchingEncoder(tower, max_wait_ms=20, max_batch=64)
    results = {}

    def call(n):
        results[n] = batcher.encode_histories([["x"] * n])

    threads = [threading.Thread(target=call, args=(n,)) for n in range(1, 17)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert sum(tower.calls) == 16 and len(tower.calls) < 16  # fewer BERT calls than requests
    assert all(results[n][0, 0] == n for n in range(1, 17))  # every caller got its own row


def test_micro_batching_passes_errors_to_callers():
    class Broken(CountingTower):
        def encode_histories(self, histories):
            raise RuntimeError("boom")

    batcher = MicroBatchingEncoder(Broken(), max_wait_ms=1)
    with pytest.raises(RuntimeError, match="boom"):
        batcher.encode_histories([["a"]])
    batcher.close()


def _exercise(store):
    assert store.append("u", "a", "view", 1.0) == 1
    assert store.append("u", "b", "purchase") == 2
    store.append("v", "c", "cart")
    assert store.events("u", 10) == ["a", "b"] and store.events("u", 1) == ["b"] and store.events("x", 5) == []
    assert store.last_event_seq() == 3 and store.events("u", 10, until=1) == ["a"]
    assert store.events_for(["u", "v", "x"], 1) == {"u": ["b"], "v": ["c"]} and store.event_users() == ["u", "v"]
    assert store.events_with_kinds("u", 10) == [("a", "view"), ("b", "purchase")]
    assert store.events_with_kinds("u", 1) == [("b", "purchase")]  # the user's latest event only
    assert store.events_with_kinds("u", 10, until=1) == [("a", "view")] and store.events_with_kinds("x", 5) == []
    rows = store.event_frame().rows()
    assert [row[:4] for row in rows] == [(1, "u", "a", "view"), (2, "u", "b", "purchase"), (3, "v", "c", "cart")]
    assert rows[0][4] == 1.0 and rows[1][4] > 1e9  # the given time, else the time it was recorded
    assert store.event_frame(until=2)["seq"].to_list() == [1, 2]
    assert store.event_frame(kinds=["cart", "purchase"])["seq"].to_list() == [2, 3]
    assert store.event_frame(until=2, kinds=["cart"]).height == 0 and store.event_frame().schema == EVENT_SCHEMA
    assert sorted(store.event_items(10)) == ["a", "b", "c"] and len(store.event_items(2)) == 2
    assert store.last_change_seq() == 0 and store.changes() == [] and store.latest_bundle() is None
    seqs = [store.record_change("upsert", "n1", {"item_id": "n1", "text": "new"}, np.array([1, 2], np.float32), "s1"),
            store.record_change("upsert", "n2", {"item_id": "n2", "text": "newer"}, np.array([3, 4], np.float32), "s1"),
            store.record_change("active", "n2", active=False),
            store.record_change("delete", "n1"),
            store.record_change("bundle", record={"path": "/b/v2"})]
    assert seqs == [1, 2, 3, 4, 5] and store.last_change_seq() == 5
    changes = store.changes()
    assert [(c.seq, c.kind, c.item_id) for c in changes] == [(1, "upsert", "n1"), (2, "upsert", "n2"),
                                                              (3, "active", "n2"), (4, "delete", "n1"),
                                                              (5, "bundle", None)]
    assert changes[1].record == {"item_id": "n2", "text": "newer"} and changes[1].space == "s1"
    np.testing.assert_array_equal(changes[1].vector, [3, 4])
    assert changes[2].active is False and changes[4].record == {"path": "/b/v2"}
    assert [c.seq for c in store.changes(after=2, until=4)] == [3, 4]
    assert store.changed_items() == [(c.kind, c.item_id) for c in changes]
    assert store.latest_bundle() == {"path": "/b/v2"}
    batch = [Change(0, "upsert", "n3", {"item_id": "n3", "text": "x"}, np.array([5, 6], np.float32), "s1"),
             Change(0, "active", "n3", active=False), Change(0, "delete", "n2")]
    assert store.record_changes(batch) == [6, 7, 8] and store.record_changes([]) == []
    assert [(c.seq, c.kind, c.item_id, c.active) for c in store.changes(after=5)] == [
        (6, "upsert", "n3", None), (7, "active", "n3", False), (8, "delete", "n2", None)]
    np.testing.assert_array_equal(store.changes(after=5)[0].vector, [5, 6])


def test_sqlite_store(tmp_path):
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    _exercise(store)
    store.close()
    reopened = SQLiteEventStore(tmp_path / "events.sqlite")
    assert reopened.events("u", 10) == ["a", "b"] and reopened.last_change_seq() == 8
    assert reopened.append("u", "c", "view") == 3


def test_a_new_sqlite_store_opened_by_two_processes_at_once(tmp_path, monkeypatch):
    """Two processes converting a new store to WAL at once: SQLite answers one 'database is locked' without waiting
    for the busy timeout (3 of 100 concurrent opens failed: a uvicorn worker or a batch job did not start); the
    conversion is retried."""
    import sqlite3

    import recsys.store_sqlite

    class LockedOnce:
        def __init__(self, db):
            self.db, self.refused = db, 0

        def execute(self, sql, *args):
            if sql.startswith("PRAGMA journal_mode") and not self.refused:
                self.refused += 1
                raise sqlite3.OperationalError("database is locked")
            return self.db.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.db, name)

    connect = sqlite3.connect
    monkeypatch.setattr(recsys.store_sqlite.sqlite3, "connect", lambda *a, **k: LockedOnce(connect(*a, **k)))
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    assert store._db.refused == 1 and store.append("u", "a", "view") == 1
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def _sqlite_steps(store: SQLiteEventStore, write) -> int:
    """SQLite virtual-machine steps `write()` takes (a deterministic measure of its work)."""
    steps = [0]

    def count():
        steps[0] += 1

    store._db.set_progress_handler(count, 1)
    try:
        write()
    finally:
        store._db.set_progress_handler(None, 1)
    return steps[0]


def test_an_sqlite_insert_costs_the_same_whatever_the_users_history(tmp_path):
    """The same work for a user with 10 events as for one with 50,000 (the count comes from a per-user counter,
    not COUNT(*) over the history); a catalogue change costs the same whatever the length of the change log."""
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    assert store.append_many("light", ["a"] * 9) == 9 and store.append_many("heavy", ["a"] * 49_999) == 49_999
    light = _sqlite_steps(store, lambda: store.append("light", "x", "view"))
    heavy = _sqlite_steps(store, lambda: store.append("heavy", "x", "view"))
    assert store.append("light", "y", "view") == 11 and store.append("heavy", "y", "view") == 50_001
    assert heavy <= light + 20, (light, heavy)
    store.append_many("mid", ["a"] * 1_000)
    mid = _sqlite_steps(store, lambda: store.events_with_kinds("mid", 200))  # a request's read: the latest 200
    heavy = _sqlite_steps(store, lambda: store.events_with_kinds("heavy", 200))
    assert heavy <= mid + 20 and heavy < 50_000, (mid, heavy)  # not a scan of the user's 50,000 events
    assert dict(store.events_with_kinds("heavy", 200)) == {"a": "view", "x": "view", "y": "view"}
    first = _sqlite_steps(store, lambda: store.record_change("active", "a", active=False))
    for n in range(2_000):
        store.record_change("active", f"i{n}", active=True)
    later = _sqlite_steps(store, lambda: store.record_change("active", "a", active=True))
    assert later <= first + 20 and store.last_change_seq() == 2_002, (first, later)
    store.close()


def test_an_sqlite_store_written_before_the_counters_is_counted_once_on_open(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "events.sqlite")
    db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT, item_id TEXT, kind TEXT, "
               "ts REAL)")
    db.executemany("INSERT INTO events (user_id, item_id, kind, ts) VALUES (?, 'i', 'view', 0)",
                   [("u",), ("u",), ("v",)])
    db.commit()
    db.close()
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    assert store.append("u", "j", "view") == 3 and store.append("v", "j", "view") == 2
    assert store.append("w", "j", "view") == 1 and store.events("u", 5) == ["i", "i", "j"]


def test_sqlite_state_from_before_the_change_log_is_carried_over(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "events.sqlite")
    db.execute("CREATE TABLE items (item_id TEXT PRIMARY KEY, seq INTEGER, record TEXT, vector BLOB)")
    db.execute("CREATE TABLE item_state (item_id TEXT PRIMARY KEY, active INTEGER)")
    db.execute("INSERT INTO items VALUES ('n1', 1, '{\"item_id\": \"n1\", \"text\": \"x\"}', ?)",
               (np.array([1, 0], np.float32).tobytes(),))
    db.execute("INSERT INTO item_state VALUES ('old1', 0)")
    db.commit()
    db.close()
    changes = SQLiteEventStore(tmp_path / "events.sqlite").changes()
    assert [(c.kind, c.item_id) for c in changes] == [("upsert", "n1"), ("active", "old1")]
    assert changes[0].space is None and changes[1].active is False


def test_redis_store_shared_by_two_replicas(redis_url):
    first, second = RedisEventStore(redis_url), RedisEventStore(redis_url)
    _exercise(first)
    assert second.events("u", 10) == ["a", "b"]  # another replica sees the same state
    assert second.append_many("u", ["c", "d"]) == 4 and first.events("u", 3) == ["b", "c", "d"]
    # the latest reload is found past a page of other changes (read newest first, 2 at a time)
    assert second.latest_bundle(page=2) == {"path": "/b/v2"}
    first.close()
    second.close()


def test_both_stores_give_the_same_events_with_kinds(redis_url, tmp_path):
    """The API's one read per known-user request (history + the reasons' kinds) answers alike from either store:
    oldest first, the latest `limit`, up to `until`, an item seen twice twice with each event's own kind."""
    sqlite, redis = SQLiteEventStore(tmp_path / "events.sqlite"), RedisEventStore(redis_url)
    for store in (sqlite, redis):
        store.append("u", "a", "view", 1.0)
        store.append("v", "a", "purchase", 2.0)
        store.append_many("u", ["b", "c"], "cart", 3.0)
        store.append("u", "a", "purchase", 4.0)
        store.append("u", "d", "view", 5.0)
    expected = [("a", "view"), ("b", "cart"), ("c", "cart"), ("a", "purchase"), ("d", "view")]
    for limit, until in [(10, None), (3, None), (1, None), (10, 4), (2, 4), (10, 1), (10, 0)]:
        pairs = sqlite.events_with_kinds("u", limit, until)
        assert pairs == redis.events_with_kinds("u", limit, until), (limit, until)
        assert pairs == [p for seq, p in zip([1, 3, 4, 5, 6], expected) if until is None or seq <= until][-limit:]
        assert [item for item, _ in pairs] == sqlite.events("u", limit, until) == redis.events("u", limit, until)
    assert sqlite.events_with_kinds("nobody", 5) == redis.events_with_kinds("nobody", 5) == []
    sqlite.close()
    redis.close()


def store_reads(store, rng: random.Random, users: list[str], events: int, changes: int) -> list:
    """What a store answers to every read of its interface, at random limits and cut-off seqs (the same draws for
    both stores: `rng` is a copy)."""
    def change_rows(found):
        return [(c.seq, c.kind, c.item_id, c.record, None if c.vector is None else c.vector.tolist(), c.space,
                 c.active) for c in found]

    out = []
    for user in rng.sample(users, 3) + ["nobody"]:
        for limit, until in ((rng.randint(1, 8), None), (50, rng.randint(0, events + 1)), (3, rng.randint(0, events))):
            out += [store.events(user, limit, until), store.events_with_kinds(user, limit, until)]
    for until in (None, rng.randint(0, events + 1)):
        out += [store.events_for(rng.sample(users, 3) + ["nobody"], 4, until), sorted(store.event_users(until))]
        out += [store.event_frame(until, kinds).rows() for kinds in (None, ["view"], ["cart", "purchase"])]
    for after, until in ((0, None), (rng.randint(0, changes + 1), None), (0, rng.randint(0, changes + 1))):
        out.append(change_rows(store.changes(after, until)))
    return out + [store.changed_items(), store.latest_bundle(), store.last_event_seq(), store.last_change_seq()]


@pytest.mark.parametrize("seed", range(2))
def test_both_stores_answer_every_read_alike_through_random_writes(redis_url, tmp_path, seed):
    """Random events (single and in batches, every kind, ids with spaces and accents, times that repeat) and
    catalogue changes (upserts with vectors and records, stock changes, deletions, reload announcements, alone and
    in batches) written to an SQLite and a Redis store: every write returns the same seqs, and every read of the
    interface (histories with and without kinds, at limits and cut-offs; several users at once; the users; the
    event frame per kinds; the changes after and until a seq; the last seqs) answers alike, between writes too."""
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    sqlite, redis = SQLiteEventStore(tmp_path / "events.sqlite"), RedisEventStore(redis_url, prefix=f"fuzz{seed}")
    users, items = [f"u{j}" for j in range(6)] + ["ü", "a user"], [f"i{j}" for j in range(10)]
    clock, events, changes, compared = 1.7e9, 0, 0, 0
    for _ in range(120):
        draw = rng.random()
        if draw < 0.6:
            user, kind, clock = rng.choice(users), rng.choice(["view", "cart", "purchase"]), clock + rng.choice([0, 1])
            item, batch = rng.choice(items), [rng.choice(items) for _ in range(rng.randint(0, 4))]
            batch = batch if draw < 0.15 else None
            seqs = [store.append_many(user, batch, kind, clock) if batch is not None else
                    store.append(user, item, kind, clock) for store in (sqlite, redis)]
            events += len(batch) if batch is not None else 1
        elif draw < 0.85:
            written = []
            for _ in range(rng.randint(1, 3)):
                kind, item = rng.choice(["upsert", "active", "delete", "bundle"]), rng.choice(items)
                written.append(Change(0, "upsert", item, {"item_id": item, "text": f"t {rng.random()}",
                                                          "price": rng.choice([None, 1.5])},
                                      np_rng.normal(size=4).astype(np.float32), rng.choice(["s1", None]))
                               if kind == "upsert" else Change(0, "active", item, active=rng.random() < 0.5)
                               if kind == "active" else Change(0, "delete", item) if kind == "delete"
                               else Change(0, "bundle", record={"path": f"/models/v{changes}"}))
            seqs = [store.record_changes(written) for store in (sqlite, redis)]
            changes += len(written)
        else:
            state = rng.getstate()
            ours = store_reads(sqlite, rng, users, events, changes)
            rng.setstate(state)
            assert ours == store_reads(redis, rng, users, events, changes)
            compared += 1
            continue
        assert seqs[0] == seqs[1]
    assert compared > 5 and sqlite.last_event_seq() == events and sqlite.last_change_seq() == changes
    sqlite.close()
    redis.close()


def test_an_unreachable_redis_is_one_line_naming_the_setting(tmp_path):
    from api.service import make_store
    from api.settings import Settings
    from recsys.errors import StoreError

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(event_store="redis", redis_url=f"redis://user:hunter2@127.0.0.1:{port}/0")
    with pytest.raises(StoreError) as error:
        make_store(settings)
    message = str(error.value)
    assert message.startswith("RECSYS_REDIS_URL: cannot reach Redis at redis://user:***@127.0.0.1:")
    assert "\n" not in message and "hunter2" not in message


# ---- the byte-bounded cache -----------------------------------------------------------------------------------


def test_byte_budget_cache_parts_share_one_budget_in_bytes():
    from recsys.cache import ENTRY_OVERHEAD, ByteBudgetCache

    cache = ByteBudgetCache(10 * (1_000 + ENTRY_OVERHEAD))
    vectors, responses = cache.part("vectors"), cache.part("responses")
    for n in range(8):
        vectors[("history", n)] = np.zeros(250, dtype=np.float32)  # 1,000 bytes each
    for n in range(8):
        responses[n] = b"r" * 1_000
    assert cache.currsize <= cache.max_bytes and len(vectors) + len(responses) == 10
    assert len(responses) == 8 and len(vectors) == 2  # the least recently used went first, whichever part
    assert ("history", 7) in vectors and ("history", 0) not in vectors
    np.testing.assert_array_equal(vectors[("history", 7)], np.zeros(250))


def test_byte_budget_cache_keys_are_hashed_and_clear_is_free():
    from recsys.cache import ENTRY_OVERHEAD, ByteBudgetCache

    cache = ByteBudgetCache(4 * (100 + ENTRY_OVERHEAD))
    part = cache.part("p")
    part[tuple(f"item-{i}" * 50 for i in range(1_000))] = b"x" * 100  # a 350 kB key costs what a short one does
    part[("short",)] = b"y" * 100
    assert cache.currsize == 2 * (100 + ENTRY_OVERHEAD)
    assert part.get(tuple(f"item-{i}" * 50 for i in range(1_000))) == b"x" * 100
    part[("huge",)] = b"z" * cache.max_bytes  # larger than the whole budget: not stored, nothing evicted
    assert ("huge",) not in part and len(part) == 2
    part.clear()
    assert len(part) == 0 and ("short",) not in part and part.capacity(100) == 2  # old entries age out
    part["new"] = b"n"
    assert part["new"] == b"n" and len(part) == 1


def test_cached_history_encoder_within_a_byte_budget():
    from recsys.cache import ByteBudgetCache, entry_bytes

    tower = CountingTower()
    cache = ByteBudgetCache(3 * entry_bytes((0, np.zeros(2, np.float32))))  # three dated 2-d float32 vectors
    cached = CachedHistoryEncoder(tower, cache=cache.part("vectors"))
    assert cached.warm([["a"] * n for n in range(1, 8)]) == 3 and tower.calls == [3]  # as many as it holds
    cached.encode_histories([["b"] * 200])  # a 200-item history: a hashed key, one more vector
    assert cache.currsize <= cache.max_bytes and cached.has(["b"] * 200)


def test_a_cached_tower_over_another_catalogue_stays_in_the_same_byte_budget():
    from recsys.cache import ByteBudgetCache, entry_bytes

    cache = ByteBudgetCache(10_000)
    catalogue = Catalogue.from_ids(["a", "b"], np.eye(2, dtype=np.float32))
    cached = CachedHistoryEncoder(PooledHistoryEncoder(catalogue, UserTowerConfig()), cache=cache.part("vectors"))
    np.testing.assert_allclose(cached.encode_histories([["a"]])[0], [1, 0])
    other = cached.over(Catalogue.from_ids(["a", "b"], np.eye(2, dtype=np.float32)[::-1].copy()))
    np.testing.assert_allclose(other.encode_histories([["a"]])[0], [0, 1])  # its own entries, not the first's
    assert cache.currsize == 2 * entry_bytes((0, np.zeros(2, np.float32)))  # both towers' vectors in the one budget


def test_neighbour_cache_filters_and_falls_back():
    from recsys.neighbours import NeighbourCache

    calls = []

    def search(item_ids):
        calls.append(list(item_ids))
        return [["b", "c", "d"] for _ in item_ids], [[0.9, 0.8, 0.7] for _ in item_ids]

    cache = NeighbourCache(depth=3, maxsize=10)
    assert cache.fill(["a"], search) == 1
    assert cache.top("a", 2, set(), lambda i: True, search) == (["b", "c"], [pytest.approx(0.9), pytest.approx(0.8)])
    assert cache.top("a", 2, {"b"}, lambda i: i != "c", search) is None  # only "d" survives: search instead
    assert cache.top("a", 4, set(), lambda i: True, search) is None  # deeper than the cache
    assert calls == [["a"]] and cache.hits == 2
    assert cache.top("z", 1, set(), lambda i: True, search)[0] == ["b"] and calls[-1] == ["z"]  # filled on use


def test_neighbour_lists_searched_across_a_catalogue_change_are_not_stored():
    from recsys.neighbours import NeighbourCache

    cache = NeighbourCache(depth=2, maxsize=10)

    def search_during_a_change(item_ids):
        cache.clear()  # e.g. an upsert while the search ran
        return [["b", "c"] for _ in item_ids], [[0.9, 0.8] for _ in item_ids]

    assert cache.top("a", 1, set(), lambda i: True, search_during_a_change) is None  # caller searches itself
    assert len(cache) == 0 and cache.fill(["a"], search_during_a_change) == 0


# ---- loop-turn batching -------------------------------------------------------------------------


class RecordingBatch:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple] = []
        self.fail = fail

    def __call__(self, key, items):
        self.calls.append((key, list(items)))
        if self.fail:
            raise ValueError("boom")
        return [f"{key}:{item}" for item in items]


def test_calls_in_one_loop_turn_share_one_batch_per_key():
    import asyncio

    from api.batching import LoopTurnBatcher

    run = RecordingBatch()
    batcher = LoopTurnBatcher(run, max_batch=3)

    async def burst():
        return await asyncio.gather(*(batcher.submit(key, item) for key, item in
                                      [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("a", 5), ("b", 6)]))

    assert asyncio.run(burst()) == ["a:1", "b:2", "a:3", "a:4", "a:5", "b:6"]
    # "a" reached max_batch=3 and ran at once; the rest ran together after the turn, one call per key
    assert run.calls == [("a", [1, 3, 4]), ("b", [2, 6]), ("a", [5])]
    assert (batcher.batches, batcher.calls) == (3, 6)

    async def lone():
        return await batcher.submit("c", 7)

    assert asyncio.run(lone()) == "c:7"  # a new event loop, a lone call: answered without waiting for company


@pytest.mark.parametrize("wait_ms", [0.0, 200.0])
def test_under_load_a_batch_waits_for_requests_read_meanwhile(wait_ms):
    """After a saturated batch (LOADED_BATCH calls), the next batch waits `wait_ms` for company; a lone call
    never waits."""
    import asyncio

    from api.batching import LoopTurnBatcher

    run = RecordingBatch()
    batcher = LoopTurnBatcher(run, wait_ms=wait_ms)

    async def scenario():
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await batcher.submit("a", 0) == "a:0"  # lone: immediately, even with a wait configured
        lone_seconds = loop.time() - started
        await asyncio.gather(*(batcher.submit("a", i) for i in (1, 2, 3, 4)))  # one turn: a saturated batch

        async def late(item, delay):  # arrives 20 ms after the first, in a later loop turn
            await asyncio.sleep(delay)
            return await batcher.submit("a", item)

        await asyncio.gather(late(5, 0.0), late(6, 0.02))
        return lone_seconds

    lone_seconds = asyncio.run(scenario())
    assert lone_seconds < 0.1
    expected = [[5, 6]] if wait_ms else [[5], [6]]
    assert [items for _, items in run.calls] == [[0], [1, 2, 3, 4], *expected]


def test_offloaded_batches_run_off_the_event_loop():
    import asyncio

    from api.batching import LoopTurnBatcher

    threads = []

    def run(key, items):
        threads.append(threading.get_ident())
        return [item * 2 for item in items]

    batcher = LoopTurnBatcher(run, offload=True)

    async def burst():
        return threading.get_ident(), await asyncio.gather(*(batcher.submit("a", i) for i in range(5)))

    loop_thread, results = asyncio.run(burst())
    assert results == [0, 2, 4, 6, 8] and batcher.batches == 1
    assert threads and threads[0] != loop_thread


def test_prepared_batches_prepare_off_the_loop_and_run_on_it():
    """`prepare` (the torch part) runs in the thread pool, then `run` on the event loop's thread, once per batch;
    a failing prepare raises in every caller and `run` is not called."""
    import asyncio

    from api.batching import LoopTurnBatcher

    for fail in (False, True):
        seen: list[tuple[str, int, list]] = []

        def prepare(key, items):
            seen.append(("prepare", threading.get_ident(), list(items)))
            if fail:
                raise ValueError("no vectors")

        def run(key, items):
            seen.append(("run", threading.get_ident(), list(items)))
            return [item * 2 for item in items]

        batcher = LoopTurnBatcher(run, prepare=prepare)

        async def burst():
            results = await asyncio.gather(*(batcher.submit("a", i) for i in range(3)), return_exceptions=True)
            return threading.get_ident(), results

        loop_thread, results = asyncio.run(burst())
        if fail:
            assert [str(r) for r in results] == ["no vectors"] * 3
            assert [(step, items) for step, _, items in seen] == [("prepare", [0, 1, 2])]
        else:
            assert results == [0, 2, 4]
            assert [(step, items) for step, _, items in seen] == [("prepare", [0, 1, 2]), ("run", [0, 1, 2])]
            assert seen[0][1] != loop_thread and seen[1][1] == loop_thread
    with pytest.raises(ValueError, match="choose one"):
        LoopTurnBatcher(run, offload=True, prepare=prepare)


def test_a_failing_batch_raises_in_every_caller():
    import asyncio

    from api.batching import LoopTurnBatcher

    for offload in (False, True):
        batcher = LoopTurnBatcher(RecordingBatch(fail=True), offload=offload)

        async def burst():
            return await asyncio.gather(batcher.submit("a", 1), batcher.submit("a", 2), return_exceptions=True)

        assert [str(e) for e in asyncio.run(burst())] == ["boom", "boom"]


def test_concurrent_known_users_match_one_at_a_time(toy, tmp_path):
    import asyncio

    from api.service import Service
    from api.settings import Settings
    from recsys.config import BuildConfig
    from recsys.pipeline import Recommender
    from recsys.query import Query
    from recsys.splits import split_dataset
    from tests.test_pipeline import VECTORS

    bundle = Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig()).save(tmp_path / "toy" / "v1")
    service = Service(Settings(state_dir=tmp_path / "state"))
    loaded = service.load(bundle)
    recommender = loaded.recommender
    histories = [h for h in recommender.histories.values() if h]
    assert len(histories) >= 3

    async def together():
        return await asyncio.gather(*(loaded.recommend(Query(h, k=3)) for h in histories),
                                    loaded.recommend(Query(histories[0], k=3, exclude=[histories[0][-1]])))

    expected = [recommender.recommend_history(h, 3, True) for h in histories]
    expected.append(recommender.recommend_history(histories[0], 3, True, [histories[0][-1]]))
    got = asyncio.run(together())
    assert [(r.item_ids, r.strategy) for r in got] == [(r.item_ids, r.strategy) for r in expected]
    np.testing.assert_allclose([s for r in got for s in r.scores], [s for r in expected for s in r.scores],
                               rtol=1e-5)
    assert loaded.cheap_batches.batches == 1 and loaded.cheap_batches.calls == len(histories) + 1
    assert loaded.tower_batches.batches == 0  # a pooled tower is cheap: nothing left the event loop
    service.close()


def test_an_event_frame_is_built_a_batch_at_a_time_and_keeps_every_row_in_order():
    from recsys.store import event_frame_of

    rows = [(k, f"u{k % 7}", f"i{k % 11}", "view" if k % 3 else "cart", float(k)) for k in range(1, 2_502)]
    frame = event_frame_of(iter(rows), batch=1000)  # two full batches and a partial one
    assert frame.rows() == rows and frame.n_chunks() == 1
    assert event_frame_of([], batch=10).schema == EVENT_SCHEMA and event_frame_of([]).height == 0


def test_cached_query_vectors_survive_catalogue_changes_that_leave_their_history_alone():
    """A catalogue feed does not empty the cache: an entry serves until one of its history's items is upserted,
    replaced or deleted (then it is computed again, from the new vectors), or its changes are no longer known."""
    from recsys import change_log

    catalogue = Catalogue.from_ids(["a", "b", "c"], np.eye(3, dtype=np.float32))
    cached = CachedHistoryEncoder(PooledHistoryEncoder(catalogue, UserTowerConfig()), maxsize=10)
    cached.encode_histories([["a", "b"], ["c"], ["x"]])  # "x": not in the catalogue yet
    assert cached.misses == 3
    catalogue.upsert([{"item_id": "n1"}], np.ones((1, 3), np.float32))           # a new item nobody saw
    catalogue.upsert([{"item_id": "x"}], np.ones((1, 3), np.float32))            # one a history named already
    catalogue.set_active(["a"], False)                                           # stock: vectors unchanged
    assert cached.has(["a", "b"]) and cached.has(["c"]) and not cached.has(["x"])  # "x" is news to it
    catalogue.upsert([{"item_id": "c"}], np.array([[0, 1, 0]], np.float32))      # c's vector replaced
    got = cached.encode_histories([["a", "b"], ["c"]])
    assert (cached.hits, cached.misses) == (1, 4)                                # [c] computed again ...
    np.testing.assert_allclose(got[1], [0, 1, 0])                                # ... from c's new vector
    catalogue.remove(["b"])
    assert not cached.has(["a", "b"]) and cached.has(["c"])
    for j in range(change_log.KEPT + 1):  # more changes than the catalogue remembers
        catalogue.upsert([{"item_id": f"m{j}"}], np.ones((1, 3), np.float32))
    assert not cached.has(["c"])  # its changes since are no longer known: not trusted


def test_catalogue_says_which_ids_its_changes_touched_since_a_version():
    from recsys.change_log import MAX_IDS

    catalogue = Catalogue.from_ids(["a", "b", "c"], np.eye(3, dtype=np.float32))
    assert catalogue.ids_changed_since(0) == frozenset()
    catalogue.upsert([{"item_id": "a"}, {"item_id": "d"}], np.ones((2, 3), np.float32))  # vectors version 1
    catalogue.set_active(["b"], False)                                                   # still 1
    catalogue.remove(["c"])                                                              # 2
    assert catalogue.vectors_version == 2
    assert catalogue.ids_changed_since(0) == {"a", "d", "c"} and catalogue.ids_changed_since(1) == {"c"}
    assert catalogue.ids_changed_since(0, now=1) == {"a", "d"} and catalogue.ids_changed_since(2) == frozenset()
    catalogue.compact()  # rows renumbered, vectors unchanged: nothing more changed
    assert catalogue.vectors_version == 2 and catalogue.ids_changed_since(1) == {"c"}
    big = [f"n{j}" for j in range(MAX_IDS + 1)]
    catalogue.upsert([{"item_id": i} for i in big], np.ones((len(big), 3), np.float32))  # 3: too many to list
    assert catalogue.ids_changed_since(2) is None and catalogue.ids_changed_since(1, now=2) == {"c"}
    # any change, by catalogue version: 1 upsert a, d; 2 deactivate b; 3 delete c; 4 compaction; 5 the big upsert
    assert catalogue.version == 5 and catalogue.ids_touched_since(1, now=4) == {"b", "c"}
    assert catalogue.ids_touched_since(3, now=4) == frozenset() and catalogue.ids_touched_since(4) is None


def test_a_neighbour_list_deeper_than_asked_survives_a_few_stock_outs():
    """The cache keeps more neighbours than a shown list is picked from, so a stocked-out or excluded item in the
    top ones is skipped from the cached list instead of sending the request to a new search."""
    from recsys.neighbours import NeighbourCache

    cache, searches = NeighbourCache(depth=4, maxsize=10), []

    def search(item_ids):
        searches.append(list(item_ids))
        return [["b", "c", "d", "e"] for _ in item_ids], [[0.9, 0.8, 0.7, 0.6] for _ in item_ids]

    assert cache.top("a", 3, set(), lambda i: True, search)[0] == ["b", "c", "d"]
    assert cache.top("a", 3, set(), lambda i: i != "c", search)[0] == ["b", "d", "e"] and len(searches) == 1
    assert cache.top("a", 3, {"b"}, lambda i: i != "c", search) is None  # two gone: too few left to tell

