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
    sims = item_vectors[[position[c] for c in known]] @ item_vectors[[position[h] for h in recent]].T
    for row, candidate in enumerate(known):
        if candidate in recent:
            sims[row, recent.index(candidate)] = -np.inf
    best = {c: (recent[int(np.argmax(row))] if np.isfinite(row).any() else None) for c, row in zip(known, sims)}
    return [best.get(c) for c in candidates]
