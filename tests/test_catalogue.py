"""The catalogue: one versioned object every part reads (rows, ids, flags, metadata, vectors, the re-ranker's
arrays); the index follows it; changes are whole new versions; upserted items get an imported item's arrays."""

import threading

import numpy as np
import polars as pl
import pytest

from recsys.catalogue import INACTIVE, REMOVED, Catalogue
from recsys.changes import apply_changes, fold
from recsys.config import IndexConfig
from recsys.errors import UnknownIdError
from recsys.features import FeatureBuilder, FeatureConfig, ItemArrays
from recsys.retrieval import VectorIndex
from recsys.stats import InteractionStats, StatsConfig
from recsys.store import Change

ITEMS = pl.DataFrame({"item_id": ["a", "b", "c"], "text": ["A", "B", "C"], "category": ["x", "y", None],
                      "price": [10.0, None, 30.0]})
VECTORS = np.eye(3, 4, dtype=np.float32)


def test_changes_are_new_versions_and_old_states_stay_as_they_were():
    catalogue = Catalogue(ITEMS, VECTORS)
    first = catalogue.state
    assert (first.version, first.vectors_version, len(first), first.n_available) == (0, 0, 3, 3)
    version = catalogue.upsert([{"item_id": "b", "text": "B2", "category": "y", "unknown_field": 1},
                                {"item_id": "d", "text": "D"}], np.array([[0, 0, 0, 1], [1, 1, 0, 0]], np.float32))
    state = catalogue.state
    assert version == state.version == 1 and state.vectors_version == 1
    assert state.ids.tolist() == ["a", "b", "c", "b", "d"] and state.flags[1] == REMOVED  # b's old row: a tombstone
    assert state.position == {"a": 0, "c": 2, "b": 3, "d": 4} and state.live_ids == ["a", "c", "b", "d"]
    assert state.record("b")["text"] == "B2" and "unknown_field" not in state.record("b") and state.record("x") is None
    np.testing.assert_array_equal(state.vectors[3], [0, 0, 0, 1])
    # the state read before the change is untouched (a request that took it sees one consistent catalogue)
    assert len(first) == 3 and first.position == {"a": 0, "b": 1, "c": 2} and first.record("b")["text"] == "B"
    np.testing.assert_array_equal(first.vectors, VECTORS)

    assert catalogue.set_active(["a", "a"], False) == 1 and catalogue.set_active(["a"], False) == 0
    assert catalogue.version == 2 and catalogue.vectors_version == 1  # a stock change keeps query vectors valid
    assert catalogue.state.flags[0] == INACTIVE and not catalogue.state.is_active("a") \
        and "a" in catalogue.state.position
    with pytest.raises(UnknownIdError, match="'zz'"):
        catalogue.remove(["c", "zz"])
    assert catalogue.version == 2  # nothing half-applied
    assert catalogue.remove(["c", "zz"], missing_ok=True) == 1 and catalogue.vectors_version == 2
    assert "c" not in catalogue.state.position and catalogue.state.n_removed == 2
    assert catalogue.needs_compaction(0.1) and not catalogue.needs_compaction(0.5)


def test_the_index_follows_the_catalogue_and_compaction_renumbers_rows():
    catalogue = Catalogue(ITEMS, VECTORS)
    index = VectorIndex.over(catalogue, IndexConfig())
    catalogue.upsert([{"item_id": "d", "text": "D"}], np.array([[0, 0, 0, 1]], np.float32))
    assert index.search(np.array([[0, 0, 0, 1]], np.float32), 1)[1][0, 0] == "d" and len(index) == 4
    catalogue.remove(["a"])
    catalogue.set_active(["b"], False)
    assert index.search(np.array([[1, 1, 1, 0.5]], np.float32), 4)[1][0].tolist() == ["c", "d"]
    version = catalogue.version
    assert catalogue.compact() == 1 and catalogue.version == version + 1
    state = catalogue.state
    assert state.ids.tolist() == ["b", "c", "d"] and state.position == {"b": 0, "c": 1, "d": 2} and len(index) == 3
    assert not state.is_active("b") and index.search(np.array([[0, 0, 1, 0]], np.float32), 1)[1][0, 0] == "c"
    np.testing.assert_array_equal(state.vectors, np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32))


def test_a_catalogue_growing_a_row_at_a_time_copies_its_vectors_once_per_doubling():
    """A full buffer grew by an eighth: a catalogue of n items copied all its vectors every n/8 new items (at 100k
    384-d items, 154 MB and ~0.4 s of one request's wait every 12,500 items; 5 copies on the way to 200k). It now
    doubles: growing from 1,000 rows to 8,000 a row at a time moves the vectors 3 times, not 15. Every state keeps
    its rows, and searches answer as an exact search over the rows does."""
    rng = np.random.default_rng(0)
    n, dim = 1_000, 8
    catalogue = Catalogue(pl.DataFrame({"item_id": [f"i{j}" for j in range(n)]}), rng.normal(size=(n, dim)))
    index = VectorIndex.over(catalogue, IndexConfig(kind="flat"))
    buffers, states = [catalogue.state.vectors.ctypes.data], []
    for j in range(7 * n):
        catalogue.upsert([{"item_id": f"new{j}"}], rng.normal(size=(1, dim)))
        state = catalogue.state
        if state.vectors.ctypes.data != buffers[-1]:
            buffers.append(state.vectors.ctypes.data)
        if j % 1_000 == 0:
            states.append((state, state.vectors.copy()))
    assert len(buffers) == 4 and len(catalogue.state) == 8 * n  # 1,000 rows (no room), then 2,000, 4,000, 8,000
    for state, rows in states:  # older states' views stay as they were
        np.testing.assert_array_equal(state.vectors, rows)
    queries = rng.normal(size=(5, dim)).astype(np.float32)
    vectors = catalogue.state.vectors / np.linalg.norm(catalogue.state.vectors, axis=1, keepdims=True)
    exact = catalogue.state.ids[np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]]
    assert index.search(queries, 10)[1].tolist() == exact.tolist()


def test_searches_never_fail_while_items_change_and_the_index_is_compacted():
    rng = np.random.default_rng(0)
    n = 3000
    catalogue = Catalogue(pl.DataFrame({"item_id": [f"i{j}" for j in range(n)]}), rng.normal(size=(n, 16)))
    index = VectorIndex.over(catalogue, IndexConfig(kind="hnsw", hnsw_m=8, ef_construction=20))
    queries = rng.normal(size=(8, 16)).astype(np.float32)
    errors, done = [], threading.Event()

    def search() -> None:
        while not done.is_set():
            try:
                _, found = index.search(queries, 10)
                assert None not in set(found.ravel())
            except BaseException as exc:  # surfaced below
                errors.append(exc)
                return

    threads = [threading.Thread(target=search) for _ in range(2)]
    for thread in threads:
        thread.start()
    catalogue.remove([f"i{j}" for j in range(0, n, 4)])
    catalogue.upsert([{"item_id": "new"}], queries[:1])
    assert catalogue.compact() == n // 4
    done.set()
    for thread in threads:
        thread.join()
    assert not errors and len(index) == n - n // 4 + 1 and index.search(queries[:1], 1)[1][0, 0] == "new"


def test_an_upserted_item_gets_the_arrays_and_features_an_imported_item_gets():
    train = pl.DataFrame({"user_id": ["u1", "u1", "u2", "u2"], "item_id": ["a", "b", "b", "c"],
                          "timestamp": [1, 2, 3, 4]})
    stats = InteractionStats.fit(train, StatsConfig(time_mode="absolute", recent_window=2, pair_window=2))
    extra = [{"item_id": "n1", "text": "N1", "category": "y", "price": 20.0},   # a known category
             {"item_id": "n2", "text": "N2", "category": "z", "price": None},   # a new one
             {"item_id": "a", "text": "A2", "category": "x", "price": 12.0}]     # a replaced item keeps its events
    vectors = np.array([[0, 1, 1, 0], [0, 0, 2, 1], [3, 0, 0, 1]], np.float32)
    live = Catalogue(ITEMS, VECTORS)
    builder = FeatureBuilder(live, stats, FeatureConfig())
    live.upsert(extra, vectors)
    imported_items = pl.concat([ITEMS.filter(pl.col("item_id") != "a"), pl.DataFrame(extra, schema=ITEMS.schema)])
    imported_vectors = np.vstack([VECTORS[1:], vectors])
    imported = FeatureBuilder.from_frame(imported_items, imported_vectors, stats, FeatureConfig())

    mine, theirs = live.state, imported.catalogue.state
    ours_arrays, their_arrays = builder.arrays, ItemArrays.of(theirs, stats)
    rows_mine, rows_theirs = mine.rows(["n1", "n2", "a", "b"]), theirs.rows(["n1", "n2", "a", "b"])
    assert ours_arrays.stats_code[rows_mine].tolist() == their_arrays.stats_code[rows_theirs].tolist() == \
        [-1, -1, stats.code["a"], stats.code["b"]]
    np.testing.assert_array_equal(ours_arrays.price[rows_mine], their_arrays.price[rows_theirs])
    np.testing.assert_allclose(ours_arrays.vectors[rows_mine], their_arrays.vectors[rows_theirs])
    codes = ours_arrays.codes["category"][rows_mine]
    assert codes[0] == ours_arrays.codes["category"][mine.position["b"]] and codes[1] not in \
        ours_arrays.codes["category"][[0, 1, 2]]  # equal values share a code; a new value gets a new one
    histories = [["b", "n1"], ["n2", "a"], []]
    candidates = [["n2", "a", "c"], ["n1", "b"], ["n1"]]
    scores = [[0.9, 0.5, 0.1], [0.7, 0.2], [0.3]]
    np.testing.assert_array_equal(builder.matrix(histories, candidates, scores, [5, 5, 5]),
                                  imported.matrix(histories, candidates, scores, [5, 5, 5]))
    live.compact()  # the arrays follow the renumbered rows
    np.testing.assert_array_equal(builder.matrix(histories, candidates, scores, [5, 5, 5]),
                                  imported.matrix(histories, candidates, scores, [5, 5, 5]))


def test_changes_fold_to_their_net_effect_and_foreign_vectors_are_encoded_again():
    changes = [Change(1, "upsert", "n", {"item_id": "n", "text": "first"}, np.ones(4, np.float32), "s1"),
               Change(2, "active", "n", active=False),
               Change(3, "upsert", "n", {"item_id": "n", "text": "second"}, np.ones(4, np.float32), "s1"),  # active
               Change(4, "delete", "a"), Change(5, "active", "a", active=True),  # a deleted item stays deleted
               Change(6, "active", "b", active=False),
               Change(7, "upsert", "m", {"item_id": "m", "text": "other"}, np.ones(3, np.float32), "s2"),
               Change(8, "bundle", record={"path": "/models/v2"})]
    folded = fold(changes)
    assert list(folded.upserts) == ["n", "m"] and folded.upserts["n"].record["text"] == "second"
    assert folded.active == {"b": False} and folded.deleted == {"a"}
    assert folded.bundle == "/models/v2" and folded.last_seq == 8
    catalogue = Catalogue(ITEMS, VECTORS)
    skipped = apply_changes(catalogue, changes, "s1")
    assert skipped.skipped == ("m",) and "m" not in catalogue.state.position  # another space, nothing to encode it
    seen = []

    def encode(records):
        seen.extend(r["text"] for r in records)
        return np.full((len(records), 4), 0.5, np.float32)

    fresh = Catalogue(ITEMS, VECTORS)
    applied = apply_changes(fresh, changes, "s1", encode)
    assert (applied.upserted, applied.reencoded, applied.deleted, applied.deactivated) == (2, 1, 1, 1)
    assert str(applied) == "2 upserted (1 encoded again), 1 deleted, 1 deactivated"  # the serve log's words
    assert str(skipped) == "1 upserted, 1 skipped (another item space), 1 deleted, 1 deactivated"
    assert str(apply_changes(fresh, [], "s1")) == "nothing"
    assert seen == ["other"] and fresh.state.is_active("n") and not fresh.state.is_active("b")
    assert "a" not in fresh.state.position and fresh.state.record("n")["text"] == "second"
    np.testing.assert_array_equal(fresh.state.vectors[fresh.state.position["m"]], np.full(4, 0.5))


def test_cached_filter_masks_are_bounded_in_bytes(monkeypatch):
    import recsys.catalogue_state

    rows = 1_000  # one byte per row and mask
    items = pl.DataFrame({"item_id": [f"i{n}" for n in range(rows)], "category": [f"c{n % 50}" for n in range(rows)]})
    state = Catalogue(items, np.ones((rows, 2), np.float32)).state
    monkeypatch.setattr(recsys.catalogue_state, "WHERE_MASK_BYTES", 5 * rows)
    masks = [state.where_mask({"category": f"c{n}"}) for n in range(20)]  # 20 distinct filters, 5 masks' budget
    assert len(state._where_masks) == 5 and sum(m.nbytes for m in state._where_masks.values()) <= 5 * rows
    assert [int(m.sum()) for m in masks] == [20] * 20 and masks[7][7] and not masks[7][8]  # every answer right
    assert state.where_mask({"category": "c0"}) is masks[0]  # a cached one is reused


def test_a_foreign_upsert_of_an_items_own_text_keeps_this_catalogues_vector():
    """A reload replays the change log into a new bundle: an upsert from the old item space whose text the new
    catalogue already holds (an attribute change) keeps the new bundle's own (trained) vector, not a text-only one."""
    catalogue = Catalogue(ITEMS, VECTORS)
    own = catalogue.state.record("b")
    kept = catalogue.state.vectors[catalogue.state.position["b"]].copy()
    changes = [Change(1, "upsert", "b", {**own, "category": "renamed"}, np.ones(4, np.float32), "old"),
               Change(2, "upsert", "c", {"item_id": "c", "text": "a new text"}, np.ones(4, np.float32), "old")]
    seen = []

    def encode(records):
        seen.extend(r["item_id"] for r in records)
        return np.full((len(records), 4), 0.5, np.float32)

    applied = apply_changes(catalogue, changes, "new", encode)
    state = catalogue.state
    assert seen == ["c"] and (applied.upserted, applied.reencoded) == (2, 1)
    np.testing.assert_array_equal(state.vectors[state.position["b"]], kept)
    assert state.record("b")["category"] == "renamed"
    np.testing.assert_array_equal(state.vectors[state.position["c"]], np.full(4, 0.5, np.float32))
