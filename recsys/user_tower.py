"""Zero-shot user tower: a recency-weighted pool of the history's item embeddings (NumPy only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from recsys.config import UserTowerConfig


@runtime_checkable
class HistoryEncoder(Protocol):
    """A user tower: histories (item ids, oldest first) → L2-normalised query vectors in item space.

    Implementations that carry weights also define `save(directory)`, called with the bundle's
    `encoder/` directory; a zero row means "nothing known" and triggers the popularity fallback.
    """

    @property
    def dim(self) -> int: ...

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray: ...




class PooledHistoryEncoder:
    """user = normalise(Σ decay^age · item_vector), age 0 = the most recent item.

    Items unknown to the catalogue are skipped; an empty history gives a zero vector.
    """

    def __init__(self, item_ids: Sequence[str], item_vectors: np.ndarray, config: UserTowerConfig) -> None:
        self.config = config
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.position = {item_id: i for i, item_id in enumerate(item_ids)}

    @property
    def dim(self) -> int:
        return self.item_vectors.shape[1]

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """float32 [len(histories), dim], L2-normalised rows (zero rows for empty histories)."""
        out = np.zeros((len(histories), self.dim), dtype=np.float32)
        decay = self.config.recency_decay
        for row, history in enumerate(histories):
            rows = [self.position[i] for i in history[-self.config.max_history:] if i in self.position]
            if not rows:
                continue
            weights = decay ** np.arange(len(rows) - 1, -1, -1, dtype=np.float32)
            vector = weights @ self.item_vectors[rows]
            norm = np.linalg.norm(vector)
            if norm > 0:
                out[row] = vector / norm
        return out
