"""Full-ranking evaluation over the whole catalogue on held-out next-item examples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from recsys.config import EvalConfig
from recsys.metrics import summarize, target_ranks


class CandidateSource(Protocol):
    """Anything that ranks the catalogue for a batch of histories (Recommender, Popularity, …)."""

    def recommend_histories(self, histories: Sequence[Sequence[str]], k: int,
                            exclude_seen: bool = False) -> list[list[str]]: ...


def example_ranks(source: CandidateSource, examples: pl.DataFrame, config: EvalConfig,
                  batch_size: int = 1024, progress: bool = False, desc: str = "evaluating") -> np.ndarray:
    """0-based rank of each example's target among all catalogue items (MISS beyond max(ks)).

    With `mask_history`, every item of the history is removed from the ranking, so a target the
    user had already consumed counts as a miss; the default (False) is the published protocol.
    """
    depth = max(config.ks)
    histories = examples["history"].to_list()
    targets = examples["target"].to_list()
    ranks = []
    with tqdm(total=len(targets), desc=desc, unit="ex", disable=not progress) as bar:
        for start in range(0, len(targets), batch_size):
            batch = histories[start:start + batch_size]
            lists = source.recommend_histories(batch, depth, exclude_seen=config.mask_history)
            ranks.append(target_ranks(lists, targets[start:start + batch_size]))
            bar.update(len(batch))
    return np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)


def evaluate(source: CandidateSource, examples: pl.DataFrame, config: EvalConfig, **kwargs) -> dict[str, float]:
    """Recall / NDCG / MRR at each k of `config.ks`, plus the number of examples."""
    ranks = example_ranks(source, examples, config, **kwargs)
    return {"n_examples": float(len(ranks)), **summarize(ranks, tuple(config.ks))}
