"""Exact inner-product top-k over a float32 matrix: one GEMM per block of catalogue rows for the whole batch of
queries, with the eligibility mask and each query's own exclusions applied to the scores before the top-k.

Why not faiss's flat search: faiss 1.15 scans the catalogue once *per query* (its sequential kernel) unless the
batch is large (`nq · d` above ~128k, i.e. ~250 queries at 512-d), and always when a selector is given (a
deactivated item, a filter). At 100k × 512 fp32 (205 MB) one scan costs ~25 ms, so a served batch of 16
known users cost 16 scans (~400 ms) and one out-of-stock item made every search take that path. Here a batch
reads the catalogue once, the mask costs one `where` per block, and per-query exclusions need no over-fetching
or refill rounds.

Batch invariance: a GEMM's float32 sums depend on the batch (its kernel, blocking and the other queries), so
the GEMM only proposes `k + POOL_EXTRA` candidates; their scores are then recomputed one (query, item) dot
product at a time by a kernel whose result does not depend on the batch (`_dot`), and the k best of those
are returned. The API (one user at a time) and `recsys batch-score` (thousands) therefore get bit-identical
scores and lists. A query whose pool could miss an item within the GEMM's rounding error of its k-th
score (many near-identical vectors at the cut) is rescored over every eligible row with the same kernel.

Near-ties: scores equal to `TIE_DECIMALS` decimals are ordered by catalogue row, as every list the project serves
is (`Recommender._search_lists`, `neighbours.ordered`), and the cut between the k returned and the rest follows
that same order. A search of k items therefore returns the first k of any deeper search, even where two items'
scores differ only in their last bits (an item and its pack-size twin).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLOCK_SCORES = 1 << 23
"""Scores held at once per block (queries × catalogue rows): 32 MB of float32."""
POOL_EXTRA = 16
"""GEMM candidates beyond k per query, rescored by the batch-invariant kernel."""
RESCORE_FLOATS = 1 << 22
"""Gathered candidate vectors held at once while rescoring (16 MB of float32)."""
ROUNDING = 2.0 ** -24
"""float32 unit roundoff: a d-term dot product is off by at most d · ROUNDING · |q| · |v| (either kernel)."""
TIE_DECIMALS = 5
"""Scores equal to this many decimals are tied: ordered, and cut, by catalogue row."""


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int, *, mask: np.ndarray | None = None,
                exclude_rows: Sequence[np.ndarray] | None = None,
                row_norm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores float32 [nq, k], rows int64 [nq, k]) of the k best rows of `vectors` [n, d] by inner product
    with each query, best first (scores equal to `TIE_DECIMALS` decimals: lower row first); `mask` (bool [n])
    keeps only its True rows, `exclude_rows[q]` removes rows for query q. Slots beyond the eligible rows hold row
    -1, score -inf. Each query's result is independent of the other queries in the batch (see the module
    docstring); `row_norm`: an upper bound on the rows' L2 norms (1 for normalised vectors; None: measured)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    nq, n = len(queries), len(vectors)
    k = int(min(k, n))
    if nq == 0 or k == 0:
        return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
    pool = min(n, k + POOL_EXTRA)
    gemm_s, pool_r = _gemm_top_k(vectors, queries, pool, mask, exclude_rows)
    best_s, best_r = _best(_rescore(vectors, queries, pool_r), pool_r, k, n)
    if pool == n:
        return best_s, best_r
    # a row outside the pool scores at most the pool's lowest GEMM score + the GEMM error: when that can
    # reach the k-th score's tie (its rounded value), the pool may be missing an item (near-identical vectors)
    if row_norm is None:
        row_norm = float(np.sqrt(np.einsum("ij,ij->i", vectors, vectors).max()))
    error = ROUNDING * vectors.shape[1] * np.sqrt(np.einsum("ij,ij->i", queries, queries)) * row_norm
    lowest = gemm_s.min(axis=1)  # -inf when the pool holds every eligible row
    full = np.isfinite(lowest) & (lowest + 2 * error >= _tie_floor(best_s[:, -1]))
    for q in np.flatnonzero(full):
        eligible = np.ones(n, bool) if mask is None else mask.copy()
        if exclude_rows is not None:
            eligible[np.asarray(exclude_rows[q], np.int64)] = False
        rows = np.flatnonzero(eligible)[None, :]
        best_s[q], best_r[q] = (a[0] for a in _best(_rescore(vectors, queries[q:q + 1], rows), rows, k, n))
    return best_s, best_r


def _dot(candidates: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """[nq, m] inner products of `candidates` [nq, m, d] with `queries` [nq, d]: one dot product per pair by
    einsum's own loop (no BLAS), so a pair's float32 result does not depend on the rest of the batch."""
    return np.einsum("qmd,qd->qm", candidates, queries)


def _rescore(vectors: np.ndarray, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Batch-invariant scores of `rows` [nq, m] (-1: none, scored -inf) for each query."""
    nq, m = rows.shape
    out = np.full((nq, m), -np.inf, np.float32)
    width = max(1, min(m, RESCORE_FLOATS // vectors.shape[1]))
    step = max(1, RESCORE_FLOATS // (width * vectors.shape[1]))
    for start in range(0, nq, step):
        for column in range(0, m, width):
            part = rows[start:start + step, column:column + width]
            out[start:start + step, column:column + width] = _dot(vectors[np.maximum(part, 0)],
                                                                   queries[start:start + step])
    out[rows < 0] = -np.inf
    return out


def tied(scores: np.ndarray) -> np.ndarray:
    """float64 `scores` rounded to `TIE_DECIMALS` decimals: equal values are tied, and a list orders them by
    catalogue row (here, in `Recommender._search_lists` and in `neighbours.ordered`)."""
    return np.round(scores.astype(np.float64), TIE_DECIMALS)


def _tie_floor(scores: np.ndarray) -> np.ndarray:
    """The lowest score that can round to the same tie as each of `scores` (a little below, to be safe)."""
    return tied(scores) - 0.6 * 10.0 ** -TIE_DECIMALS


def _best(scores: np.ndarray, rows: np.ndarray, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score, row) per query, best first, ties (`tied`) by lower row; missing slots row -1, score
    -inf."""
    order = np.lexsort((np.where(rows < 0, n, rows), -tied(scores)), axis=-1)[:, :k]
    best_s = np.take_along_axis(scores, order, axis=1)
    best_r = np.take_along_axis(rows, order, axis=1)
    best_r[~np.isfinite(best_s)] = -1
    best_s[best_r < 0] = -np.inf
    return best_s, best_r


def _gemm_top_k(vectors: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None,
                exclude_rows: Sequence[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """(GEMM scores, rows) of the k best eligible rows per query, in no order (the candidate pool); slots
    without an eligible row hold row -1, score -inf."""
    nq, n = len(queries), len(vectors)
    owners, excluded = _flat_exclusions(exclude_rows, nq)
    if n <= max(1024, BLOCK_SCORES // nq):  # one block (most served batches): one partition, no merging
        scores = queries @ vectors.T
        if mask is not None:
            scores[:, ~mask] = -np.inf
        scores[owners, excluded] = -np.inf
        rows = np.argpartition(scores, n - k, axis=1)[:, n - k:] if k < n else np.broadcast_to(np.arange(n), (nq, n))
        best_s = np.take_along_axis(scores, rows, axis=1)
        return best_s, np.where(np.isfinite(best_s), rows, -1)
    best_s = np.full((nq, k), -np.inf, np.float32)
    best_r = np.full((nq, k), -1, np.int64)
    block = max(1024, BLOCK_SCORES // nq)
    for start in range(0, n, block):
        stop = min(n, start + block)
        scores = queries @ vectors[start:stop].T  # [nq, block]: one sgemm
        if mask is not None:
            scores[:, ~mask[start:stop]] = -np.inf
        if len(excluded):
            inside = (excluded >= start) & (excluded < stop)
            scores[owners[inside], excluded[inside] - start] = -np.inf
        best_s, best_r = _merge(best_s, best_r, scores, start, k)
    return best_s, np.where(np.isfinite(best_s), best_r, -1)


def _flat_exclusions(exclude_rows: Sequence[np.ndarray] | None, nq: int) -> tuple[np.ndarray, np.ndarray]:
    """(query of each excluded row, the row), flattened."""
    if exclude_rows is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(exclude_rows) != nq:
        raise ValueError(f"{len(exclude_rows)} exclusion lists for {nq} queries")
    lengths = np.fromiter(map(len, exclude_rows), np.int64, nq)
    rows = np.concatenate([np.asarray(r, np.int64) for r in exclude_rows]) if lengths.sum() else np.zeros(0, np.int64)
    return np.repeat(np.arange(nq), lengths), rows


def _merge(best_s: np.ndarray, best_r: np.ndarray, scores: np.ndarray, offset: int,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """The running top-k merged with one block's scores (unordered within the k). Only scores above a
    query's current k-th best can enter, so after the first block most of a block is skipped with one
    comparison (a sparse merge) instead of a partition of every score."""
    nq, width = scores.shape
    kth = best_s.min(axis=1)
    if np.isfinite(kth).all():
        owner, column = np.nonzero(scores > kth[:, None])
        counts = np.bincount(owner, minlength=nq)
        extra = int(counts.max(initial=0))
        if extra == 0:
            return best_s, best_r
        if extra <= width // 4:
            slot = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
            block_s = np.full((nq, extra), -np.inf, np.float32)
            block_r = np.full((nq, extra), -1, np.int64)
            block_s[owner, slot] = scores[owner, column]
            block_r[owner, slot] = column + offset
            return _keep(np.concatenate([best_s, block_s], axis=1), np.concatenate([best_r, block_r], axis=1), k)
    if width > k:
        part = np.argpartition(scores, width - k, axis=1)[:, width - k:]
        block_s = np.take_along_axis(scores, part, axis=1)
    else:
        part = np.broadcast_to(np.arange(width), scores.shape)
        block_s = scores
    return _keep(np.concatenate([best_s, block_s], axis=1), np.concatenate([best_r, part + offset], axis=1), k)


def _keep(pool_s: np.ndarray, pool_r: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    keep = np.argpartition(pool_s, pool_s.shape[1] - k, axis=1)[:, pool_s.shape[1] - k:]
    return np.take_along_axis(pool_s, keep, axis=1), np.take_along_axis(pool_r, keep, axis=1)


__all__ = ["TIE_DECIMALS", "exact_top_k", "tied"]
