"""Refreshing a re-ranker's statistics with later events: the same ranker and feature settings, the
popularity / transition / co-occurrence counts refit on the interactions through a later step.

The re-ranker learns on the valid step with statistics of the train split (so its features never count the
answers). A shop serving it afterwards knows more: every user's valid-step event before the test step, and
every event after it. Refreshing counts them; `StatsConfig.through` records how far, and a split whose targets
are counted is refused for evaluation (`StatsConfig.check_unseen`).

A serving shop knows more still: the events its API recorded since the bundle was built (the event store).
`live_events` turns them into interaction rows after each user's dataset events (sequence time: the next
positions; absolute time: their recorded timestamps), so items upserted live get counts too, and
`StatsConfig.live_events` records how many (such statistics evaluate no split)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timezone

import polars as pl

from recsys.catalogue import Catalogue
from recsys.errors import DataError
from recsys.event_log import LATEST_TIMESTAMP
from recsys.features import FeatureBuilder
from recsys.ranker import Reranker
from recsys.splits import SplitData, events_through
from recsys.stats import InteractionStats, StatsConfig
from recsys.store import EventRow, event_frame_of
from recsys.text_format import counted, plural


def live_frame(rows: Sequence[EventRow], kinds: Collection[str] | None = None) -> pl.DataFrame:
    """Event rows (seq, user_id, item_id, kind, ts) as the frame an event store's `event_frame` reads, only
    `kinds` when given."""
    frame = event_frame_of(rows)
    return frame.filter(pl.col("kind").is_in(list(kinds))) if kinds is not None else frame


def live_events(events: pl.DataFrame, live: pl.DataFrame, time_mode: str) -> pl.DataFrame:
    """`live` (an event store's `event_frame`, or a `live_frame`) as interaction rows (user_id, item_id, timestamp)
    that follow `events`: in sequence time each user's live events take the positions after the user's last
    dataset event (0, 1, … for a new user), in seq order; in absolute time they keep their recorded time (seconds,
    floored), which must be the dataset's clock."""
    ordered = live.sort("seq")
    if time_mode == "sequence":
        after = events.group_by("user_id").agg((pl.col("timestamp").max() + 1).alias("_next"))
        stamp = (pl.col("_next").fill_null(0) + pl.int_range(pl.len()).over("user_id")).alias("timestamp")
        ordered = ordered.join(after, on="user_id", how="left", maintain_order="left").with_columns(stamp)
    else:
        late = ordered.filter(pl.col("ts") > LATEST_TIMESTAMP)
        if late.height:  # stored before the API refused them (e.g. a millisecond clock's values)
            seq, ts = late.row(0)[0], late["ts"][0]
            raise DataError(f"{counted(late.height, 'stored event')} {plural(late.height, 'has', 'have')} a "
                            "timestamp past the year 9999 in epoch seconds "
                            f"(e.g. seq {seq}: {ts:g}; milliseconds?): they cannot be counted at a time; remove them "
                            f"from the event store (SQLite: DELETE FROM events WHERE ts > {LATEST_TIMESTAMP}) or "
                            "refresh without --store")
        ordered = ordered.with_columns(pl.col("ts").floor().alias("timestamp"))
    return ordered.select("user_id", "item_id", "timestamp").cast(events.select("user_id", "item_id",
                                                                                 "timestamp").schema)


def refreshed(reranker: Reranker, split: SplitData, through: str, progress: bool = False,
              live: pl.DataFrame | None = None, live_through_seq: int | None = None) -> Reranker:
    """`reranker` with its statistics refit on the events through `through` ("train", "valid" or "test"), and
    after them `live`'s (a `live_frame` of the event store, read through `live_through_seq`: default its last
    row's seq), with its own statistics settings (time mode, windows) otherwise."""
    events = events_through(split, through)
    update: dict = {"through": through, "live_events": 0, "live_through_seq": 0}  # (none, unless `live` has some)
    if live is not None and live.height:
        events = pl.concat([events, live_events(events, live, reranker.stats.config.time_mode)])
        last = live_through_seq if live_through_seq is not None else int(live["seq"].max())
        update |= {"live_events": live.height, "live_through_seq": last}
    config = reranker.stats.config.model_copy(update=update)
    return with_parts(reranker, reranker.builder.catalogue, InteractionStats.fit(events, config, progress))


def with_parts(reranker: Reranker, catalogue: Catalogue, stats: InteractionStats) -> Reranker:
    """The same ranker and feature settings over `catalogue` (its item vectors: e.g. refit towers') and
    `stats`."""
    return Reranker(reranker.ranker, FeatureBuilder(catalogue, stats, reranker.config.features), reranker.config)


FUTURE_TOLERANCE_S = 86_400
"""A live event timed more than this after the refresh's clock ("now") is in the future (a day: clock skew)."""


def live_time_warnings(end: float | None, live: pl.DataFrame, config: StatsConfig, now: float) -> list[str]:
    """What a user should hear about the live events' times (absolute time only; in sequence time they take the
    positions after each user's events), `end` being the dataset's last event time (`splits.last_event_time`).
    Every query is asked just after the last event the statistics hold, so live events timed in the future, or
    long after the dataset's last event, move every query's clock there: the recent popularity and trend
    (`config.recent_window`) then count those live events only."""
    if config.time_mode != "absolute" or live.height == 0 or end is None:
        return []
    day = lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d")  # noqa: E731
    warnings = []
    future = live.filter(pl.col("ts") > now + FUTURE_TOLERANCE_S)
    if future.height:
        warnings.append(f"{counted(future.height, 'live event')} {plural(future.height, 'is', 'are')} timed after "
                        f"now (the latest on {day(float(future['ts'].max()))}): every query is asked after it")
    end, start = float(end), float(live["ts"].min())
    if start - end > config.recent_window:
        warnings.append(f"the live events start {(start - end) / 86_400:,.0f} days after the dataset's last event "
                        f"({day(end)} → {day(start)}), more than the statistics' recent window "
                        f"({config.recent_window / 86_400:,.1f} days): every query is asked after the last live event, "
                        "so recent popularity and trend count the live events only (a dataset exported just before "
                        "the API went live has no such gap)")
    return warnings


__all__ = ["refreshed", "with_parts", "live_frame", "live_events", "live_time_warnings"]
