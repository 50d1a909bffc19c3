"""Query-time filters: exclusions, allow-lists and attribute filters never leak and still fill k."""

from __future__ import annotations

import faiss
import numpy as np
import polars as pl
import pytest

from recsys.config import IndexConfig
from recsys.retrieval import SearchParams, VectorIndex, clustered_embeddings
from recsys.retrieval.exact import tied

N, DIM, K = 1500, 24, 20
KINDS = {
    "flat": IndexConfig(),
    "hnsw": IndexConfig(kind="hnsw", hnsw_m=12, ef_construction=40, ef_search=32),
    "ivf_flat": IndexConfig(kind="ivf_flat", nlist=32, nprobe=2),
    "ivf_pq": IndexConfig(kind="ivf_pq", nlist=16, nprobe=2, pq_m=6, pq_nbits=5),
}
CATEGORIES = np.array(["cameras", "lenses", "bags", "bags", "bags"] + ["other"] * 20)  # by row % 25


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.fixture(params=["ann", "exact"])
def path(request) -> SearchParams:
    """Filtered searches walk the ANN structure, or score small eligible sets exactly: test both."""
    return SearchParams(exact_below=0 if request.param == "ann" else 10**9)


@pytest.fixture(scope="module")
def data():
    items, queries = clustered_embeddings(N, DIM, n_queries=16, seed=11)
    ids = np.array([f"sku{i}" for i in range(N)], dtype=object)
    category = CATEGORIES[np.arange(N) % 25]  # cameras and lenses 4% each (60 items), bags 12%, other 80%
    price = (np.arange(N) % 50).astype(np.float64)
    return items, queries, ids, {"category": category, "price": price}


@pytest.fixture(scope="module")
def indexes(data):
    items, _, ids, attributes = data
    faiss.omp_set_num_threads(1)
    return {name: VectorIndex.build(items, ids, config, attributes=attributes) for name, config in KINDS.items()}


def brute_force(items, queries, ids, eligible, k):
    scores = np.where(eligible[None, :], queries @ items.T, -np.inf)
    order = np.argsort(-tied(scores), axis=1, kind="stable")[:, :k]  # near-ties by row, as a search orders them
    return ids[order]


def assert_full(found, width):
    assert found.shape[1] == width and not any(f is None for f in found.ravel())


@pytest.mark.parametrize("name", list(KINDS))
def test_exclude_for_all_queries_never_leaks_and_fills_k(data, indexes, name, path):
    items, queries, ids, _ = data
    banned = set(indexes["flat"].search(queries, 30)[1].ravel())  # every query's true top 30
    _, found = indexes[name].search(queries, K, exclude=banned, params=path)
    assert_full(found, K)
    assert not set(found.ravel()) & banned


@pytest.mark.parametrize("name", list(KINDS))
def test_per_query_exclusions_never_leak_and_fill_k(data, indexes, name, path):
    items, queries, ids, _ = data
    seen = [set(row) for row in indexes["flat"].search(queries, 40)[1]]  # each user "saw" their top 40
    _, found = indexes[name].search(queries, K, exclude_per_query=seen, params=path)
    assert_full(found, K)
    assert all(not set(row) & s for row, s in zip(found, seen))
    if name == "flat":  # and it is the right answer, not just a non-leaking one
        for row, query, s in zip(found, queries, seen):
            eligible = ~np.isin(ids, list(s))
            np.testing.assert_array_equal(row, brute_force(items, query[None], ids, eligible, K)[0])


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize("category", ["cameras", "other"])
def test_category_filter_only_returns_that_category_and_fills_k(data, indexes, name, category, path):
    items, queries, ids, attributes = data
    _, found = indexes[name].search(queries, K, where={"category": category}, params=path)
    assert_full(found, K)
    rows = np.array([indexes[name].position[i] for i in found.ravel()])
    assert set(attributes["category"][rows]) == {category}
    if name == "flat":
        np.testing.assert_array_equal(found, brute_force(items, queries, ids, attributes["category"] == category, K))


def test_selective_filter_with_tiny_nprobe_is_refilled_through_the_ann_path(data, indexes, monkeypatch):
    items, queries, ids, attributes = data  # 8% of items; nprobe=1 of 32 lists seldom holds 20 of them
    rounds = []
    collect = VectorIndex._collect
    monkeypatch.setattr(VectorIndex, "_collect", staticmethod(lambda *a: rounds.append(len(a[0])) or collect(*a)))
    monkeypatch.setattr(VectorIndex, "_exact", lambda *a: pytest.fail("the ANN refill should have sufficed"))
    _, found = indexes["ivf_flat"].search(queries, K, where={"category": ["cameras", "lenses"]},
                                          params=SearchParams(nprobe=1, exact_below=0))
    assert_full(found, K)
    rows = np.array([indexes["ivf_flat"].position[i] for i in found.ravel()])
    assert set(attributes["category"][rows]) <= {"cameras", "lenses"}
    assert len(rounds) >= 2 and rounds[0] == len(queries) and rounds[1] > 0  # some rows were short, then refilled


def test_filters_combine_and_accept_polars_expressions(data, indexes):
    items, queries, ids, attributes = data
    index = indexes["hnsw"]
    seen = [{"sku0", "sku1"}] * len(queries)
    _, found = index.search(queries, K, where=(pl.col("price") < 10) & (pl.col("category") != "other"),
                            exclude=["sku2"], exclude_per_query=seen)
    rows = np.array([index.position[i] for i in found.ravel() if i is not None])
    eligible = (attributes["price"] < 10) & (attributes["category"] != "other")
    eligible[[0, 1, 2]] = False
    assert eligible[rows].all() and found.shape == (16, K)
    assert (found != None).sum(axis=1).tolist() == [min(K, int(eligible.sum()))] * 16  # noqa: E711


def test_fewer_eligible_than_k_returns_all_of_them_then_none(data, indexes):
    items, queries, ids, _ = data
    allowed = ["sku1", "sku2", "sku3"]
    scores, found = indexes["ivf_pq"].search(queries[:2], 5, allow=allowed)
    assert found.shape == (2, 5) and all(set(row[:3]) == set(allowed) for row in found)
    assert (found[:, 3:] == None).all() and np.isneginf(scores[:, 3:]).all()  # noqa: E711
    mask = np.zeros(N, bool)
    mask[[10, 11]] = True
    assert set(indexes["flat"].search(queries[:1], 5, allow=mask)[1][0][:2]) == {"sku10", "sku11"}


def test_filters_respect_tombstones_and_new_items(data):
    items, queries, ids, attributes = data
    index = VectorIndex.build(items, ids, KINDS["ivf_flat"], attributes=attributes)
    cameras = ids[attributes["category"] == "cameras"]
    index.remove(cameras[:5])
    index.deactivate(cameras[5:10])
    index.add(queries[:2], ["new-cam", "new-untagged"], attributes={"category": ["cameras", None]})
    _, found = index.search(queries, K, where={"category": "cameras"})
    returned = set(found.ravel())
    assert "new-cam" in returned and "new-untagged" not in returned and None not in returned
    assert not returned & set(cameras[:10])
    assert index.attributes.height == N + 2 and index.attributes["price"][-1] is None


def test_filter_errors_are_clear(data, indexes):
    items, queries, ids, _ = data
    with pytest.raises(ValueError, match="unknown attribute"):
        indexes["flat"].search(queries, 5, where={"colour": "red"})
    with pytest.raises(ValueError, match="no item attributes"):
        VectorIndex.build(items[:50], ids[:50]).search(queries, 5, where={"category": "cameras"})
    with pytest.raises(ValueError, match="exclude_per_query"):
        indexes["flat"].search(queries, 5, exclude_per_query=[{"sku1"}])


@pytest.mark.parametrize("n_rows", [7, 5000])  # the broadcast branch and np.isin's
def test_row_membership_matches_numpy_isin(n_rows):
    from recsys.retrieval.index import _member

    rng = np.random.default_rng(n_rows)
    values, rows = rng.integers(0, 300, 60), rng.integers(0, 300, n_rows)
    np.testing.assert_array_equal(_member(values, rows), np.isin(values, rows))
    assert not _member(values, np.zeros(0, np.int64)).any()
