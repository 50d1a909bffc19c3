"""VectorIndex: exactness, ANN recall on clustered data, live add/remove, compaction, save/load."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

from recsys.config import BuildConfig, IndexConfig
from recsys.errors import SettingError, UnknownIdError
from recsys.retrieval import (SearchParams, VectorIndex, choose_nlist, clustered_embeddings, factory_string, gpu_count,
                              reconstruct_all)
from recsys.retrieval.exact import tied

N, DIM = 2000, 32
KINDS = {
    "flat": IndexConfig(),
    "flat_fp16": IndexConfig(float16=True),
    "hnsw": IndexConfig(kind="hnsw", hnsw_m=16, ef_construction=40, ef_search=64),
    "ivf_flat": IndexConfig(kind="ivf_flat", nlist=32, nprobe=8),
    "ivf_pq": IndexConfig(kind="ivf_pq", nlist=32, nprobe=8, pq_m=8, pq_nbits=6, refine="flat"),
}


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.fixture(scope="module")
def data():
    items, queries = clustered_embeddings(N, DIM, n_queries=40, seed=3)
    ids = np.array([f"item{i}" for i in range(N)], dtype=object)
    return items, queries, ids


@pytest.fixture(scope="module")
def built(data):
    items, _, ids = data
    faiss.omp_set_num_threads(1)
    return {name: VectorIndex.build(items, ids, config) for name, config in KINDS.items()}


def exact_top(items, queries, k):
    """Rows and scores of the k best items per query, scores equal to 1e-5 (`tied`) by row, as a search orders and
    cuts them."""
    scores = queries @ items.T
    order = np.argsort(-tied(scores), axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def recall(found_ids, true_rows, ids) -> float:
    return float(np.mean([len(set(f) & set(ids[t])) / len(t) for f, t in zip(found_ids, true_rows)]))


# ---- configuration --------------------------------------------------------------------------------
def test_default_config_is_exact_flat_and_every_config_round_trips():
    assert IndexConfig().kind == "flat" and IndexConfig().float16 is False and IndexConfig().gpu == "auto"
    for config in [*KINDS.values(), IndexConfig(kind="ivf_pq", opq=True, refine="fp16", gpu="off", gpu_shard=True)]:
        assert IndexConfig.model_validate_json(config.model_dump_json()) == config
    build = BuildConfig(index=KINDS["hnsw"])
    assert BuildConfig.model_validate_json(build.model_dump_json()).index.hnsw_m == 16


def test_factory_strings_and_nlist_choice():
    assert factory_string(IndexConfig(), 384, 0) == "Flat"
    assert factory_string(IndexConfig(kind="hnsw", float16=True, hnsw_m=24), 384, 0) == "HNSW24,SQfp16"
    assert factory_string(IndexConfig(kind="ivf_flat"), 384, 4096) == "IVF4096,Flat"
    assert factory_string(IndexConfig(kind="ivf_pq", opq=True, refine="fp16"), 384, 4096) \
        == "OPQ48,IVF4096,PQ48x8,Refine(SQfp16)"
    assert (choose_nlist(1_000_000, IndexConfig()), choose_nlist(100_000, IndexConfig()),
            choose_nlist(10_000, IndexConfig()), choose_nlist(100, IndexConfig())) == (4096, 1024, 256, 2)
    assert choose_nlist(500, IndexConfig(nlist=4096)) == 500
    with pytest.raises(SettingError, match="index.pq_m=7 must divide"):  # a setting's error: one CLI `error:` line
        factory_string(IndexConfig(kind="ivf_pq", pq_m=7), 32, 16)


# ---- search quality -------------------------------------------------------------------------------
def test_flat_search_equals_brute_force(data, built):
    items, queries, ids = data
    scores, found = built["flat"].search(queries, 25)
    rows, true_scores = exact_top(items, queries, 25)
    assert found.shape == (40, 25) and scores.dtype == np.float32
    np.testing.assert_array_equal(found, ids[rows])
    np.testing.assert_allclose(scores, true_scores, atol=1e-5)


def test_unnormalised_vectors_are_normalised_for_cosine_search(data):
    items, queries, ids = data
    scale = np.linspace(0.5, 3.0, N, dtype=np.float32)[:, None]
    index = VectorIndex.build(items * scale, ids)
    _, found = index.search(queries * 7.0, 10)
    np.testing.assert_array_equal(found, ids[exact_top(items, queries, 10)[0]])


@pytest.mark.parametrize("name, at_least", [("flat_fp16", 0.99), ("hnsw", 0.98), ("ivf_flat", 0.98), ("ivf_pq", 0.93)])
def test_ann_recall_at_10_on_clustered_data(data, built, name, at_least):
    items, queries, ids = data
    _, found = built[name].search(queries, 10)
    assert recall(found, exact_top(items, queries, 10)[0], ids) >= at_least


def test_search_params_per_call_trade_recall_for_speed(data, built):
    items, queries, ids = data
    truth = exact_top(items, queries, 10)[0]
    low = recall(built["ivf_flat"].search(queries, 10, params=SearchParams(nprobe=1))[1], truth, ids)
    full = recall(built["ivf_flat"].search(queries, 10, params=SearchParams(nprobe=32))[1], truth, ids)
    assert full == 1.0 and low < full
    assert built["ivf_flat"].index.nprobe == 8  # per-call parameters never mutate the index


def test_width_is_capped_by_catalogue_and_missing_slots_are_none(data):
    items, queries, ids = data
    index = VectorIndex.build(items[:5], ids[:5])
    scores, found = index.search(queries[:2], 10)
    assert found.shape == (2, 5) and set(found.ravel()) == set(ids[:5])
    scores, found = index.search(queries[:0], 10)
    assert found.shape == (0, 5)


# ---- live catalogue -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(KINDS))
def test_add_then_search_finds_the_new_item(data, name):
    items, queries, ids = data
    index = VectorIndex.build(items, ids, KINDS[name])
    index.add(queries[:3], ["new-a", "new-b", "new-c"])
    assert len(index) == N + 3 and index.position["new-b"] == N + 1 and index.ids[N + 2] == "new-c"
    _, found = index.search(queries[:3], 1)
    assert found[:, 0].tolist() == ["new-a", "new-b", "new-c"]


def test_adding_an_existing_id_replaces_its_vector(data):
    items, queries, ids = data
    index = VectorIndex.build(items, ids)
    index.add(queries[:1], ["item7"])
    assert index.position["item7"] == N and index.n_removed == 1 and index.n_available == N
    _, found = index.search(np.vstack([queries[:1], items[7:8]]), N)
    assert found[0, 0] == "item7"
    assert all(list(row).count("item7") == 1 for row in found)


def test_add_texts_encodes_with_the_item_tower(data):
    items, queries, ids = data

    class FakeTower:
        def encode(self, texts: list[str]) -> np.ndarray:
            return queries[[int(t.split()[-1]) for t in texts]]

    index = VectorIndex.build(items, ids)
    index.add_texts(["camera 5", "lens 6"], ["cam", "lens"], FakeTower())
    assert index.search(queries[5:7], 1)[1][:, 0].tolist() == ["cam", "lens"]


@pytest.mark.parametrize("name", list(KINDS))
def test_removed_items_are_never_returned_and_k_stays_filled(data, name):
    items, queries, ids = data
    index = VectorIndex.build(items, ids, KINDS[name])
    nearest = set(ids[exact_top(items, queries, 5)[0]].ravel())
    assert index.remove(nearest) == len(nearest)
    assert index.n_available == N - len(nearest) and not nearest & set(index.position)
    _, found = index.search(queries, 50)
    assert found.shape == (40, 50) and not (set(found.ravel()) & nearest) and None not in set(found.ravel())
    _, everything = index.search(queries[:2], N)  # k above what is left: all survivors, nothing else
    assert everything.shape == (2, N - len(nearest))
    assert set(everything[0]) == set(ids) - nearest


@pytest.mark.parametrize("name", ["flat", "hnsw", "ivf_flat", "ivf_pq"])
def test_every_search_holds_only_eligible_items_and_fills_k_through_random_edits(data, name):
    """Random additions, removals, stock changes and compactions, each followed by searches at k 1 to 200 with
    random per-query exclusions: every row holds distinct, active, not excluded items, as many as k or as there are
    eligible ones (the approximate kinds over-fetch and refill)."""
    import random

    rng, np_rng = random.Random(7), np.random.default_rng(7)
    items, queries, ids = data
    index = VectorIndex.build(items[:600], ids[:600], KINDS[name])
    live = active = set(ids[:600].tolist())
    added = 0
    for _ in range(40):
        draw = rng.random()
        if draw < 0.25:
            count = rng.randint(1, 20)
            new = [f"new{added + j}" for j in range(count)]
            added += count
            near = items[rng.sample(range(600), count)] + 0.05 * np_rng.normal(size=(count, DIM)).astype(np.float32)
            index.add(near, new)
            live, active = live | set(new), active | set(new)
        elif draw < 0.45:
            gone = set(rng.sample(sorted(live), max(0, min(len(live) - 5, rng.randint(1, 60)))))
            index.remove(gone)
            live, active = live - gone, active - gone
        elif draw < 0.65:
            out = set(rng.sample(sorted(active), max(0, min(len(active) - 5, rng.randint(1, 80)))))
            index.deactivate(out)
            active = active - out
        elif draw < 0.8:
            back = set(rng.sample(sorted(live), min(len(live), rng.randint(1, 40))))
            index.activate(back)
            active = active | back
        else:
            index.compact()
        k = rng.choice([1, 10, 50, 200])
        excluded = [set(rng.sample(sorted(active), rng.randint(0, 30))) for _ in queries[:10]]
        _, found = index.search(queries[:10], k, exclude_per_query=excluded)
        for row, banned in zip(found, excluded):
            row = [item for item in row if item is not None]
            assert len(row) == len(set(row)) == min(k, len(active - banned))
            assert set(row) <= active - banned


def test_deactivate_hides_and_activate_restores(data):
    items, queries, ids = data
    index = VectorIndex.build(items, ids)
    top = index.search(queries[:1], 3)[1][0].tolist()
    assert index.deactivate(top[:2]) == 2 and not index.is_active(top[0]) and top[0] in index.position
    assert index.search(queries[:1], 1)[1][0, 0] == top[2]
    index.activate(top[:1])
    assert index.search(queries[:1], 2)[1][0].tolist() == [top[0], top[2]]


def test_unknown_ids_raise_unless_missing_ok(data):
    items, _, ids = data
    index = VectorIndex.build(items[:10], ids[:10])
    with pytest.raises(UnknownIdError, match="nope"):
        index.remove(["item1", "nope"])
    assert index.n_available == 10  # nothing half-applied
    assert index.remove(["item1", "nope"], missing_ok=True) == 1


@pytest.mark.parametrize("name", list(KINDS))
def test_compact_reclaims_removed_rows_and_keeps_results(data, name):
    items, queries, ids = data
    index = VectorIndex.build(items, ids, KINDS[name])
    gone = set(ids[::3])
    index.remove(gone)
    index.deactivate(["item1"])
    before = index.search(queries, 10)[1]
    assert index.compact() == len(gone) and index.compact() == 0
    assert len(index) == len(index.ids) == N - len(gone) and index.n_removed == 0
    assert all(index.ids[row] == item for item, row in index.position.items())
    assert not index.is_active("item1") and "item1" in index.position
    after = index.search(queries, 10)[1]
    if name == "hnsw":  # the graph is rebuilt from the survivors: approximate either way
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(after, before)]) >= 0.9
    else:  # flat rows and IVF codes are moved as they are
        np.testing.assert_array_equal(after, before)
    assert not (set(after.ravel()) & gone)


# ---- persistence ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(KINDS))
def test_save_load_round_trip(tmp_path, data, name):
    items, queries, ids = data
    index = VectorIndex.build(items, ids, KINDS[name], attributes={"category": [f"c{i % 4}" for i in range(N)]})
    index.remove(["item3"])
    index.deactivate(["item4"])
    index.add(queries[:1], ["late"], attributes={"category": ["c9"]})
    index.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attributes.parquet", "config.json", "ids.npy", "index.faiss",
                                                          "state.npy"]
    loaded = VectorIndex.load(tmp_path)
    assert loaded.config == KINDS[name] and len(loaded) == N + 1 and loaded.n_available == N - 1
    assert loaded.position == index.position and not loaded.is_active("item4")
    for kwargs in ({}, {"where": {"category": "c1"}}):
        np.testing.assert_array_equal(loaded.search(queries, 10, **kwargs)[1], index.search(queries, 10, **kwargs)[1])
    np.testing.assert_allclose(reconstruct_all(loaded), reconstruct_all(index))


def test_loads_a_bundle_written_before_state_and_attributes_existed(tmp_path, data):
    items, queries, ids = data
    index = VectorIndex.build(items, ids)
    index.save(tmp_path)
    (tmp_path / "state.npy").unlink()
    loaded = VectorIndex.load(tmp_path)
    assert loaded.n_available == N and loaded.attributes is None
    assert loaded.position == index.position and all(loaded.is_active(i) for i in ids)  # no state: all active
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], index.search(queries, 10)[1])


# ---- GPU ------------------------------------------------------------------------------------------
def test_cpu_faiss_never_builds_a_gpu_replica(data):
    items, _, ids = data
    if gpu_count():
        pytest.skip("a GPU is visible")
    assert VectorIndex.build(items[:100], ids[:100], IndexConfig(gpu="auto")).gpu is None


@pytest.mark.gpu
def test_gpu_replica_matches_cpu_search(data):
    if not gpu_count():
        pytest.skip("needs faiss-gpu and a GPU")
    items, queries, ids = data
    gpu = VectorIndex.build(items, ids, KINDS["ivf_flat"])
    cpu = VectorIndex.build(items, ids, KINDS["ivf_flat"].model_copy(update={"gpu": "off"}))
    assert gpu.gpu is not None
    np.testing.assert_array_equal(gpu.search(queries, 10)[1], cpu.search(queries, 10)[1])
    gpu.remove(["item5"])
    gpu.add(queries[:1], ["new"])
    _, found = gpu.search(queries, 20)
    assert "item5" not in set(found.ravel()) and found[0, 0] == "new"


def test_opq_ivf_pq_builds_searches_compacts_and_round_trips(tmp_path):
    items, queries = clustered_embeddings(300, 16, n_queries=5, seed=1)
    ids = [f"o{i}" for i in range(300)]
    config = IndexConfig(kind="ivf_pq", opq=True, pq_m=4, pq_nbits=4, nlist=4, nprobe=4, refine="flat")
    index = VectorIndex.build(items, ids, config)
    assert index.search(items[7:8], 1)[1][0, 0] == "o7"  # refine with exact vectors finds the item itself
    index.remove(["o7"])
    assert index.compact() == 1 and index.search(items[7:8], 1)[1][0, 0] != "o7"
    index.save(tmp_path)
    np.testing.assert_array_equal(VectorIndex.load(tmp_path).search(queries, 5)[1], index.search(queries, 5)[1])


def test_searches_run_safely_while_the_catalogue_changes(data):
    items, queries, ids = data
    index = VectorIndex.build(items, ids, KINDS["hnsw"])
    errors: list[BaseException] = []

    def searcher():
        try:
            for _ in range(30):
                _, found = index.search(queries[:4], 10)
                assert None not in set(found.ravel())
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for step in range(10):
        index.add(queries[step:step + 1], [f"live{step}"])
        index.remove([f"item{step}"])
        if step == 5:
            index.compact()
    for thread in threads:
        thread.join()
    assert not errors and len(index.position) == N and index.search(queries[9:10], 1)[1][0, 0] == "live9"


def test_deep_searches_refine_at_most_refine_max_candidates_per_query(data):
    from recsys.retrieval.factory import refine_factor

    config = IndexConfig(kind="ivf_pq", nlist=32, nprobe=8, pq_m=8, pq_nbits=6, refine="flat", refine_factor=8,
                         refine_max=800)
    assert refine_factor(config, None, 10) == 8.0      # shallow: the configured factor
    assert refine_factor(config, None, 100) == 8.0     # exactly at the cap
    assert refine_factor(config, None, 200) == 4.0     # the re-ranker's depth: 800 candidates re-scored
    assert refine_factor(config, None, 1000) == 2.0    # never below 2
    assert refine_factor(config, SearchParams(refine_factor=8), 200) == 8.0  # a call's own factor is kept
    items, queries, ids = data
    index = VectorIndex.build(items, ids, config)
    capped = index.search(queries, 200)
    explicit = index.search(queries, 200, params=SearchParams(refine_factor=4))
    uncapped = index.search(queries, 200, params=SearchParams(refine_factor=8))
    np.testing.assert_array_equal(capped[1], explicit[1])
    # half the re-scored candidates cost (here) at most 0.01 of recall@200 against exact search
    true_rows, _ = exact_top(items, queries, 200)
    full = recall(uncapped[1], true_rows, ids)
    assert full - 0.01 <= recall(capped[1], true_rows, ids) <= full


def test_search_threads_cap_faiss_in_the_thread_that_searches(built, data):
    """OpenMP's thread count belongs to the thread that sets it: the API set RECSYS_FAISS_THREADS in the thread that
    built its service, and every search from the thread pool or the micro-batcher ran on all cores."""
    import threading

    index = built["hnsw"]
    seen = {}

    def probe(key: str) -> None:
        seen[key + " before"] = faiss.omp_get_max_threads()
        index.search(data[1][:2], 5)
        seen[key + " after"] = faiss.omp_get_max_threads()

    def in_thread(key: str) -> None:
        thread = threading.Thread(target=probe, args=(key,))
        thread.start()
        thread.join()

    in_thread("unset")
    wanted = seen["unset before"] + 1  # a value no fresh thread starts with
    index.search_threads = wanted
    try:
        in_thread("set")
    finally:
        index.search_threads = 0
    assert seen["unset after"] == seen["unset before"]  # 0: FAISS's setting is left alone
    assert seen["set before"] == wanted - 1 and seen["set after"] == wanted


@pytest.mark.parametrize("name", ["hnsw", "ivf_flat", "ivf_pq"])
def test_a_querys_results_do_not_depend_on_the_other_queries_of_its_batch(data, name):
    """Each query's exclusions set how deep it searches; the deepest of the batch set every query's depth (and an
    IVF-PQ index's refine pool), so a user's re-ranker candidates, and so their list, changed with whoever else was
    in the batch: batch scoring and the API disagreed, and so did one user's list under concurrent traffic."""
    _, _, ids = data
    rng = np.random.default_rng(0)  # unclustered vectors: an approximate search's depth matters
    items, queries = rng.normal(size=(N, DIM)).astype(np.float32), rng.normal(size=(40, DIM)).astype(np.float32)
    index = VectorIndex.build(items, ids, KINDS[name])
    excluded = [list(ids[rng.choice(N, size=int(n), replace=False)]) for n in rng.integers(0, 40, len(queries))]
    excluded[0] = list(ids[rng.choice(N, size=300, replace=False)])  # one long history in the batch
    together = index.search(queries, 60, exclude_per_query=excluded)
    for q in range(1, len(queries)):
        alone = index.search(queries[q:q + 1], 60, exclude_per_query=[excluded[q]])
        np.testing.assert_array_equal(together[1][q], alone[1][0], err_msg=f"query {q}")
        np.testing.assert_array_equal(together[0][q], alone[0][0], err_msg=f"query {q}")
