"""Full-ranking metrics as pure functions of the target's 0-based rank (-1 = not in the list)."""

from __future__ import annotations

import numpy as np

MISS = -1


def _hits(ranks: np.ndarray, k: int) -> np.ndarray:
    ranks = np.asarray(ranks)
    return (ranks >= 0) & (ranks < k)


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of examples whose single held-out item is in the top k (= hit rate)."""
    return float(_hits(ranks, k).mean()) if len(ranks) else 0.0


def ndcg_gains(ranks: np.ndarray, k: int) -> np.ndarray:
    """Each example's NDCG@k: 1/log2(rank+2) when its target is in the top k, else 0 (one relevant item)."""
    ranks = np.asarray(ranks)
    return np.where(_hits(ranks, k), 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)


def paired_difference(new: np.ndarray, old: np.ndarray) -> tuple[float, float]:
    """(mean, standard error) of the per-example differences new − old (s.e. 0 with fewer than two examples)."""
    diff = np.asarray(new, float) - np.asarray(old, float)
    return float(diff.mean()), standard_error(diff)


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean 1/log2(rank+2) over examples whose target is in the top k (one relevant item, IDCG = 1)."""
    return float(ndcg_gains(ranks, k).mean()) if len(ranks) else 0.0


def mrr_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean reciprocal rank, counting 0 beyond k."""
    ranks = np.asarray(ranks)
    if not len(ranks):
        return 0.0
    return float(np.where(_hits(ranks, k), 1.0 / (np.maximum(ranks, 0) + 1.0), 0.0).mean())


def target_ranks(recommended: list[list[str]] | np.ndarray, targets: list[str]) -> np.ndarray:
    """0-based position of each target in its recommendation list, MISS when absent."""
    ranks = np.full(len(targets), MISS, dtype=np.int64)
    for row, (items, target) in enumerate(zip(recommended, targets)):
        for position, item in enumerate(items):
            if item == target:
                ranks[row] = position
                break
    return ranks


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of per-example values (0 with fewer than two): how far a mean over this many
    users moves between samples of them."""
    values = np.asarray(values, float)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def summarize(ranks: np.ndarray, ks: tuple[int, ...] = (10, 20, 50)) -> dict[str, float]:
    """{"recall@10": …, "ndcg@10": …, "mrr@10": …, "ndcg@10_se": …, …} for each k; `ndcg@k_se` is the
    standard error of NDCG@k over the examples (small slices: read differences against it)."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranks, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
        out[f"mrr@{k}"] = mrr_at_k(ranks, k)
        out[f"ndcg@{k}_se"] = standard_error(ndcg_gains(ranks, k))
    return out


def intra_list_diversity(lists: list[np.ndarray], vectors: np.ndarray, k: int) -> float:
    """Mean over lists of the mean pairwise cosine distance (1 - cos) among each list's first k items; lists hold
    row positions into `vectors` (L2-normalised rows). Lists with fewer than two items are skipped."""
    values = []
    for positions in lists:
        top = np.asarray(positions[:k], dtype=np.int64)
        if len(top) < 2:
            continue
        block = vectors[top]
        cosines = block @ block.T
        pairs = len(top) * (len(top) - 1)
        values.append(1.0 - (cosines.sum() - np.trace(cosines)) / pairs)
    return float(np.mean(values)) if values else 0.0


def catalogue_coverage(lists: list[np.ndarray], n_items: int, k: int) -> float:
    """Share of the catalogue's `n_items` that appear in at least one list's first k items."""
    shown = {int(p) for positions in lists for p in positions[:k]}
    return len(shown) / n_items if n_items else 0.0
