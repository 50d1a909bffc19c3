"""Full-ranking evaluation over the whole catalogue on held-out next-item examples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from recsys.config import EvalConfig
from recsys.metrics import catalogue_coverage, intra_list_diversity, summarize, target_ranks
from recsys.progress import pass_bar


class CandidateSource(Protocol):
    """Anything that ranks the catalogue for a batch of histories (Recommender, Popularity, …). `as_of`: each
    history's time (its example's timestamp), for sources whose features are point-in-time (the re-ranker's
    statistics); the others ignore it."""

    def recommend_histories(self, histories: Sequence[Sequence[str]], k: int, exclude_seen: bool = False,
                            as_of: Sequence[int] | None = None) -> list[list[str]]: ...


@dataclass(frozen=True)
class ListReference:
    """What beyond-accuracy metrics measure lists against: the catalogue's ids and one fixed L2-normalised vector
    per item (e.g. the frozen BERT's text vectors, so every model's lists are measured alike)."""

    item_ids: Sequence[str]
    vectors: np.ndarray
    k: int = 10

    def positions(self, lists: list[list[str]]) -> list[np.ndarray]:
        index = {item_id: row for row, item_id in enumerate(self.item_ids)}
        return [np.array([index[i] for i in items if i in index], dtype=np.int64) for items in lists]


def example_lists(source: CandidateSource, examples: pl.DataFrame, config: EvalConfig, batch_size: int = 1024,
                  progress: bool = False, desc: str = "evaluating", transient: bool = False) -> list[list[str]]:
    """Each example's top max(ks) list, each at its example's time. With `mask_history`, every item of the
    history is removed from the ranking, so a target the user had already consumed counts as a miss; the default
    (False) is the published protocol. `transient`: the bar shows only when the pass takes over
    `SLOW_PASS_SECONDS` and clears when it ends (passes repeated inside a longer job, such as each epoch's
    validation)."""
    depth = max(config.ks)
    histories, times = examples["history"].to_list(), examples["timestamp"].to_list()
    lists: list[list[str]] = []
    bar = pass_bar(len(histories), desc, "ex", progress) if transient else \
        tqdm(total=len(histories), desc=desc, unit="ex", disable=not progress)
    with bar:
        for start in range(0, len(histories), batch_size):
            batch = histories[start:start + batch_size]
            lists += source.recommend_histories(batch, depth, exclude_seen=config.mask_history,
                                                as_of=times[start:start + batch_size])
            bar.update(len(batch))
    return lists


def list_metrics(lists: list[list[str]], reference: ListReference) -> dict[str, float]:
    """Intra-list diversity and catalogue coverage of the lists' first `reference.k` items."""
    positions = reference.positions(lists)
    k = reference.k
    return {f"ild@{k}": intra_list_diversity(positions, reference.vectors, k),
            f"coverage@{k}": catalogue_coverage(positions, len(reference.item_ids), k)}


def list_scores(lists: list[list[str]], targets: Sequence[str], ks: Sequence[int] = (10,),
                reference: ListReference | None = None) -> dict[str, float]:
    """Full-ranking metrics of shown lists against their targets (plus the number of examples); with `reference`,
    intra-list diversity and catalogue coverage too."""
    beyond = list_metrics(lists, reference) if reference is not None else {}
    return {"n_examples": float(len(targets)), **summarize(target_ranks(lists, targets), tuple(ks)), **beyond}


def evaluate(source: CandidateSource, examples: pl.DataFrame, config: EvalConfig,
             reference: ListReference | None = None, **kwargs) -> dict[str, float]:
    """Recall / NDCG / MRR at each k of `config.ks`, plus the number of examples (on a seeded sample of
    `config.max_examples` when there are more: `sampled_from` then says out of how many); with `reference`,
    also the lists' intra-list diversity and catalogue coverage (`list_metrics`)."""
    picked = sample_examples(examples, config.max_examples, config.seed)
    lists = example_lists(source, picked, config, **kwargs)
    scores = list_scores(lists, picked["target"].to_list(), config.ks, reference)
    sampled = {"sampled_from": float(examples.height)} if picked.height < examples.height else {}
    return {"n_examples": scores.pop("n_examples"), **sampled, **scores}


def sample_examples(examples: pl.DataFrame, max_examples: int | None, seed: int = 0) -> pl.DataFrame:
    """A seeded sample of `max_examples` rows in their original order (all of them when there are fewer)."""
    if max_examples is None or examples.height <= max_examples:
        return examples
    rows = np.sort(np.random.default_rng(seed).choice(examples.height, max_examples, replace=False))
    return examples[rows]
