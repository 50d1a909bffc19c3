"""Races within one worker: catalogue edits landing in the middle of a request, syncs and reloads running on
several threads at once. Each test makes the interleaving happen (threads held at a point by events), so it is
deterministic."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
import time

import numpy as np
import polars as pl
import pytest

from api.service import Service
from api.settings import Settings
from recsys.config import BuildConfig
from recsys.data.synthetic import generate_shop
from recsys.errors import UnknownIdError
from recsys.pipeline import Recommender
from recsys.query import Query
from recsys.splits import split_dataset
from recsys.store import SQLiteEventStore

WAIT_S = 10.0  # an event that never comes fails the test instead of hanging it
TOKEN = "s3cret"


@pytest.fixture()
def service(frozen_bundle, tmp_path):
    """One worker's service over the frozen bundle (tiny BERT item tower), with its own event store."""
    service = Service(Settings(state_dir=tmp_path / "state", admin_token=TOKEN, warm_similar_items=0))
    service.load(frozen_bundle)
    yield service
    service.close()


@pytest.fixture()
def recommender() -> Recommender:
    """A small shop with seeded random 16-d item vectors (distinct scores) and the default diversification."""
    dataset = generate_shop(n_users=40, n_items=70, seed=4)
    vectors = np.random.default_rng(3).normal(size=(dataset.items.height, 16)).astype(np.float32)
    return Recommender.build(dataset, split_dataset(dataset), vectors, BuildConfig())


def _edit_while_diversifying(recommender: Recommender, edit) -> threading.Thread:
    """Run `edit()` on another thread right after the request took the item vectors it diversifies with."""
    taken, edited = threading.Event(), threading.Event()
    unit_vectors = recommender.unit_vectors

    def paused(*args, **kwargs):
        vectors = unit_vectors(*args, **kwargs)
        taken.set()
        assert edited.wait(WAIT_S)
        return vectors

    def editor() -> None:
        assert taken.wait(WAIT_S)
        try:
            edit()
        finally:
            edited.set()

    recommender.unit_vectors = paused
    thread = threading.Thread(target=editor)
    thread.start()
    return thread


@pytest.mark.parametrize("change", ["upsert", "compaction"])
def test_a_list_is_diversified_over_one_catalogue_version(recommender, change):
    """The diversification read the vectors of one catalogue version and the id → row map of the next: an item
    upserted meanwhile (a text change) had a row past those vectors (IndexError, a 500), and after a compaction
    every item read another item's vector (a silently different list)."""
    user = sorted(recommender.histories)[0]
    history = recommender.histories[user]
    expected = recommender.recommend(Query(history, k=8)).item_ids
    catalogue = recommender.catalogue
    if change == "upsert":  # a new text (and vector) for the first listed item
        record = catalogue.state.record(expected[0])

        def edit():
            catalogue.upsert([{**record, "text": "a new text"}], catalogue.state.vectors[[1]])
    else:  # items in no list are deleted, and the index is compacted
        gone = [i for i in recommender.item_ids if i not in expected and i not in history][:10]

        def edit():
            catalogue.remove(gone)
            catalogue.compact()

    thread = _edit_while_diversifying(recommender, edit)
    try:
        got = recommender.recommend(Query(history, k=8)).item_ids
    finally:
        thread.join()
    assert got == expected  # the list of the version it was retrieved from


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_an_upsert_does_not_make_the_next_reads_normalise_the_whole_catalogue_again(recommender, monkeypatch):
    """The diversification's unit item vectors (bundles without a re-ranker's arrays) were computed again, all of
    them, by every request after every upsert (~0.3 s per read at 100k 384-d items while upserts go on), and then
    after each upsert that moved the catalogue's vectors to a larger buffer, and when the unit rows' own buffer grew
    (the first upsert after load: 0.4-0.5 s for the next product page at 100k items); the rows an upsert appends
    are normalised alone, and older versions read the same rows. Only a compaction, which renumbers the rows,
    normalises them all again."""
    import recsys.item_arrays
    import recsys.pipeline

    normalised = []

    def counted(vectors, out=None):
        normalised.append(len(vectors))
        return unit_rows(vectors, out)

    unit_rows = recsys.item_arrays.unit_rows
    monkeypatch.setattr(recsys.pipeline, "unit_rows", counted)
    monkeypatch.setattr(recsys.item_arrays, "unit_rows", counted)  # `unit_store`'s, the whole catalogue's
    catalogue = recommender.catalogue
    n = len(catalogue.state)
    recommender.unit_vectors()
    buffers = {id(catalogue.state.vectors.base)}
    record = catalogue.state.record(recommender.item_ids[0])
    rng = np.random.default_rng(0)
    seen = []
    for j in range(4):
        catalogue.upsert([{**record, "item_id": f"NEW{j}"}], rng.normal(size=(1, 16)).astype(np.float32))
        state = catalogue.state
        buffers.add(id(state.vectors.base))
        seen.append((state, recommender.unit_vectors(state)))
        np.testing.assert_allclose(seen[-1][1], _unit(state.vectors), rtol=1e-6)
    # the first upsert moved the catalogue's vectors to a larger buffer; the unit rows were kept all the same
    assert len(buffers) == 2 and normalised == [n, 1, 1, 1, 1]
    (older, before), (state, after) = seen[-2:]
    np.testing.assert_array_equal(recommender.unit_vectors(older), before)
    bulk = [{**record, "item_id": f"BULK{j}"} for j in range(2 * n)]  # past both buffers' room: they grow
    catalogue.upsert(bulk, rng.normal(size=(len(bulk), 16)).astype(np.float32))
    buffers.add(id(catalogue.state.vectors.base))
    np.testing.assert_allclose(recommender.unit_vectors(), _unit(catalogue.state.vectors), rtol=1e-6)
    assert len(buffers) == 3 and normalised[-1] == 2 * n  # only the new rows normalised
    n += 2 * n
    catalogue.remove(recommender.item_ids[:5])
    catalogue.compact()  # rows renumbered: computed again
    np.testing.assert_allclose(recommender.unit_vectors(), _unit(catalogue.state.vectors), rtol=1e-6)
    assert normalised[-1] == len(catalogue.state) == n + 4 - 5


def test_a_trained_tower_keeps_its_tables_across_deactivations_and_deletions(trained_bundle):
    """A trained user tower's per-row tables (item vectors on the device, ID positions, history snippets) were
    built again after every catalogue version: each out-of-stock toggle made the next history encode copy the
    whole catalogue and render every snippet again (~0.14 s at 100k items, on the micro-batcher's one thread).
    Flags change no row: only upserts and compaction do."""
    from encoders.loading import load_recommender
    from tests.test_lazy_text_path import trained_tower

    recommender = load_recommender(trained_bundle)
    tower, catalogue = trained_tower(recommender.user_tower), recommender.catalogue
    history = recommender.item_ids[:4]
    before = tower.encode_histories([history])
    tables = tower._tables(catalogue.state)
    catalogue.set_active(recommender.item_ids[10:12], False)
    catalogue.remove(recommender.item_ids[12:14])
    assert all(a is b for a, b in zip(tower._tables(catalogue.state), tables))
    np.testing.assert_array_equal(tower.encode_histories([history]), before)
    catalogue.remove(history[-1:])  # a deleted history item is skipped, as before
    np.testing.assert_allclose(tower.encode_histories([history]), tower.encode_histories([history[:-1]]))
    record = catalogue.state.record(recommender.item_ids[20])
    catalogue.upsert([{**record, "item_id": "NEW"}], catalogue.state.vectors[[20]])
    assert tower._tables(catalogue.state)[0] is not tables[0] and len(tower._tables(catalogue.state)[1]) == \
        len(catalogue.state)



def test_the_index_size_metric_is_the_serving_bundles_after_a_sync_races_a_reload(service, frozen_bundle, tmp_path):
    """A sync of the bundle a reload replaced set `recsys_index_items` after the reload had: the metric gave the old
    bundle's count until the next catalogue edit."""
    newer = shutil.copytree(frozen_bundle, tmp_path / "shop" / "v2")
    old = service.current
    service.store.record_change("active", old.recommender.item_ids[0], active=False)  # pending
    synced, reloaded = threading.Event(), threading.Event()

    def paused(share):  # the sync has applied the change and left its lock
        synced.set()
        assert reloaded.wait(WAIT_S)
        return False

    old.recommender.catalogue.needs_compaction = paused
    thread = threading.Thread(target=service.sync)
    thread.start()
    try:
        assert synced.wait(WAIT_S)
        service.load(newer)
        service.upsert_item(service.current, {"item_id": "NEW", "text": "a camera bag", "title": "Bag"})
    finally:
        reloaded.set()
        thread.join()
    serving = service.current.recommender.index.n_available
    assert serving == old.recommender.index.n_available + 1
    assert service.metrics.registry.get_sample_value("recsys_index_items") == serving


def test_event_reads_do_not_wait_for_a_write_waiting_for_another_worker(tmp_path):
    """Another worker process is writing to the shared SQLite store; this worker's write waits for it (up to the
    30 s busy timeout). Reads shared the writer's connection and lock, so every read waited too: every known user's
    recommendation and every check for catalogue changes, each holding a thread of the pool meanwhile."""
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    store.append("u1", "a", "view")
    other = sqlite3.connect(str(tmp_path / "events.sqlite"), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the other worker's write transaction
    writing = threading.Thread(target=store.append, args=("u1", "b", "view"))
    read: list = []
    reading = threading.Thread(target=lambda: read.append(store.events("u1", 10)))
    try:
        writing.start()
        for _ in range(1000):  # until this worker's write holds its connection, waiting for SQLite's lock
            if store._lock.locked():
                break
            time.sleep(0.005)
        assert store._lock.locked()
        reading.start()
        reading.join(5.0)
        assert read == [["a"]]  # answered at once, from the last committed state
    finally:
        other.execute("COMMIT")
        writing.join()
        reading.join()
        other.close()
    assert store.events("u1", 10) == ["a", "b"] and store.last_event_seq() == 2  # the write, seen by the reads
    store.close()


def test_concurrent_writes_to_a_locked_sqlite_store_each_fail_within_about_the_write_timeout(tmp_path):
    """Another process holds the write lock: this worker's writes queue on the store's own lock, and each waited for
    the one before it to use up its busy timeout too (the sixth of six concurrent events: 6 × the timeout; with 40
    threads in the pool and 5 s, over three minutes). Each write now gives up its place in the queue too once the
    timeout is spent: none waits much more than twice it."""
    store = SQLiteEventStore(tmp_path / "events.sqlite", write_timeout_s=0.25)
    other = sqlite3.connect(str(tmp_path / "events.sqlite"), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    waits: list[tuple[float, str]] = []

    def write(n: int) -> None:
        started = time.monotonic()
        try:
            store.append("u1", f"i{n}", "view")
        except sqlite3.OperationalError as exc:
            waits.append((time.monotonic() - started, str(exc)))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10.0)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert len(waits) == 6 and all("locked" in message for _, message in waits)  # the API's 503 'retry shortly'
    assert max(wait for wait, _ in waits) < 1.0, waits  # 6 × 0.25 s = 1.5 s when they queued
    assert store.append("u1", "a", "view") == 1 and store.events("u1", 10) == ["a"]
    store.close()


@pytest.mark.parametrize("kind", ["similar", "text"])
def test_an_item_deleted_while_its_request_is_batched_fails_that_request_alone(service, kind):
    """Requests that reach the event loop together share one pipeline call. An item deleted after its request
    checked it, before the batch ran (an admin delete on another thread), failed the whole batch: every other
    product page (or text search) of that loop turn was answered 404 'unknown item' for the deleted one."""
    loaded = service.current
    victim, other = loaded.recommender.item_ids[:2]

    def query(item_id: str) -> Query:
        if kind == "similar":
            return Query((), item_id=item_id, k=5)
        return Query((item_id,), text="a black camera", k=5, strategy="session")

    async def requests() -> list:
        async def delete() -> None:  # lands after the victim's request was checked and queued for the batch
            service.delete_item(loaded, victim)

        return await asyncio.gather(loaded.recommend(query(victim)), delete(), loaded.recommend(query(other)),
                                    return_exceptions=True)

    mine, _, theirs = asyncio.run(requests())
    assert isinstance(mine, UnknownIdError) and victim in str(mine)
    assert not isinstance(theirs, Exception), theirs
    assert len(theirs.item_ids) == 5 and victim not in theirs.item_ids


def test_similar_items_of_an_item_deleted_mid_request_are_never_another_items(recommender):
    """The item passed the request's check, then was deleted before its neighbour list was searched: the search
    read row -1, the last row's vector, and answered (and cached) the neighbours of another item, led by that
    item itself."""
    anchor = recommender.item_ids[3]
    top = recommender.neighbours.top

    def deleted_first(*args, **kwargs):  # an admin delete lands between the check and the neighbour search
        recommender.catalogue.remove([anchor])
        return top(*args, **kwargs)

    recommender.neighbours.top = deleted_first
    with pytest.raises(UnknownIdError, match=anchor):
        recommender.similar_items(anchor, 5)


def _wait_until(condition) -> bool:
    for _ in range(int(WAIT_S / 0.02)):
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_reload_that_waited_for_another_follows_the_newer_one(service, frozen_bundle, tmp_path):
    """This worker was loading v3 (an admin reload) when another worker announced v2; following v2 waited for the
    v3 load, which then announced v3, and then loaded v2: its replay of the change log took in the v3
    announcement, so no sync ever saw it, and this worker served v2 for good while every other one served v3."""
    v2, v3 = (shutil.copytree(frozen_bundle, tmp_path / "shop" / name) for name in ("v2", "v3"))
    warming, released = threading.Event(), threading.Event()
    warm = service._warm_neighbours

    def paused(loaded):
        if loaded.version == "v3":  # the admin reload holds the load lock while it warms its caches
            warming.set()
            assert released.wait(WAIT_S)
        warm(loaded)

    service._warm_neighbours = paused
    admin = threading.Thread(target=service.load, args=(v3,), kwargs={"announce": True})
    admin.start()
    try:
        assert warming.wait(WAIT_S)
        service.store.record_change("bundle", record={"path": str(v2)})  # another worker swapped v2 in
        service.sync()  # sees it: follows v2 in a thread, which waits for the v3 load
    finally:
        released.set()
        admin.join()
    _wait_until(lambda: service._following is None and service.current.version == "v3")
    assert service.current.version == "v3" and service._following is None


def _live_catalogue(config):
    """A catalogue with the re-ranker's arrays and an index of `config` over it, a third of its rows tombstones."""
    from recsys.catalogue import Catalogue
    from recsys.features import FeatureBuilder, FeatureConfig
    from recsys.retrieval import VectorIndex
    from recsys.stats import InteractionStats, StatsConfig

    n = 300
    ids = [f"i{j}" for j in range(n)]
    items = pl.DataFrame({"item_id": ids, "text": ids, "category": [f"c{j % 7}" for j in range(n)],
                          "price": [float(j) for j in range(n)]})
    catalogue = Catalogue(items, np.random.default_rng(1).normal(size=(n, 16)).astype(np.float32))
    train = pl.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["i1", "i4", "i4"], "timestamp": [1, 2, 3]})
    builder = FeatureBuilder(catalogue, InteractionStats.fit(train, StatsConfig(time_mode="absolute")),
                             FeatureConfig())
    index = VectorIndex.over(catalogue, config)
    catalogue.remove(ids[::3])
    return catalogue, index, builder


def _edits(catalogue) -> None:
    """Upserts (a new item, a replaced one, one upserted then deleted), a deletion and a deactivation."""
    rng = np.random.default_rng(2)
    catalogue.upsert([{"item_id": "new", "text": "new", "category": "c_new", "price": 5.0},
                      {"item_id": "i1", "text": "i1 again", "category": "c1", "price": 1.5}],
                     rng.normal(size=(2, 16)).astype(np.float32))
    catalogue.remove(["i2"])
    catalogue.set_active(["i4"], False)
    catalogue.upsert([{"item_id": "brief", "text": "brief"}], rng.normal(size=(1, 16)).astype(np.float32))
    catalogue.remove(["brief"])


def _same_state(mine, theirs) -> None:
    assert mine.ids.tolist() == theirs.ids.tolist() and mine.flags.tolist() == theirs.flags.tolist()
    assert mine.position == theirs.position and mine.items.equals(theirs.items)
    np.testing.assert_array_equal(mine.vectors, theirs.vectors)
    a, b = mine.features, theirs.features
    assert a.vocabulary == b.vocabulary and a.stats_code.tolist() == b.stats_code.tolist()
    assert all(a.codes[k].tolist() == b.codes[k].tolist() for k in b.codes)
    np.testing.assert_array_equal(a.price, b.price)
    np.testing.assert_array_equal(a.vectors, b.vectors)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf_pq"])
def test_edits_do_not_wait_for_a_compaction_building_its_index(monkeypatch, kind):
    """A compaction held the catalogue's writer lock while it built the compacted index: every upsert,
    (de)activation and delete waited for the whole build (searches went on). The build now runs outside it and the
    swap replays the edits that landed meanwhile: they return at once, and the compacted catalogue holds them, the
    same catalogue as had they come before the compaction (once its tombstones are reclaimed too)."""
    import recsys.retrieval.index as index_module
    from recsys.config import IndexConfig
    from recsys.retrieval import VectorIndex

    config = {"flat": IndexConfig(), "hnsw": IndexConfig(kind="hnsw", hnsw_m=8, ef_construction=40, ef_search=64),
              "ivf_pq": IndexConfig(kind="ivf_pq", nlist=4, nprobe=4, pq_m=4, pq_nbits=4, refine="flat",
                                    refine_factor=300, kmeans_iters=4)}[kind]  # (every row refined: exact)
    catalogue, index, builder = _live_catalogue(config)
    reference, reference_index, _ = _live_catalogue(config)  # the same edits, before its compaction
    _edits(reference)
    assert reference.compact() == 100 + 3
    building, release, reclaimed = threading.Event(), threading.Event(), []
    compact_index = index_module.compact_index

    def slow(*args, **kwargs):
        building.set()
        assert release.wait(WAIT_S)
        return compact_index(*args, **kwargs)

    monkeypatch.setattr(index_module, "compact_index", slow)
    compaction = threading.Thread(target=lambda: reclaimed.append(catalogue.compact()))
    editor = threading.Thread(target=_edits, args=(catalogue,))
    compaction.start()
    try:
        assert building.wait(WAIT_S)
        editor.start()
        editor.join(2.0)
        assert not editor.is_alive()  # the edits returned while the index was still being built
        now = catalogue.state
        assert index.search(now.vectors[now.rows(["new"])], 3)[1][0, 0] == "new"  # served at once
        late = VectorIndex.over(catalogue, IndexConfig())  # an index attached while the compaction builds
    finally:
        release.set()
        compaction.join()
        editor.join()
    state = catalogue.state
    assert reclaimed == [100] and len(index) == len(state) == 200 + 3 and state.n_removed == 3  # i2, i1's, brief
    assert {"i2", "brief"}.isdisjoint(state.position) and not state.is_active("i4") and state.is_active("new")
    assert state.record("i1")["text"] == "i1 again"
    assert state.position == {i: row for row, i in enumerate(state.ids.tolist()) if not state.flags[row] & 1}
    assert builder.arrays is state.features
    live = [i for i in state.position if state.is_active(i)]
    found = index.search(state.vectors[state.rows(live)], 1)[1][:, 0].tolist()
    assert found == live  # every available item is found by its own vector, under its compacted row
    gone = index.search(state.vectors[[state.position["new"]]], len(state))[1][0].tolist()
    assert {"i2", "brief", "i4"}.isdisjoint(gone) and "new" in gone
    assert len(late) == len(state) and late.search(state.vectors[state.rows(live)], 1)[1][:, 0].tolist() == live
    assert catalogue.compact() == 3  # the tombstones of the edits made during the build
    _same_state(catalogue.state, reference.state)
    if kind != "hnsw":  # (a graph depends on the order its rows came in)
        queries = np.random.default_rng(5).normal(size=(8, 16)).astype(np.float32)
        np.testing.assert_array_equal(index.search(queries, 10)[1], reference_index.search(queries, 10)[1])


@pytest.fixture(scope="module")
def adapted_bert(tiny_bert_dir):
    from encoders.backbone import load_backbone
    from encoders.lora import attach_adapters
    from encoders.towers import AdaptedBert
    from recsys.config import LoraConfig

    backbone, tokenizer = load_backbone(str(tiny_bert_dir))
    return AdaptedBert(attach_adapters(backbone, LoraConfig(top_layers=1)), 1).eval(), tokenizer


@pytest.mark.parametrize("mode", ["sequence", "fusion"])
def test_an_upsert_extends_a_trained_towers_tables_and_a_compaction_rebuilds_them(adapted_bert, monkeypatch, mode):
    """After every upsert, a trained user tower built its per-row tables again from scratch: the whole catalogue's
    vectors copied to the device, every row's ID position looked up, every history snippet rendered. An upsert's
    rows are appended to them now (the same tables as a rebuild); only a compaction (rows renumbered) rebuilds."""
    import torch

    from encoders.serving import TrainedUserTower
    from tests.test_tower_contract import trained

    tower = trained(adapted_bert, mode)
    catalogue = tower.catalogue
    build, builds = TrainedUserTower._build_tables, []
    monkeypatch.setattr(TrainedUserTower, "_build_tables", lambda self, state: builds.append(1) or build(self, state))

    def same_as_a_rebuild() -> None:
        state = catalogue.state
        vectors, ids, snippets = tower._tables(state)
        fresh = build(tower, state)
        assert torch.equal(vectors, fresh.vectors[:len(state)]) and torch.equal(ids, fresh.ids[:len(state)])
        assert snippets == fresh.snippets and len(vectors) == len(ids) == len(state)

    history = ["i0", "i1", "i2"]
    tower.encode_histories([history])
    older = catalogue.state
    rng = np.random.default_rng(7)
    catalogue.upsert([{"item_id": "n0", "text": "blue hat text", "title": "blue hat"},  # a new item …
                      {"item_id": "i1", "text": "red bag text", "title": "red bag"}],   # … and a replaced one
                     rng.normal(size=(2, catalogue.dim)).astype(np.float32))
    catalogue.set_active(["i5"], False)
    catalogue.upsert([{"item_id": "n1", "text": "tripod text", "title": "tripod"}],
                     rng.normal(size=(1, catalogue.dim)).astype(np.float32))
    got = tower.encode_histories([history + ["n0", "n1"], history])
    assert len(builds) == 1  # the first encode's
    same_as_a_rebuild()
    ids = tower._tables(catalogue.state)[1]
    assert ids[catalogue.state.rows(["i1", "n0", "n1"])].tolist() == [1, 8, 8]  # i1 keeps its ID; new items: none
    assert len(tower._tables(older)[0]) == len(catalogue.state) and len(builds) == 1  # a request begun earlier
    np.testing.assert_allclose(got, tower.over(catalogue).encode_histories([history + ["n0", "n1"], history]),
                               atol=1e-6)  # a tower building its tables from scratch answers the same
    catalogue.remove(["i3", "n0"])
    catalogue.compact()
    builds.clear()
    tower.encode_histories([history])
    assert len(builds) == 1  # rows renumbered: built again
    same_as_a_rebuild()


def test_unit_rows_in_blocks_are_the_whole_arrays_norms_bit_for_bit():
    """`unit_rows` takes its norms a block of rows at a time (no squared copy of every vector); each row's norm is
    the one `np.linalg.norm` gives over the whole array, so the diversification sees the same bits. `unit_store`
    normalises in place in storage with room to grow."""
    from recsys.item_arrays import NORM_ROWS, unit_rows, unit_store

    vectors = np.random.default_rng(0).normal(size=(2 * NORM_ROWS + 7, 8)).astype(np.float32)
    vectors[3] = 0.0  # zero rows stay zero
    whole = np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = vectors / np.where(whole > 0, whole, 1.0)
    assert np.array_equal(unit_rows(vectors), expected) and not unit_rows(vectors)[3].any()
    store = unit_store(vectors)
    assert np.array_equal(store.view(), expected) and store.n == len(vectors)
    first = store.view()
    assert np.shares_memory(first, store.append(vectors[:5]))  # the room: appended in place
    assert unit_rows(np.zeros((0, 8), np.float32)).shape == (0, 8)
