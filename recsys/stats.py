"""Interaction statistics for the re-ranker, point-in-time: item popularity and item-to-item transition /
co-occurrence counts, each stored as cumulative event counts so a feature can ask "how many events
strictly before time t" (no leakage), saved as Parquet under the bundle's `stats/`.

Two time modes:
- `absolute`: timestamps are real times; a query at time t sees only events with timestamp < t.
- `sequence`: timestamps are positions in each user's sequence (RecBole/UniSRec files have no times),
  so there is no global clock. Event times become "steps before the user's last training event"
  (-1 = the last one) and every query is at time 0: it sees all training events, which is leak-free
  because the statistics are fit on the train split only (no valid/test item is ever in them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from recsys.config import FrozenModel
from recsys.splits import ordered_interactions

NOW = np.iinfo(np.int64).max // 4
"""Query time meaning "after every event" (serving without a timestamp), far from overflow."""


class StatsConfig(FrozenModel):
    """How the statistics are computed; saved with them."""

    time_mode: Literal["absolute", "sequence"] = "absolute"
    recent_window: int = Field(30 * 86_400, ge=1, description="time units (sequence mode: steps) of 'recent'")
    pair_window: int = Field(3, ge=1, description="co-occurrence: items at most this many steps apart")


def is_sequence_time(interactions: pl.DataFrame) -> bool:
    """True when every user's timestamps are exactly 0..n-1 (sequence positions, not times)."""
    check = interactions.group_by("user_id").agg(
        (pl.col("timestamp").sort() == pl.int_range(pl.len())).all().alias("ok"))
    return bool(check["ok"].all())


def default_config(interactions: pl.DataFrame, pair_window: int = 3) -> StatsConfig:
    """Sequence mode with a 5-step window for position timestamps; else absolute with a window of
    one tenth of the time span (at least 1)."""
    if is_sequence_time(interactions):
        return StatsConfig(time_mode="sequence", recent_window=5, pair_window=pair_window)
    span = int(interactions["timestamp"].max() - interactions["timestamp"].min()) if interactions.height else 10
    return StatsConfig(time_mode="absolute", recent_window=max(span // 10, 1), pair_window=pair_window)


def _cumulative(events: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """(keys, t) → (keys, t, cum): events per key and time, cumulated over time, sorted by t."""
    return (events.group_by([*keys, "t"]).agg(pl.len().alias("n"))
            .sort([*keys, "t"])
            .with_columns(pl.col("n").cum_sum().over(keys).cast(pl.Int64).alias("cum"))
            .drop("n").sort("t"))


def count_before(queries: pl.DataFrame, events: pl.DataFrame, keys: list[str], at: str) -> pl.Series:
    """For each query row: the number of events with the same `keys` and time strictly before `queries[at]`."""
    if queries.height == 0:
        return pl.Series("count", [], dtype=pl.Int64)
    unique = queries.select(*keys, pl.col(at).alias("t")).unique()
    found = unique.join(events.select(keys).unique(), on=keys, how="semi")
    if found.height:
        found = found.sort("t").join_asof(events, on="t", by=keys, strategy="backward",
                                          allow_exact_matches=False, check_sortedness=False)
    else:
        found = found.with_columns(pl.lit(None, pl.Int64).alias("cum"))
    looked_up = queries.select(*keys, pl.col(at).alias("t")).join(
        found.select(*keys, "t", "cum"), on=[*keys, "t"], how="left", maintain_order="left")
    return looked_up["cum"].fill_null(0).alias("count")


class InteractionStats:
    """Cumulative event tables: `items` (item_id, t, cum), `transitions` (src → dst, the very next item)
    and `cooccurrence` (src, dst within `pair_window` steps, both directions)."""

    FILES = ("item_events.parquet", "transition_events.parquet", "cooccurrence_events.parquet")

    def __init__(self, config: StatsConfig, items: pl.DataFrame, transitions: pl.DataFrame,
                 cooccurrence: pl.DataFrame) -> None:
        self.config = config
        self.items = items
        self.transitions = transitions
        self.cooccurrence = cooccurrence

    @classmethod
    def fit(cls, train: pl.DataFrame, config: StatsConfig) -> "InteractionStats":
        """From training interactions (user_id, item_id, timestamp) only."""
        ordered = ordered_interactions(train.select("user_id", "item_id", "timestamp")).with_columns(
            pl.int_range(pl.len()).over("user_id").alias("pos"), pl.len().over("user_id").alias("n"))
        if config.time_mode == "sequence":
            ordered = ordered.with_columns((pl.col("pos") - pl.col("n")).cast(pl.Int64).alias("t"))
        else:
            ordered = ordered.with_columns(pl.col("timestamp").cast(pl.Int64).alias("t"))
        base = ordered.select("user_id", "pos", "item_id", "t")
        items = _cumulative(base.select("item_id", "t"), ["item_id"])
        lagged = [base.join(base.with_columns(pl.col("pos") + lag), on=["user_id", "pos"], suffix="_src")
                  .select(pl.col("item_id_src").alias("src"), pl.col("item_id").alias("dst"), "t")
                  for lag in range(1, config.pair_window + 1)]
        transitions = _cumulative(lagged[0], ["src", "dst"])
        forward = pl.concat(lagged)
        both = pl.concat([forward, forward.select(pl.col("dst").alias("src"), pl.col("src").alias("dst"), "t")])
        return cls(config, items, transitions, _cumulative(both, ["src", "dst"]))

    def query_time(self, as_of: int | None) -> int:
        """The time a query is evaluated at (sequence mode: always 0; absolute: `as_of`, or after all events)."""
        if self.config.time_mode == "sequence":
            return 0
        return NOW if as_of is None else int(as_of)

    def item_counts(self, item_ids: pl.Series, at: pl.Series) -> pl.Series:
        """Events of each item strictly before the matching time."""
        return count_before(pl.DataFrame({"item_id": item_ids, "at": at}), self.items, ["item_id"], "at")

    def pair_counts(self, table: str, src: pl.Series, dst: pl.Series, at: pl.Series) -> pl.Series:
        """`table` ('transitions' | 'cooccurrence') counts for each (src, dst) strictly before the time."""
        events = self.transitions if table == "transitions" else self.cooccurrence
        return count_before(pl.DataFrame({"src": src, "dst": dst, "at": at}), events, ["src", "dst"], "at")

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, frame in zip(self.FILES, (self.items, self.transitions, self.cooccurrence)):
            frame.write_parquet(directory / name)
        (directory / "ranker_stats.json").write_text(self.config.model_dump_json(indent=2))

    @classmethod
    def load(cls, directory: Path) -> "InteractionStats":
        config = StatsConfig.model_validate(json.loads((directory / "ranker_stats.json").read_text()))
        frames = [pl.read_parquet(directory / name).sort("t") for name in cls.FILES]
        return cls(config, *frames)
