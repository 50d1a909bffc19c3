"""Which FAISS index a bundle gets (`--index auto`), and how well an approximate one recalls the exact top-k.

Measured on this project's 2-core machine (one thread, batches of 16 queries with k=200 and 10 excluded items
each, as served for known users with the re-ranker; 512-d clustered vectors, `recsys.retrieval.synthetic`):
the exact flat scan (`exact.exact_top_k`) costs ~10 ms per batch at 10k items and grows linearly (~110 ms at
100k), while IVF-PQ (one sub-quantizer per 8 dims) with an fp16 refine stays at ~25-40 ms per batch from 30k to
100k items with recall@100 0.94-0.98 against exact (nprobe 32-64, refine factor 4-8; benchmarks/results/ann.md
has the same picture at 1M). Below `AUTO_EXACT_BELOW` items exact search costs little and is exact; above it
IVF-PQ + refine. The recall a built index reaches on the bundle's own user queries is written into the
bundle's manifest (`index_summary`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recsys.config import IndexConfig

AUTO_EXACT_BELOW = 50_000
"""`kind="auto"`: catalogues with fewer items get the exact flat index."""
AUTO_ANN = {"kind": "ivf_pq", "refine": "fp16", "nprobe": 48, "refine_factor": 8}
"""`kind="auto"` at or above the threshold (nlist ≈ 4·√n, pq_m = dim / 8)."""
RECALL_QUERIES = 1000
RECALL_KS = (10, 100)


def resolve_index(config: IndexConfig, n_items: int) -> IndexConfig:
    """`config` with kind "auto" replaced by the choice for `n_items` (other kinds unchanged)."""
    if config.kind != "auto":
        return config
    if n_items < AUTO_EXACT_BELOW:
        return config.model_copy(update={"kind": "flat"})
    return config.model_copy(update=AUTO_ANN)


def recall_at(index, exact_vectors: np.ndarray, queries: np.ndarray, ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """Mean recall@k of `index.search` against the exact top-k over `exact_vectors` (rows aligned with the
    index's ids, L2-normalised like the index's), for each k."""
    from recsys.retrieval.exact import exact_top_k

    depth = max(ks)
    _, truth = exact_top_k(exact_vectors, queries, depth)
    _, found = index.search(queries, depth)
    position = index.position
    got = np.array([[position.get(i, -1) if i is not None else -1 for i in row] for row in found.tolist()])
    out = {}
    for k in ks:
        hits = [len(set(g[:k].tolist()) & set(t[:k].tolist())) / k for g, t in zip(got, truth)]
        out[f"recall@{k}"] = round(float(np.mean(hits)), 4) if hits else float("nan")
    return out


def index_summary(recommender: Any, requested: str, seed: int = 0, n_queries: int = RECALL_QUERIES) -> dict:
    """What the manifest records about the index: the kind asked for and the kind built (with its FAISS
    description), and for approximate kinds the recall@10/100 against exact search on the query vectors of
    up to `n_queries` seeded known users (their stored histories through the bundle's user tower)."""
    from recsys.retrieval.factory import choose_nlist, factory_string
    from recsys.retrieval.index import prepare_vectors

    index = recommender.index
    config = index.config
    n, dim = len(index), index.dim
    nlist = choose_nlist(n, config) if config.kind.startswith("ivf") else 0
    summary = {"requested": requested, "kind": config.kind, "faiss": factory_string(config, dim, nlist),
               "items": n, "exact_below": AUTO_EXACT_BELOW if requested == "auto" else None}
    if config.kind == "flat":
        return {**summary, "exact": True}
    users = list(recommender.histories)
    rng = np.random.default_rng(seed)
    picked = [users[i] for i in np.sort(rng.choice(len(users), min(n_queries, len(users)), replace=False))]
    queries = recommender.user_tower.encode_histories([recommender.histories[u] for u in picked])
    queries = queries[np.abs(queries).sum(axis=1) > 0]
    vectors = prepare_vectors(recommender.item_vectors, n, config.normalize)
    return {**summary, "exact": False, "queries": int(len(queries)), "nprobe": config.nprobe,
            "refine_factor": config.refine_factor if config.refine != "none" else None,
            **recall_at(index, vectors, queries)}


__all__ = ["AUTO_EXACT_BELOW", "AUTO_ANN", "resolve_index", "recall_at", "index_summary"]
