"""Short reasons for recommended items: the history item each one is closest to, or the query's free text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _recent(position: Mapping[str, int], history: Sequence[str], window: int) -> list[str]:
    """The last `window` history items the catalogue knows, most recent first, each once."""
    return list(dict.fromkeys(i for i in reversed(history[-window:]) if i in position))


def closest_history_items(item_vectors: np.ndarray, position: Mapping[str, int], history: Sequence[str],
                          candidates: Sequence[str], window: int = 20) -> list[str | None]:
    """For each candidate, the most similar of the last `window` history items (itself excluded);
    None when the history has no known item."""
    recent = _recent(position, history, window)
    if not recent or not candidates:
        return [None] * len(candidates)
    known = [c for c in candidates if c in position]
    if not known:
        return [None] * len(candidates)
    recent_rows = np.fromiter((position[h] for h in recent), np.int64, len(recent))
    known_rows = np.fromiter((position[c] for c in known), np.int64, len(known))
    sims = item_vectors[known_rows] @ item_vectors[recent_rows].T
    sims[known_rows[:, None] == recent_rows[None, :]] = -np.inf  # a candidate never explains itself
    best = sims.argmax(axis=1)
    usable = np.isfinite(sims[np.arange(len(known)), best])
    found = {c: (recent[b] if ok else None) for c, b, ok in zip(known, best.tolist(), usable.tolist())}
    return [found.get(c) for c in candidates]


def closer_to_text(item_vectors: np.ndarray, position: Mapping[str, int], text_vector: np.ndarray,
                   history: Sequence[str], candidates: Sequence[str], window: int = 20) -> list[bool]:
    """For each candidate of a query of free text and history items, whether the text's vector (the item tower's,
    before the blend) is closer to it by cosine than every one of the last `window` history items (itself
    excluded): the text, not an item, explains it. False for a candidate the catalogue does not know."""
    recent = _recent(position, history, window)
    known = [c for c in candidates if c in position]
    if not known:
        return [False] * len(candidates)

    def unit(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, np.float32)
        return m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-12)

    known_rows = np.fromiter((position[c] for c in known), np.int64, len(known))
    vectors = unit(item_vectors[known_rows])
    text = vectors @ unit(text_vector)
    items = np.full(len(known), -np.inf, np.float32)
    if recent:
        recent_rows = np.fromiter((position[h] for h in recent), np.int64, len(recent))
        sims = vectors @ unit(item_vectors[recent_rows]).T
        sims[known_rows[:, None] == recent_rows[None, :]] = -np.inf  # a candidate never explains itself
        items = sims.max(axis=1)
    found = dict(zip(known, (text > items).tolist()))
    return [found.get(c, False) for c in candidates]
