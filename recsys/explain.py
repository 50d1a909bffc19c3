"""Short reasons for recommended items: the history item each one is closest to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def closest_history_items(item_vectors: np.ndarray, position: Mapping[str, int], history: Sequence[str],
                          candidates: Sequence[str], window: int = 20) -> list[str | None]:
    """For each candidate, the most similar of the last `window` history items (itself excluded);
    None when the history has no known item."""
    recent = list(dict.fromkeys(i for i in reversed(history[-window:]) if i in position))
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
