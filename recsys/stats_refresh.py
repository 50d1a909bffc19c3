"""Refreshing a re-ranker's statistics with later events: the same ranker and feature settings, the
popularity / transition / co-occurrence counts refit on the interactions through a later step.

The re-ranker learns on the valid step with statistics of the train split (so its features never count the
answers). A shop serving it afterwards knows more: every user's valid-step event before the test step, and
every event after it. Refreshing counts them; `StatsConfig.through` records how far, and a split whose targets
are counted is refused for evaluation (`StatsConfig.check_unseen`)."""

from __future__ import annotations

from recsys.features import FeatureBuilder
from recsys.ranker import Reranker
from recsys.splits import SplitData, events_through
from recsys.stats import InteractionStats


def refreshed(reranker: Reranker, split: SplitData, through: str, progress: bool = False) -> Reranker:
    """`reranker` with its statistics refit on the events through `through` ("train", "valid" or "test"), with
    its own statistics settings (time mode, windows) otherwise."""
    config = reranker.stats.config.model_copy(update={"through": through})
    stats = InteractionStats.fit(events_through(split, through), config, progress)
    builder = FeatureBuilder(reranker.builder.catalogue, stats, reranker.config.features)
    return Reranker(reranker.ranker, builder, reranker.config)


__all__ = ["refreshed"]
