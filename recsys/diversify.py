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


OFF = DiversifyConfig(weight=0.0, duplicate_threshold=None)
"""Lists in plain ranked order (the default diversifies: `DiversifyConfig`)."""


def active(config: DiversifyConfig) -> bool:
    """True when `config` changes any list (an MMR weight or a near-duplicate threshold)."""
    return config.weight > 0 or config.duplicate_threshold is not None


def diversified_picks(lists: Sequence[Sequence[str]], scores: Sequence[Sequence[float]], unit_vectors: np.ndarray,
                      position: Mapping[str, int], k: int, config: DiversifyConfig,
                      shown: Sequence[str | None] | None = None) -> list[list[int]]:
    """Per list, the indices (into that list) of its first k items after diversification, in order; lists are
    ranked candidates with their scores, `unit_vectors` the catalogue's L2-normalised rows. `shown`: per list, an
    item already on screen (a product page's own item), counted as picked: its near-duplicates go last too. An item
    no longer in `position` (deleted, and compacted away, since it was retrieved) is never picked. A list longer
    than `config.depth` begins with the picks a list of that depth makes (`diversify_picks`' `head`)."""
    width = max((len(items) for items in lists), default=0)
    if width == 0:
        return [[] for _ in lists]
    padded = np.full((len(lists), width), -np.inf)
    rows = np.zeros((len(lists), width), dtype=np.int64)
    present = np.zeros(len(lists), dtype=np.int64)
    for b, (items, values) in enumerate(zip(lists, scores)):
        found = np.fromiter((position.get(item, -1) for item in items), np.int64, len(items))
        padded[b, :len(items)] = np.where(found >= 0, values, -np.inf)  # a gone item is a pad: picked never
        rows[b, :len(items)] = np.maximum(found, 0)
        present[b] = int((found >= 0).sum())
    context = None
    if shown is not None and any(item is not None for item in shown):
        context = np.zeros((len(lists), unit_vectors.shape[1]), dtype=np.float32)
        for b, item in enumerate(shown):
            if item is not None and item in position:
                context[b] = unit_vectors[position[item]]
    picks = diversify_picks(padded, unit_vectors[rows], k, config, context, head=config.depth)
    return [picks[b][:min(k, int(present[b]))].tolist() for b in range(len(lists))]


def diversify_picks(scores: np.ndarray, vectors: np.ndarray, k: int, config: DiversifyConfig,
                    context: np.ndarray | None = None, head: int | None = None) -> np.ndarray:
    """int64 [B, min(k, n)]: the indices of each row's first k diversified picks, in order (pads last).

    `scores` [B, n]: relevance, best first or not (-inf / nan pads short rows: they are never picked before a
    real candidate); `vectors` [B, n, d]: L2-normalised item vectors of those candidates; `context` [B, d]: an
    item already shown per row (zero rows: none), counted as picked before the first pick. `head` (ranked rows,
    best first): when k and n are larger, the first `head` picks are made among the first `head` candidates, as a
    list of `head` picks them, and the rest continue from them over every candidate. A list of 100 then begins
    with the list of 50, as a page asking for 10 and then 100 expects (it was picked afresh from a larger pool)."""
    scores = np.asarray(scores, dtype=np.float64)
    batch, n = scores.shape
    if n == 0 or not active(config):
        return np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=1, kind="stable")[:, :k]
    first = None
    if head is not None and head < min(k, n):
        # a row with a gap (an item gone) among its first `head` and candidates after them: picked as one pool, so
        # that no gap is ever picked before a real candidate
        gapped = (~np.isfinite(scores[:, :head])).any(axis=1) & np.isfinite(scores[:, head:]).any(axis=1)
        if gapped.any():
            out = np.empty((batch, min(k, n)), dtype=np.int64)
            for rows, cut in ((~gapped, head), (gapped, None)):
                if rows.any():
                    out[rows] = diversify_picks(scores[rows], np.asarray(vectors)[rows], k, config,
                                                None if context is None else np.asarray(context)[rows], cut)
            return out
        first = diversify_picks(scores[:, :head], vectors[:, :head], head, config, context)
    real = np.isfinite(scores)
    low = np.where(real, scores, np.inf).min(axis=1, keepdims=True)
    high = np.where(real, scores, -np.inf).max(axis=1, keepdims=True)
    # relevance in [0, 1] weighted; pads far below every real candidate
    base = np.where(real, (1.0 - config.weight) * (scores - low) / np.maximum(high - low, 1e-12), -1e12)
    vectors = np.asarray(vectors, dtype=np.float32)
    similarity = np.matmul(vectors, vectors.transpose(0, 2, 1))  # [B, n, n] cosines
    threshold = config.duplicate_threshold
    closest = np.full((batch, n), -np.inf, dtype=np.float32)  # highest cosine to an item already picked
    if context is not None:
        given = np.any(context != 0, axis=1)
        closest[given] = np.einsum("bnd,bd->bn", vectors[given], np.asarray(context, np.float32)[given])
    value = base.copy()
    picks = np.zeros((batch, min(k, n)), dtype=np.int64)
    rows = np.arange(batch)
    begin = 0
    if first is not None:  # picked already: counted as such
        begin = first.shape[1]
        picks[:, :begin] = first
        for step in range(begin):
            np.maximum(closest, similarity[rows, first[:, step]], out=closest)
    for step in range(begin, picks.shape[1]):
        if step or context is not None:
            penalty = closest if step else np.where(np.isfinite(closest), closest, 0.0)  # rows without context
            value = base - config.weight * penalty if config.weight else base.copy()
            if threshold is not None:
                value[closest >= threshold] -= 1e6  # near-duplicates behind the rest
            value[rows[:, None], picks[:, :step]] = -np.inf
        pick = np.argmax(value, axis=1)
        picks[:, step] = pick
        np.maximum(closest, similarity[rows, pick], out=closest)
    return picks


def diversify_order(scores: np.ndarray, vectors: np.ndarray, k: int, config: DiversifyConfig) -> np.ndarray:
    """The new order of each row's candidates: int64 [B, n], a permutation of 0..n-1 per row whose first k
    entries are the diversified picks (`diversify_picks`), the rest in relevance order."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=1, kind="stable")
    if scores.shape[1] == 0 or not active(config):
        return order
    picks = diversify_picks(scores, vectors, k, config)
    out = np.empty_like(order)
    for b in range(len(order)):
        taken = np.zeros(order.shape[1], dtype=bool)
        taken[picks[b]] = True
        out[b] = np.concatenate([picks[b], order[b][~taken[order[b]]]])
    return out
