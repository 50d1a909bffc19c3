"""Item popularity from training interactions: a baseline and the cold-user fallback."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np
import polars as pl


class Popularity:
    """Interaction counts per catalogue item; ties broken by catalogue order."""

    def __init__(self, item_ids: Sequence[str], counts: np.ndarray) -> None:
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.order = np.argsort(-self.counts, kind="stable")
        self.position = {item_id: i for i, item_id in enumerate(self.item_ids.tolist())}
        self.top_count = max(int(self.counts.max(initial=0)), 1)

    @classmethod
    def fit(cls, interactions: pl.DataFrame, item_ids: Sequence[str]) -> "Popularity":
        counts = interactions.group_by("item_id").len()
        lookup = dict(zip(counts["item_id"].to_list(), counts["len"].to_list()))
        return cls(item_ids, np.array([lookup.get(i, 0) for i in item_ids], dtype=np.int64))

    def top(self, k: int, exclude: Collection[str] = (),
            eligible: Callable[[str], bool] | None = None) -> tuple[list[str], list[float]]:
        """The k most popular items not in `exclude` (and passing `eligible`); scores are each count as a share
        of the most popular item's (1.0 for it; `counts_of` gives the counts)."""
        items: list[str] = []
        scores: list[float] = []
        for position in self.order:
            item_id = self.item_ids[position]
            if item_id in exclude or (eligible is not None and not eligible(item_id)):
                continue
            items.append(item_id)
            scores.append(float(self.counts[position]) / self.top_count)
            if len(items) == k:
                break
        return items, scores

    def counts_of(self, item_ids: Sequence[str]) -> list[int]:
        """Training interaction counts of `item_ids` (0 for items added since)."""
        return [int(self.counts[self.position[i]]) if i in self.position else 0 for i in item_ids]

    def recommend_histories(self, histories: Sequence[Sequence[str]], k: int, exclude_seen: bool = False,
                            as_of: Sequence[int] | None = None) -> list[list[str]]:
        """The same popular list for everybody (minus their history when asked; the counts are the train
        split's, whatever `as_of`)."""
        if not exclude_seen:
            shared = self.top(k)[0]
            return [shared for _ in histories]
        return [self.top(k, set(h))[0] for h in histories]

    def save(self, path: str | Path) -> None:
        pl.DataFrame({"item_id": self.item_ids.astype(str), "count": self.counts}).write_parquet(path)

    @classmethod
    def load(cls, path: str | Path) -> "Popularity":
        frame = pl.read_parquet(path)
        return cls(frame["item_id"].to_list(), frame["count"].to_numpy())
