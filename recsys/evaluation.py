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
    """Recall / NDCG / MRR at each k of `config.ks`, plus the number of examples (on a seeded sample of
    `config.max_examples` when there are more: `sampled_from` then says out of how many)."""
    picked = sample_examples(examples, config.max_examples, config.seed)
    ranks = example_ranks(source, picked, config, **kwargs)
    sampled = {"sampled_from": float(examples.height)} if picked.height < examples.height else {}
    return {"n_examples": float(len(ranks)), **sampled, **summarize(ranks, tuple(config.ks))}


def sample_examples(examples: pl.DataFrame, max_examples: int | None, seed: int = 0) -> pl.DataFrame:
    """A seeded sample of `max_examples` rows in their original order (all of them when there are fewer)."""
    if max_examples is None or examples.height <= max_examples:
        return examples
    rows = np.sort(np.random.default_rng(seed).choice(examples.height, max_examples, replace=False))
    return examples[rows]
