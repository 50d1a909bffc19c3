"""Building the re-ranker's statistics (`recsys.stats`) from training interactions in bounded memory.

Interactions are ordered per user by time once (Polars), then everything is integer numpy: item codes, each
event's position in its user's sequence and its time rank. Item counts are one sort of `item * span + rank`.
Item pairs (the item `lag` steps earlier → this item, `lag` ≤ pair_window; co-occurrence also the reverse
direction, both at the later event's time) are counted one range of source items at a time, so only that
range's pair events are ever materialised (~8M rows), and the ranges come out in code order, so their tables
concatenate into the sorted whole. At 10M events this is minutes and a few GB, where the earlier Polars joins on
user ids needed ~2 GB per million events. The counts are the same: tests/test_feature_parity.py compares them
with the reference implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from recsys.count_tables import CountTable, PairCounts, totals
from recsys.ease import EaseTable
from recsys.splits import ordered_interactions
from recsys.stats import StatsConfig

PAIR_EVENTS_PER_RANGE = 8_000_000
"""Pair events materialised at once (one range of source items)."""


@dataclass(frozen=True)
class Events:
    """Training events in (user, time) order as integer arrays."""

    item: np.ndarray  # int64 item code
    user: np.ndarray  # int64 user code (0, 1, … in order)
    pos: np.ndarray  # int64 position in the user's sequence (0 = first)
    rank: np.ndarray  # int64 rank of the event's time among the distinct times
    n_items: int
    span: int  # distinct times + 1


def ordered_events(train: pl.DataFrame, config: StatsConfig) -> tuple[np.ndarray, np.ndarray, Events]:
    """(item ids, distinct times, events): items coded by sorted id; times by `config.time_mode` (absolute:
    the timestamp; sequence: position minus the user's length, -1 = the last event)."""
    item_ids = train["item_id"].unique().sort()
    ordered = ordered_interactions(train.select("user_id", "item_id", "timestamp"))
    item = ordered["item_id"].cast(pl.Enum(item_ids.to_list())).to_physical().to_numpy().astype(np.int64)
    first = (ordered["user_id"] != ordered["user_id"].shift(1)).fill_null(True).to_numpy()
    stamps = ordered["timestamp"].to_numpy().astype(np.int64)
    del ordered
    starts = np.flatnonzero(first)
    owner = np.cumsum(first) - 1
    pos = np.arange(len(item), dtype=np.int64) - starts[owner]
    if config.time_mode == "sequence":
        lengths = np.diff(np.append(starts, len(item)))
        t = pos - lengths[owner]
    else:
        t = stamps
    del stamps
    times = np.unique(t)
    rank = np.searchsorted(times, t)
    return item_ids.to_numpy().astype(str), times, Events(item, owner, pos, rank, len(item_ids), len(times) + 1)


def item_table(events: Events) -> CountTable:
    """Events per item code and time rank, cumulated over time."""
    composite, cum = _cumulate(events.item * events.span + events.rank, events.span)
    return CountTable(composite, cum, totals(composite // events.span, cum), events.span)


def _cumulate(keys: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct `key * span + rank` values and each one's cumulative count within its key."""
    unique, counts = np.unique(keys, return_counts=True)
    return unique, _running_within(unique // span, counts)


def pair_tables(events: Events, lags: range, both_directions: bool, progress: bool = False,
                desc: str = "pairs") -> PairCounts:
    """Pair counts over `lags` (each event with the event `lag` steps earlier in its user's sequence), one
    range of source codes at a time."""
    n, span = events.n_items, events.span
    per_lag = [np.flatnonzero(events.pos >= lag) for lag in lags]
    total = sum(len(p) for p in per_lag) * (2 if both_directions else 1)
    ranges = max(1, -(-total // PAIR_EVENTS_PER_RANGE))
    bounds = np.linspace(0, n, ranges + 1).astype(np.int64)
    pairs, composites, cums = [], [], []
    offset = 0
    for lo, hi in tqdm(list(zip(bounds[:-1], bounds[1:])), desc=desc, unit="range", disable=not progress):
        codes, ranks = [], []
        for lag, rows in zip(lags, per_lag):
            src, dst, rank = events.item[rows - lag], events.item[rows], events.rank[rows]
            directions = ((src, dst), (dst, src)) if both_directions else ((src, dst),)
            for a, b in directions:
                keep = (a >= lo) & (a < hi)
                codes.append(a[keep] * n + b[keep])
                ranks.append(rank[keep])
        code, rank = np.concatenate(codes), np.concatenate(ranks)
        del codes, ranks
        order = np.lexsort((rank, code))
        code, rank = code[order], rank[order]
        del order
        change = np.ones(len(code), bool)  # a new (pair, time) row starts
        change[1:] = (code[1:] != code[:-1]) | (rank[1:] != rank[:-1])
        starts = np.flatnonzero(change)
        counts = np.diff(np.append(starts, len(code)))
        row_code, row_rank = code[starts], rank[starts]
        del code, rank, change
        unique, number = np.unique(row_code, return_inverse=True)
        number = number.reshape(-1)
        composite = (number + offset) * span + row_rank
        cum = _running_within(number, counts)
        pairs.append(unique)
        composites.append(composite)
        cums.append(cum)
        offset += len(unique)
    pairs_all = np.concatenate(pairs) if pairs else np.zeros(0, np.int64)
    composite_all = np.concatenate(composites) if composites else np.zeros(0, np.int64)
    cum_all = np.concatenate(cums) if cums else np.zeros(0, np.int64)
    table = CountTable(composite_all, cum_all, totals(composite_all // span, cum_all), span)
    return PairCounts(pairs_all, table, n)


def _running_within(group: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative sum of `counts` restarting at each new value of `group` (rows sorted by group)."""
    running = np.cumsum(counts)
    first = np.append(True, group[1:] != group[:-1])
    base = (running - counts)[first]
    return running - np.repeat(base, np.diff(np.append(np.flatnonzero(first), len(group))))


def fit_arrays(train: pl.DataFrame, config: StatsConfig, progress: bool = False
               ) -> tuple[np.ndarray, np.ndarray, CountTable, PairCounts, PairCounts, EaseTable | None]:
    """(item ids, distinct times, item table, transitions, co-occurrence, EASE weights or None) for
    `InteractionStats`."""
    item_ids, times, events = ordered_events(train, config)
    items = item_table(events)
    transitions = pair_tables(events, range(1, 2), False, progress, "transitions")
    cooccurrence = pair_tables(events, range(1, config.pair_window + 1), True, progress, "co-occurrence")
    return item_ids, times, items, transitions, cooccurrence, ease_table(events, config, progress)


def ease_table(events: Events, config: StatsConfig, progress: bool = False) -> EaseTable | None:
    """The EASE fits `config.ease` asks for (None: not asked for, or more items than its `max_items`)."""
    if config.ease is None or not 2 <= events.n_items <= config.ease.max_items:
        return None
    return EaseTable.fit(events.user, events.item, events.rank, events.n_items, events.span - 1, config.ease,
                         config.time_mode == "sequence", progress)


__all__ = ["fit_arrays", "ease_table", "ordered_events", "item_table", "pair_tables", "PAIR_EVENTS_PER_RANGE"]
