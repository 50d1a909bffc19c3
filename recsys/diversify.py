"""Lists a shop can show: near-duplicate collapsing and MMR diversification of ranked candidate lists.

Maximal marginal relevance (Carbonell & Goldstein, 1998) picks each next item by
`(1 - weight) · relevance - weight · (its highest cosine to the items already picked)`, relevance being the list's
own scores min-max scaled to [0, 1] (so one weight suits retrieval and re-ranker scores alike). Near-duplicates,
items whose cosine to an item already picked reaches `duplicate_threshold` (pack-size variants of one product),
go behind every other candidate. Both work on the catalogue's own item vectors, a batch of lists at a time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recsys.config import DiversifyConfig


def active(config: DiversifyConfig) -> bool:
    """True when `config` changes any list (an MMR weight or a near-duplicate threshold)."""
    return config.weight > 0 or config.duplicate_threshold is not None


def diversified_picks(lists: Sequence[Sequence[str]], scores: Sequence[Sequence[float]], unit_vectors: np.ndarray,
                      position: Mapping[str, int], k: int, config: DiversifyConfig) -> list[list[int]]:
    """Per list, the indices (into that list) of its first k items after diversification, in order; lists are
    ranked candidates with their scores, `unit_vectors` the catalogue's L2-normalised rows."""
    width = max((len(items) for items in lists), default=0)
    if width == 0:
        return [[] for _ in lists]
    padded = np.full((len(lists), width), -np.inf)
    rows = np.zeros((len(lists), width), dtype=np.int64)
    for b, (items, values) in enumerate(zip(lists, scores)):
        padded[b, :len(items)] = values
        rows[b, :len(items)] = [position[i] for i in items]
    order = diversify_order(padded, unit_vectors[rows], k, config)
    return [order[b][:min(k, len(items))].tolist() for b, items in enumerate(lists)]


def diversify_order(scores: np.ndarray, vectors: np.ndarray, k: int, config: DiversifyConfig) -> np.ndarray:
    """The new order of each row's candidates: int64 [B, n], a permutation of 0..n-1 per row whose first k
    entries are the diversified picks (the rest keep their relevance order).

    `scores` [B, n]: relevance, best first or not (-inf / nan pads short rows: they are never picked before a
    real candidate); `vectors` [B, n, d]: L2-normalised item vectors of those candidates."""
    scores = np.asarray(scores, dtype=np.float64)
    batch, n = scores.shape
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=1, kind="stable")
    if n == 0 or (config.weight == 0 and config.duplicate_threshold is None):
        return order
    real = np.isfinite(scores)
    low = np.where(real, scores, np.inf).min(axis=1, keepdims=True)
    high = np.where(real, scores, -np.inf).max(axis=1, keepdims=True)
    relevance = np.where(real, (scores - low) / np.maximum(high - low, 1e-12), 0.0)
    similarity = np.einsum("bid,bjd->bij", vectors, vectors)
    closest = np.full((batch, n), -np.inf)  # highest cosine to an item already picked
    taken = np.zeros((batch, n), dtype=bool)
    picks = np.zeros((batch, min(k, n)), dtype=np.int64)
    rows = np.arange(batch)
    for step in range(picks.shape[1]):
        penalty = np.where(np.isfinite(closest), closest, 0.0)
        value = (1.0 - config.weight) * relevance - config.weight * penalty
        if config.duplicate_threshold is not None:
            value = np.where(closest >= config.duplicate_threshold, value - 1e6, value)  # behind the rest
        value = np.where(taken, -np.inf, np.where(real, value, -1e12))  # pads only after every real candidate
        pick = np.argmax(value, axis=1)
        picks[:, step] = pick
        taken[rows, pick] = True
        closest = np.maximum(closest, similarity[rows, pick])
    rest = [order[b][~taken[b][order[b]]] for b in range(batch)]
    return np.stack([np.concatenate([picks[b], rest[b]]) for b in range(batch)])
