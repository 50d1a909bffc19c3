"""Interaction statistics for the re-ranker, point-in-time: item popularity and item-to-item transition /
co-occurrence counts, each stored as cumulative event counts so a feature can ask "how many events
strictly before time t" (no leakage).

They are held as sorted numpy arrays, so one lookup is a `searchsorted`: items and pairs are integer
codes, times are ranks among the distinct event times, and every row of a table is keyed by
`code * span + time rank` (sorted) with its cumulative count. Counting the events of many (code, time)
pairs is then two vectorised binary searches, with no per-request frame building. Saved under the
bundle's `stats/` as `ranker_stats/*.npy` (the sorted arrays themselves, memory-mapped on load; no pickle) +
`ranker_stats.json`; bundles written before this format (`ranker_stats.npz` of event rows, or Parquet tables of
(ids, t, cum)) still load. `recsys.stats_fit` builds the arrays from the interactions in bounded memory.

Two time modes:
- `absolute`: timestamps are real times; a query at time t sees only events with timestamp < t.
- `sequence`: timestamps are positions in each user's sequence (RecBole/UniSRec files have no times),
  so there is no global clock. Event times become "steps before the user's last training event"
  (-1 = the last one) and every query is at time 0: it sees all training events, which is leak-free
  because the statistics are fit on the train split only (no valid/test item is ever in them).

With `StatsConfig.ease`, they also hold EASE item–item weights (`recsys.ease`), point in time the same way.

`StatsConfig.through` says which events they count: the train split (what the re-ranker learns with, and
the published protocol), or, refreshed for serving (`recsys refresh-stats`), also every user's valid-step
event or every event. A split whose targets the statistics count cannot be evaluated with them
(`StatsConfig.check_unseen`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from recsys.config import FrozenModel
from recsys.count_tables import CountTable, PairCounts
from recsys.ease import EaseConfig, EaseTable
from recsys.errors import DataError


ARRAYS_DIR = "ranker_stats"
NPZ_FILE = "ranker_stats.npz"  # the format before ARRAYS_DIR (events as columns), still loaded
CONFIG_FILE = "ranker_stats.json"
LEGACY_FILES = ("item_events.parquet", "transition_events.parquet", "cooccurrence_events.parquet")


SPLIT_ORDER = ("train", "valid", "test")
"""The splits in time order: statistics through one of them count the events of it and those before."""


class StatsConfig(FrozenModel):
    """How the statistics are computed; saved with them."""

    time_mode: Literal["absolute", "sequence"] = "absolute"
    recent_window: int = Field(30 * 86_400, ge=1, description="time units (sequence mode: steps) of 'recent'")
    pair_window: int = Field(3, ge=1, description="co-occurrence: items at most this many steps apart")
    through: Literal["train", "valid", "test"] = Field(
        "train", description="the last split whose events are counted: train (the re-ranker's training, the "
        "published protocol), valid (+ every user's valid-step event: what a shop knows before the test step) or "
        "test (every event: serving after the benchmark)")

    ease: EaseConfig | None = Field(None, description="also EASE item–item weights (`recsys.ease`), when the "
                                    "events hold at most `ease.max_items` items; None: none")

    live_events: int = Field(0, ge=0, description="events read from the API's event store on top of the dataset's "
                             "(`recsys refresh-stats --store`); 0: none")
    live_through_seq: int = Field(0, ge=0, description="the store's last event seq they count")

    def check_unseen(self, split: str) -> None:
        """DataError when the statistics count `split`'s target events (evaluating it would read its answers)."""
        if self.live_events:
            raise DataError(f"this bundle's re-ranker statistics count {self.live_events:,} live events from the "
                            f"event store (`recsys refresh-stats --store`), which may be any split's targets; "
                            f"evaluate the {split} split with the bundle `recsys train-ranker` wrote")
        if SPLIT_ORDER.index(self.through) >= SPLIT_ORDER.index(split):
            raise DataError(f"this bundle's re-ranker statistics count the events through the {self.through} step "
                            f"(`recsys refresh-stats` or `recsys refit`), so its {split} targets are among them; "
                            f"evaluate the {split} split with the bundle `recsys train-ranker` wrote (statistics of "
                            f"the train split){' or one refreshed --through valid' if split == 'test' else ''}")


def saved_config(directory: Path) -> StatsConfig | None:
    """The StatsConfig saved in a bundle's `stats/` directory (None: the bundle has no re-ranker statistics)."""
    path = Path(directory) / CONFIG_FILE
    return StatsConfig.model_validate(json.loads(path.read_text())) if path.exists() else None


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


class InteractionStats:
    """Point-in-time popularity (`item_counts`), transitions (src → the very next item) and co-occurrence
    (src, dst within `pair_window` steps, both directions), over the integer item codes of `item_ids`."""

    def __init__(self, config: StatsConfig, item_ids: np.ndarray, times: np.ndarray, items: CountTable,
                 transitions: PairCounts, cooccurrence: PairCounts, ease: EaseTable | None = None) -> None:
        self.config = config
        self.ease = ease  # None: not asked for, or more items than `config.ease.max_items`
        self.item_ids = np.asarray(item_ids, dtype=str)
        self.code = {item_id: n for n, item_id in enumerate(self.item_ids.tolist())}
        self.times = times  # the distinct event times, sorted (int64)
        self.items, self.transitions, self.cooccurrence = items, transitions, cooccurrence

    @classmethod
    def from_event_tables(cls, config: StatsConfig, item_ids: np.ndarray, times: np.ndarray,
                          items: dict[str, np.ndarray], transitions: dict[str, np.ndarray],
                          cooccurrence: dict[str, np.ndarray]) -> "InteractionStats":
        """From (key | src, dst), t, cum columns with real event times (the earlier bundle formats)."""
        times = np.asarray(times, np.int64)
        span, n = len(times) + 1, len(item_ids)

        def rank(t: np.ndarray) -> np.ndarray:
            return np.searchsorted(times, np.asarray(t, np.int64))

        return cls(config, item_ids, times, CountTable.build(items["key"], rank(items["t"]), items["cum"], span),
                   PairCounts.build(transitions["src"], transitions["dst"], rank(transitions["t"]),
                                    transitions["cum"], n, span),
                   PairCounts.build(cooccurrence["src"], cooccurrence["dst"], rank(cooccurrence["t"]),
                                    cooccurrence["cum"], n, span))

    # ---- fitting ------------------------------------------------------------------------------
    @classmethod
    def fit(cls, train: pl.DataFrame, config: StatsConfig, progress: bool = False) -> "InteractionStats":
        """From training interactions (user_id, item_id, timestamp) only; integer-coded numpy arrays, the item
        pairs counted one range of source items at a time, so memory stays bounded at tens of millions of
        events (`recsys.stats_fit`)."""
        from recsys.stats_fit import fit_arrays

        item_ids, times, items, transitions, cooccurrence, ease = fit_arrays(train, config, progress)
        return cls(config, item_ids, times, items, transitions, cooccurrence, ease)

    def events(self) -> int:
        """How many events the statistics count."""
        return int(np.asarray(self.items.total).sum())

    # ---- lookups ------------------------------------------------------------------------------
    def codes(self, item_ids: Sequence[str]) -> np.ndarray:
        """Integer code of each item id (-1: no training event)."""
        code = self.code
        return np.fromiter((code.get(i, -1) for i in item_ids), np.int64, len(item_ids))

    def query_time(self, as_of: int | None) -> int:
        """The time a query is evaluated at. Absolute mode: `as_of`, or the statistics' own "now" (`end_time`:
        just after their last event, so every event counts and "recent" is the last window they hold). Sequence
        mode: 0 (after every training event), except a negative `as_of`, a step offset for queries inside the
        train split (-1: at the user's last training event, which it does not see)."""
        if self.config.time_mode == "sequence":
            return int(as_of) if as_of is not None and as_of < 0 else 0
        return self.end_time if as_of is None else int(as_of)

    @property
    def end_time(self) -> int:
        """Just after the last event counted (absolute mode's serving time: a query without `as_of` is asked
        "now" in the statistics' clock, not at the end of time, where no event would be recent)."""
        return int(self.times[-1]) + 1 if len(self.times) else 0

    def query_times(self, as_of: Sequence[int | None] | None, n: int) -> np.ndarray:
        """`query_time` of each of n queries (as_of None: all now)."""
        if as_of is None:
            return np.full(n, self.query_time(None), np.int64)
        return np.fromiter((self.query_time(t) for t in as_of), np.int64, n)

    def rank(self, at: np.ndarray) -> np.ndarray:
        """Number of distinct event times strictly before each time."""
        return np.searchsorted(self.times, np.asarray(at, np.int64), side="left")

    def item_counts(self, codes: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Events of each item code strictly before the matching time."""
        return self.items.before(codes, self.rank(at))

    def pair_counts(self, table: Literal["transitions", "cooccurrence"], src: np.ndarray, dst: np.ndarray,
                    at: np.ndarray) -> np.ndarray:
        """`table` counts for each (src, dst) code pair strictly before the time."""
        pairs = self.transitions if table == "transitions" else self.cooccurrence
        return pairs.before(src, dst, self.rank(at))

    def pair_counts_blocks(self, table: Literal["transitions", "cooccurrence"], src: np.ndarray, dst: np.ndarray,
                           starts: np.ndarray, lengths: np.ndarray, at: np.ndarray) -> np.ndarray:
        """`pair_counts(table, src[query], dst[:, None], at[query][:, None])` for rows in contiguous query blocks
        (see `PairCounts.pair_number_blocks`): src [queries, R], dst [rows], at [queries] → [rows, R]."""
        pairs = self.transitions if table == "transitions" else self.cooccurrence
        numbers = pairs.pair_number_blocks(src, dst, starts, lengths)
        ranks = np.repeat(self.rank(at), lengths)[:, None]
        return pairs.table.before(numbers, np.broadcast_to(ranks, numbers.shape))

    def ease_scores(self, src: np.ndarray, dst: np.ndarray, query: np.ndarray, at: np.ndarray) -> np.ndarray:
        """EASE score of each row's candidate (`dst` codes) from its query's history items (`src` [queries, depth]
        codes, -1: none), by the latest fit strictly before the query time (`at` [queries]; NaN: no such fit)."""
        if self.ease is None:
            raise DataError("these statistics have no EASE weights (fitted without them, or on more than "
                            "`ease.max_items` items)")
        return self.ease.scores(src, dst, query, self.rank(at))

    # ---- persistence --------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """`ranker_stats/` (one .npy per array: the sorted tables as they are searched, so loading is a
        memory map, not a rebuild) + `ranker_stats.json` (the config)."""
        arrays_dir = directory / ARRAYS_DIR
        arrays_dir.mkdir(parents=True, exist_ok=True)
        arrays = {"item_ids": self.item_ids, "times": self.times, **self.items.arrays("items"),
                  **self.transitions.arrays("transitions"), **self.cooccurrence.arrays("cooccurrence"),
                  **(self.ease.arrays() if self.ease is not None else {})}
        for name, values in arrays.items():
            np.save(arrays_dir / f"{name}.npy", np.asarray(values), allow_pickle=False)
        for stale in arrays_dir.glob("*.npy"):  # an earlier save's tables these statistics do not have
            if stale.stem not in arrays:
                stale.unlink()
        (directory / CONFIG_FILE).write_text(self.config.model_dump_json(indent=2))

    @classmethod
    def load(cls, directory: Path) -> "InteractionStats":
        """The arrays are memory-mapped: pages are read on first use and shared between processes (serving
        workers), and the point-in-time rows serving never reads stay on disk."""
        config = StatsConfig.model_validate(json.loads((directory / CONFIG_FILE).read_text()))
        if (directory / ARRAYS_DIR).is_dir():
            arrays = {path.stem: np.load(path, mmap_mode="r", allow_pickle=False)
                      for path in (directory / ARRAYS_DIR).glob("*.npy")}
            span, n = len(arrays["times"]) + 1, len(arrays["item_ids"])
            return cls(config, np.asarray(arrays["item_ids"]), arrays["times"],
                       CountTable.from_arrays(arrays, "items", span),
                       PairCounts.from_arrays(arrays, "transitions", n, span),
                       PairCounts.from_arrays(arrays, "cooccurrence", n, span), EaseTable.from_arrays(arrays))
        if not (directory / NPZ_FILE).exists() and (directory / LEGACY_FILES[0]).exists():
            return cls._load_legacy(directory, config)
        with np.load(directory / NPZ_FILE, allow_pickle=False) as arrays:  # bundles before the .npy directory
            tables: dict[str, dict[str, np.ndarray]] = {"items": {}, "transitions": {}, "cooccurrence": {}}
            for key in arrays.files:
                if "." in key:
                    name, column = key.split(".", 1)
                    tables[name][column] = arrays[key]
            return cls.from_event_tables(config, arrays["item_ids"], arrays["times"], **tables)

    @classmethod
    def _load_legacy(cls, directory: Path, config: StatsConfig) -> "InteractionStats":
        """Bundles written before the array format: Parquet (item_id | src, dst), t, cum."""
        items, transitions, cooccurrence = (pl.read_parquet(directory / name) for name in LEGACY_FILES)
        item_ids = pl.concat([items["item_id"], transitions["src"], transitions["dst"], cooccurrence["src"],
                              cooccurrence["dst"]]).unique().sort()
        enum = pl.Enum(item_ids.to_list())

        def code(column: str) -> pl.Expr:
            return pl.col(column).cast(enum).to_physical().cast(pl.Int64)

        times = pl.concat([items["t"], transitions["t"], cooccurrence["t"]]).unique().sort().to_numpy()
        return cls.from_event_tables(
            config, item_ids.to_numpy().astype(str), times,
            _columns(items.select(code("item_id").alias("key"), "t", "cum")),
            _columns(transitions.select(code("src").alias("src"), code("dst").alias("dst"), "t", "cum")),
            _columns(cooccurrence.select(code("src").alias("src"), code("dst").alias("dst"), "t", "cum")))


def _columns(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    return {name: frame[name].to_numpy().astype(np.int64) for name in frame.columns}
