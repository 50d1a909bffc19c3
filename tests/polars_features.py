"""The re-ranker's original Polars feature path (lazy joins per request), kept as the test oracle: the
numpy feature path in `recsys.features` must compute exactly these values (tests/test_feature_parity.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from recsys.features import ATTRIBUTE_FEATURES, FeatureConfig, feature_names
from recsys.splits import ordered_interactions
from recsys.stats import StatsConfig


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


class PolarsStats:
    """Cumulative event tables: `items` (item_id, t, cum), `transitions` (src → dst, the very next item)
    and `cooccurrence` (src, dst within `pair_window` steps, both directions)."""

    def __init__(self, config: StatsConfig, items: pl.DataFrame, transitions: pl.DataFrame,
                 cooccurrence: pl.DataFrame) -> None:
        self.config = config
        self.items = items
        self.transitions = transitions
        self.cooccurrence = cooccurrence

    @classmethod
    def fit(cls, train: pl.DataFrame, config: StatsConfig) -> "PolarsStats":
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
        """The time a query is evaluated at (sequence mode: always 0; absolute: `as_of`, or just after the last
        event)."""
        if self.config.time_mode == "sequence":
            return 0
        if as_of is None:
            end = self.items["t"].max()
            return int(end) + 1 if end is not None else 0
        return int(as_of)

    def item_counts(self, item_ids: pl.Series, at: pl.Series) -> pl.Series:
        """Events of each item strictly before the matching time."""
        return count_before(pl.DataFrame({"item_id": item_ids, "at": at}), self.items, ["item_id"], "at")

    def pair_counts(self, table: str, src: pl.Series, dst: pl.Series, at: pl.Series) -> pl.Series:
        """`table` ('transitions' | 'cooccurrence') counts for each (src, dst) strictly before the time."""
        events = self.transitions if table == "transitions" else self.cooccurrence
        return count_before(pl.DataFrame({"src": src, "dst": dst, "at": at}), events, ["src", "dst"], "at")


def _flat(lists: Sequence[Sequence], dtype=None) -> np.ndarray:
    return np.asarray([x for row in lists for x in row], dtype=dtype)


class PolarsFeatureBuilder:
    """Features for retrieved candidates, bound to a catalogue (ids, vectors, attributes) and statistics."""

    def __init__(self, items: pl.DataFrame, item_vectors: np.ndarray, stats: PolarsStats,
                 config: FeatureConfig) -> None:
        self.config = config
        self.stats = stats
        self.item_ids: list[str] = items["item_id"].to_list()
        self.position = {item_id: i for i, item_id in enumerate(self.item_ids)}
        vectors = np.asarray(item_vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = vectors / np.where(norms > 0, norms, 1.0)
        self.blocks = {}  # block similarity: each block of the raw vectors normalised on its own
        if config.has_blocks:
            for suffix, part in (("towers", slice(0, config.trained_dim)), ("text", slice(config.trained_dim, None))):
                block = vectors[:, part]
                self.blocks[suffix] = block / np.linalg.norm(block, axis=1, keepdims=True)
        self.attributes = [a for a in ATTRIBUTE_FEATURES if a in items.columns and items[a].null_count() < items.height]
        self.attribute_table = items.select("item_id", *self.attributes)
        self.names = feature_names(self.attributes, config)

    # ---- the frame ------------------------------------------------------------------------------
    def build(self, histories: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]],
              scores: Sequence[Sequence[float]], as_of: Sequence[int | None] | None = None) -> pl.DataFrame:
        """One row per (query, candidate) in the given order: `query`, `item_id`, then `self.names`.

        `histories` are items strictly before each query (oldest first); `as_of` the query times
        (None: now). Statistics are read strictly before each query time."""
        n = len(histories)
        times = [self.stats.query_time(None if as_of is None else as_of[q]) for q in range(n)]
        lengths = np.array([len(c) for c in candidates], dtype=np.int64)
        query = np.repeat(np.arange(n, dtype=np.int64), lengths)
        frame = pl.DataFrame({
            "query": query,
            "item_id": pl.Series(_flat(candidates, object).tolist(), dtype=pl.Utf8),
            "retrieval_score": _flat(scores, np.float64),
            "retrieval_rank": np.concatenate([np.arange(m) for m in lengths]).astype(np.float64) if n else [],
            "at": np.asarray(times, dtype=np.int64)[query],
            "hist_len": np.array([len(h) for h in histories], dtype=np.float64)[query],
        }, schema_overrides={"retrieval_score": pl.Float64, "retrieval_rank": pl.Float64, "hist_len": pl.Float64,
                             "query": pl.Int64, "at": pl.Int64})
        frame = frame.with_columns((pl.col("retrieval_score") - pl.col("retrieval_score").max().over("query"))
                                   .alias("retrieval_gap"))
        frame = self._popularity(frame)
        frame = self._history_pairs(frame, histories, times)
        if self.config.normalized_pairs:
            frame = self._normalized_pairs(frame, histories, times)
        frame = self._consumed(frame, histories)
        frame = self._similarity(frame, histories, lengths)
        if self.attributes:
            frame = self._attribute_agreement(frame, histories)
        return frame.select("query", "item_id", *[pl.col(c).cast(pl.Float64) for c in self.names])

    def _popularity(self, frame: pl.DataFrame) -> pl.DataFrame:
        window = self.stats.config.recent_window
        item, at = frame["item_id"], frame["at"]
        total = self.stats.item_counts(item, at)
        before_recent = self.stats.item_counts(item, at - window)
        before_prev = self.stats.item_counts(item, at - 2 * window)
        recent, previous = total - before_recent, before_recent - before_prev
        return frame.with_columns(pop_all=total, pop_recent=recent, pop_trend=(recent + 1) / (previous + 1))

    def _pair_counts(self, frame: pl.DataFrame, histories: Sequence[Sequence[str]],
                     depth: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(the last `depth` history items per query with their lag, newest 0; every (query, candidate, history
        item) with its transition and co-occurrence counts before the query time)."""
        recent = pl.DataFrame({
            "query": [q for q, h in enumerate(histories) for _ in h[-depth:]],
            "src": [i for h in histories for i in reversed(h[-depth:])],
            "lag": [lag for h in histories for lag in range(len(h[-depth:]))],
        }, schema={"query": pl.Int64, "src": pl.Utf8, "lag": pl.Int64})
        pairs = frame.select("query", pl.col("item_id").alias("dst"), "at").join(recent, on="query", how="inner")
        return recent, pairs.with_columns(
            trans=self.stats.pair_counts("transitions", pairs["src"], pairs["dst"], pairs["at"]),
            cooc=self.stats.pair_counts("cooccurrence", pairs["src"], pairs["dst"], pairs["at"]))

    def _history_pairs(self, frame: pl.DataFrame, histories: Sequence[Sequence[str]],
                       times: Sequence[int]) -> pl.DataFrame:
        depth = self.config.recent_items
        recent, pairs = self._pair_counts(frame, histories, depth)
        agg = pairs.group_by("query", "dst").agg(
            pl.col("trans").filter(pl.col("lag") == 0).sum().alias("trans_last"),
            pl.col("trans").sum().alias("trans_recent"),
            pl.col("cooc").sum().alias("cooc_recent"),
            pl.col("cooc").max().alias("cooc_max"))
        last = recent.filter(pl.col("lag") == 0).with_columns(
            at=pl.Series([times[q] for q in recent.filter(pl.col("lag") == 0)["query"]], dtype=pl.Int64))
        last_pop = last.select("query", self.stats.item_counts(last["src"], last["at"]).alias("last_pop"))
        frame = (frame.join(agg, left_on=["query", "item_id"], right_on=["query", "dst"], how="left",
                            maintain_order="left")
                 .join(last_pop, on="query", how="left", maintain_order="left"))
        counts = ["trans_last", "trans_recent", "cooc_recent", "cooc_max"]
        return frame.with_columns([pl.col(c).fill_null(0) for c in counts]).with_columns(
            (pl.col("trans_last") / (pl.col("last_pop").fill_null(0) + 1)).alias("trans_last_norm")).drop("last_pop")

    def _normalized_pairs(self, frame: pl.DataFrame, histories: Sequence[Sequence[str]],
                          times: Sequence[int]) -> pl.DataFrame:
        depth = max(self.config.recent_items, self.config.decay_items)
        recent, pairs = self._pair_counts(frame, histories, depth)
        pairs = pairs.with_columns(
            n_src=self.stats.item_counts(pairs["src"], pairs["at"]) + 1,
            n_dst=self.stats.item_counts(pairs["dst"], pairs["at"]) + 1)
        cosine = pl.col("cooc") / (pl.col("n_src") * pl.col("n_dst")).sqrt()
        weight = pl.lit(self.config.decay).pow(pl.col("lag"))
        recent_lag, decay_lag = pl.col("lag") < self.config.recent_items, pl.col("lag") < self.config.decay_items
        agg = pairs.group_by("query", "dst").agg(
            cosine.filter(recent_lag).sum().alias("cooc_cos_recent"),
            (pl.col("trans") / pl.col("n_src")).filter(recent_lag).sum().alias("trans_norm_recent"),
            (cosine * weight).filter(decay_lag).sum().alias("cooc_cos_decay"),
            (pl.col("trans") / pl.col("n_src") * weight).filter(decay_lag).sum().alias("trans_norm_decay"),
            cosine.filter(recent_lag).max().alias("cooc_cos_max"))
        names = ["cooc_cos_recent", "trans_norm_recent", "cooc_cos_decay", "trans_norm_decay", "cooc_cos_max"]
        frame = frame.join(agg, left_on=["query", "item_id"], right_on=["query", "dst"], how="left",
                           maintain_order="left").with_columns(pl.col(names).fill_null(0.0))
        # the mean log count of the last decay_items history items that have training events (NaN: none)
        known = recent.filter(pl.col("lag") < self.config.decay_items).join(
            pl.DataFrame({"query": range(len(histories))}, schema={"query": pl.Int64}).with_columns(
                at=pl.Series(times, dtype=pl.Int64)), on="query")
        known = known.with_columns(n=self.stats.item_counts(known["src"], known["at"])).filter(
            pl.col("src").is_in(self.stats.items["item_id"].unique().implode()))
        profile = known.group_by("query").agg((pl.col("n") + 1).log().mean().alias("hist_pop_mean"))
        return frame.join(profile, on="query", how="left", maintain_order="left")

    def _consumed(self, frame: pl.DataFrame, histories: Sequence[Sequence[str]]) -> pl.DataFrame:
        seen = pl.DataFrame({
            "query": [q for q, h in enumerate(histories) for _ in h],
            "item_id": [i for h in histories for i in h],
            "steps_ago": [len(h) - 1 - p for h in histories for p in range(len(h))],
        }, schema={"query": pl.Int64, "item_id": pl.Utf8, "steps_ago": pl.Int64})
        agg = seen.group_by("query", "item_id").agg(pl.len().alias("consumed_count"),
                                                    pl.col("steps_ago").min().alias("consumed_steps_ago"))
        return frame.join(agg, on=["query", "item_id"], how="left", maintain_order="left").with_columns(
            pl.col("consumed_count").fill_null(0))  # consumed_steps_ago stays null (missing) when never consumed

    def _history_rows(self, history: Sequence[str], depth: int) -> list[int]:
        return [self.position[i] for i in history[-depth:] if i in self.position]

    def _similarity(self, frame: pl.DataFrame, histories: Sequence[Sequence[str]],
                    lengths: np.ndarray) -> pl.DataFrame:
        cand = np.array([self.position.get(i, -1) for i in frame["item_id"].to_list()], dtype=np.int64)
        last = np.full(len(cand), np.nan)
        best = np.full(len(cand), np.nan)
        mean = np.full(len(cand), np.nan)
        by_block = {f"sim_{kind}_{suffix}": np.full(len(cand), np.nan) for suffix in self.blocks
                    for kind in ("last", "max")}
        start = 0
        for q, history in enumerate(histories):
            stop = start + int(lengths[q])
            rows = self._history_rows(history, self.config.sim_items)
            block = cand[start:stop]
            known = block >= 0
            if rows and known.any():
                sims = self.vectors[block[known]] @ self.vectors[rows].T
                idx = np.flatnonzero(known) + start
                last[idx], best[idx], mean[idx] = sims[:, -1], sims.max(axis=1), sims.mean(axis=1)
                for suffix, unit in self.blocks.items():
                    sims = unit[block[known]] @ unit[rows].T
                    by_block[f"sim_last_{suffix}"][idx], by_block[f"sim_max_{suffix}"][idx] = sims[:, -1], sims.max(1)
            start = stop
        return frame.with_columns(sim_last=last, sim_max=best, sim_mean=mean, **by_block).with_columns(
            [pl.col(c).fill_nan(None) for c in ("sim_last", "sim_max", "sim_mean", *by_block)])

    def _attribute_agreement(self, frame: pl.DataFrame, histories: Sequence[Sequence[str]]) -> pl.DataFrame:
        depth = self.config.attr_items
        recent = pl.DataFrame({
            "query": [q for q, h in enumerate(histories) for _ in h[-depth:]],
            "item_id": [i for h in histories for i in h[-depth:]],
            "lag": [lag for h in histories for lag in reversed(range(len(h[-depth:])))],
        }, schema={"query": pl.Int64, "item_id": pl.Utf8, "lag": pl.Int64}).join(
            self.attribute_table, on="item_id", how="left", maintain_order="left")
        frame = frame.join(self.attribute_table, on="item_id", how="left", maintain_order="left")
        for attr in (a for a in ("category", "brand") if a in self.attributes):
            share = recent.group_by("query", attr).agg(pl.len().alias("_same")).drop_nulls(attr)
            sizes = recent.group_by("query").agg(pl.len().alias("_size"))
            last = recent.filter(pl.col("lag") == 0).select("query", pl.col(attr).alias("_last"))
            frame = (frame.join(share, on=["query", attr], how="left", maintain_order="left")
                     .join(sizes, on="query", how="left", maintain_order="left")
                     .join(last, on="query", how="left", maintain_order="left")
                     .with_columns((pl.col(attr) == pl.col("_last")).cast(pl.Float64).alias(f"{attr}_match_last"),
                                   (pl.col("_same").fill_null(0) / pl.col("_size")).alias(f"{attr}_share"))
                     .drop("_same", "_size", "_last"))
        if "price" in self.attributes:
            median = recent.group_by("query").agg(pl.col("price").filter(pl.col("price") > 0).median().alias("_med"))
            frame = frame.join(median, on="query", how="left", maintain_order="left").with_columns(
                pl.when((pl.col("price") > 0) & (pl.col("_med") > 0))
                .then(pl.col("price").log() - pl.col("_med").log()).alias("price_log_ratio")).drop("_med")
        return frame
