"""Exact flat search: one GEMM per batch with masks and per-query exclusions (the known-user latency fix)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

import recsys.retrieval.exact as exact
import recsys.retrieval.index as index_module
from recsys.config import IndexConfig
from recsys.retrieval import VectorIndex


def brute_force(vectors, queries, k, mask=None, exclude_rows=None):
    out = []
    for q, query in enumerate(queries):
        scores = vectors @ query
        eligible = np.ones(len(vectors), bool) if mask is None else mask.copy()
        if exclude_rows is not None:
            eligible[exclude_rows[q]] = False
        rows = np.flatnonzero(eligible)
        order = rows[np.lexsort((rows, -exact.tied(scores[rows])))][:k]  # near-ties by row, as the search
        out.append(order.tolist())
    return out


@pytest.mark.parametrize("block", [1 << 23, 1024])  # one block, and many (the sparse merge path)
def test_exact_top_k_matches_brute_force_with_mask_and_exclusions(monkeypatch, block):
    monkeypatch.setattr(exact, "BLOCK_SCORES", block)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5000, 16)).astype(np.float32)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    mask = rng.random(5000) > 0.3
    excluded = [rng.choice(5000, size=n, replace=False) for n in (0, 3, 50, 1, 0, 200, 7)]
    scores, rows = exact.exact_top_k(vectors, queries, 25, mask=mask, exclude_rows=excluded)
    assert rows.tolist() == brute_force(vectors, queries, 25, mask, excluded)
    expected = np.take_along_axis(queries @ vectors.T, rows, axis=1)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block", [1 << 23, 1024])
def test_a_search_of_k_is_the_first_k_of_any_deeper_search_even_between_near_twins(monkeypatch, block):
    """Pack-size twins (an item's vector scaled by 1 ± 1e-7, or nudged by 1e-7) score within a few float32 bits of
    the item they copy. Lists order such near-ties by catalogue row, and the cut between the k returned and the rest
    must follow that order too (it followed the exact float32 score: a search of 1 could return the later twin
    while a search of 3 put the earlier one first)."""
    monkeypatch.setattr(exact, "BLOCK_SCORES", block)
    rng = np.random.default_rng(3)
    base = rng.standard_normal((60, 8)).astype(np.float32)
    twins = [base[rng.integers(60, size=60)] * (1 + rng.choice([-1e-7, 1e-7, 2e-7], size=(60, 1))),
             base[rng.integers(60, size=60)] + rng.choice([-1e-7, 1e-7], size=(60, 8))]
    vectors = np.concatenate([base, *twins]).astype(np.float32)
    vectors = vectors[rng.permutation(len(vectors))]  # twins before and after the items they copy
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = np.concatenate([vectors[:40], rng.standard_normal((10, 8)).astype(np.float32)])
    mask = rng.random(len(vectors)) > 0.1
    deep_s, deep = exact.exact_top_k(vectors, queries, 40, mask=mask, row_norm=1.0)
    for k in range(1, 40):
        scores, rows = exact.exact_top_k(vectors, queries, k, mask=mask, row_norm=1.0)
        np.testing.assert_array_equal(rows, deep[:, :k], err_msg=f"k={k}")
        np.testing.assert_array_equal(scores, deep_s[:, :k])
    tie, later = exact.tied(deep_s), deep[:, 1:] > deep[:, :-1]
    assert (np.diff(tie, axis=1) <= 0).all() and (later | (tie[:, 1:] < tie[:, :-1])).all()  # ties by row
    assert (tie[:, 1:] == tie[:, :-1]).sum() > 20


def test_exact_top_k_pads_when_fewer_rows_are_eligible():
    vectors = np.eye(4, dtype=np.float32)
    scores, rows = exact.exact_top_k(vectors, vectors[:2], 4, mask=np.array([True, True, False, True]),
                                     exclude_rows=[np.array([1]), np.array([], np.int64)])
    assert rows[0].tolist()[:2] == [0, 3] and rows[0, 2:].tolist() == [-1, -1]
    assert np.isneginf(scores[0, 2:]).all()
    assert rows[1].tolist()[:3] == [1, 0, 3] and rows[1, 3] == -1


def test_flat_index_answers_a_batch_in_one_scan_not_one_per_query(monkeypatch):
    """The root cause of ~470 ms known-user requests at 100k items: faiss's flat search scans the whole
    catalogue once per query for small batches and whenever a selector (any deactivated item) is given; the
    flat index must answer a batch with exclusions through one exact scan and never call faiss's kernel."""
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((3000, 32)).astype(np.float32)
    ids = [f"P{i:05d}" for i in range(3000)]
    index = VectorIndex.build(vectors, ids, IndexConfig())
    index.deactivate(["P00007"])
    calls = []
    original = index_module.exact_top_k

    def counted(*args, **kwargs):
        calls.append(len(args[1]))
        return original(*args, **kwargs)

    def no_faiss(*_args, **_kwargs):
        raise AssertionError("faiss flat search called")

    monkeypatch.setattr(index_module, "exact_top_k", counted)
    monkeypatch.setattr(faiss.IndexFlat, "search", no_faiss)
    queries = rng.standard_normal((16, 32)).astype(np.float32)
    seen = [set(rng.choice(ids, 10).tolist()) for _ in range(16)]
    scores, found = index.search(queries, 50, exclude_per_query=seen)
    assert calls == [16]
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    mask = np.ones(3000, bool)
    mask[7] = False
    expected = brute_force(normed, queries, 50, mask, [[ids.index(i) for i in s] for s in seen])
    assert [[ids.index(i) for i in row] for row in found.tolist()] == expected


def test_exact_top_k_is_batch_invariant_bit_for_bit():
    """The API answers one user at a time and `recsys batch-score` thousands: a query's scores and list must not
    depend on the other queries of its batch (GEMM sums do), near-identical vectors at the cut included."""
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((6000, 48)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[100:140] = vectors[7]  # forty copies of one item: ties across the k-th place
    queries = rng.standard_normal((300, 48)).astype(np.float32)
    queries[:5] = vectors[7] + 1e-3 * rng.standard_normal((5, 48)).astype(np.float32)
    excluded = [rng.choice(6000, size=int(n), replace=False) for n in rng.integers(0, 30, 300)]
    mask = rng.random(6000) > 0.05
    mask[100:140] = True
    whole = exact.exact_top_k(vectors, queries, 20, mask=mask, exclude_rows=excluded, row_norm=1.0)
    for size in (1, 3, 64):
        for start in (0, 2, 150):
            part = exact.exact_top_k(vectors, queries[start:start + size], 20, mask=mask,
                                     exclude_rows=excluded[start:start + size], row_norm=1.0)
            np.testing.assert_array_equal(part[1], whole[1][start:start + size])
            np.testing.assert_array_equal(part[0], whole[0][start:start + size])
    # the copies are tied exactly and come by row: the 40 copies of item 7 fill the top 20 of a query near it
    assert whole[1][0].tolist() == [7] + list(range(100, 119))
