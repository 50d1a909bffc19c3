"""Train / valid / test splits: the files' own split where present, else leave-one-out by time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from recsys.data.dataset import Dataset
from recsys.errors import DataError
from recsys.text_format import plural

EXAMPLE_SCHEMA = {"user_id": pl.Utf8, "history": pl.List(pl.Utf8), "target": pl.Utf8, "timestamp": pl.Int64}


@dataclass(frozen=True)
class SplitData:
    """`train`: interactions a model may learn from (user_id, item_id, timestamp).
    `valid` / `test`: one next-item example per user (user_id, history oldest first, target, timestamp)."""

    train: pl.DataFrame
    valid: pl.DataFrame
    test: pl.DataFrame

    def examples(self, split: str) -> pl.DataFrame:
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        return self.valid if split == "valid" else self.test

    def train_histories(self) -> dict[str, list[str]]:
        """Each user's training sequence, oldest first."""
        return user_sequences(self.train)

    def require_examples(self, splits: Sequence[str], purpose: str) -> None:
        """DataError naming each of `splits` that holds no example (`purpose`: what needs them, for the message),
        instead of metrics of 0 over nothing or an epoch chosen on no data."""
        empty = [name for name in splits if self.examples(name).height == 0]
        if empty:
            raise DataError(f"the {' and '.join(empty)} {plural(len(empty), 'split')} of this dataset "
                            f"{plural(len(empty), 'is', 'are')} empty, and {purpose} needs examples there: "
                            "leave-one-out gives one valid and one test example to each user with at least 3 "
                            "interactions; a dataset with its own split has the examples its files hold")


def ordered_interactions(interactions: pl.DataFrame) -> pl.DataFrame:
    """Sort by user then time, keeping the file order for equal timestamps (stable)."""
    return interactions.with_row_index("_order").sort(["user_id", "timestamp", "_order"]).drop("_order")


def user_sequences(interactions: pl.DataFrame) -> dict[str, list[str]]:
    """Every user's item sequence, oldest first."""
    grouped = ordered_interactions(interactions).group_by("user_id", maintain_order=True).agg(pl.col("item_id"))
    return dict(zip(grouped["user_id"].to_list(), grouped["item_id"].to_list()))


def _with_position(interactions: pl.DataFrame) -> pl.DataFrame:
    ordered = ordered_interactions(interactions)
    return ordered.with_columns(
        pl.int_range(pl.len()).over("user_id").alias("_pos"),
        pl.len().over("user_id").alias("_n"),
    )


def _examples(ordered: pl.DataFrame, target_mask: pl.Expr) -> pl.DataFrame:
    """One example per target row: the user's items strictly before it form the history."""
    histories = ordered.group_by("user_id", maintain_order=True).agg(pl.col("item_id").alias("_seq"))
    targets = ordered.filter(target_mask).join(histories, on="user_id", how="left")
    return targets.select(
        "user_id",
        pl.col("_seq").list.head(pl.col("_pos")).alias("history"),
        pl.col("item_id").alias("target"),
        "timestamp",
    ).cast(EXAMPLE_SCHEMA)


def leave_one_out(interactions: pl.DataFrame) -> SplitData:
    """Per user by time: last item → test, second to last → valid, the rest → train.

    Users with fewer than 3 interactions have no valid/test example and stay in train.
    """
    ordered = _with_position(interactions)
    eligible = pl.col("_n") >= 3
    test_mask = eligible & (pl.col("_pos") == pl.col("_n") - 1)
    valid_mask = eligible & (pl.col("_pos") == pl.col("_n") - 2)
    train = ordered.filter(~(test_mask | valid_mask)).select("user_id", "item_id", "timestamp")
    return SplitData(train, _examples(ordered, valid_mask), _examples(ordered, test_mask))


def files_split(interactions: pl.DataFrame) -> SplitData:
    """Use the `split` column the importer kept from the source files."""
    ordered = _with_position(interactions)
    train = ordered.filter(pl.col("split") == "train").select("user_id", "item_id", "timestamp")
    return SplitData(
        train,
        _examples(ordered, pl.col("split") == "valid"),
        _examples(ordered, pl.col("split") == "test"),
    )


def hold_out_items(split: SplitData, share: float, seed: int = 0) -> tuple[SplitData, list[str]]:
    """A simulated flow of new items: a seeded `share` of the items that occur in the train split lose their
    train events, so the models learn nothing about them and every valid / test example whose target is one of
    them joins the cold-start slice. Histories are left as they are (events on new items reach a shop's live
    histories before any retraining). Returns the split and the held-out item ids, sorted."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the held-out share of items must be in [0, 1), got {share}")
    items = split.train["item_id"].unique().sort()
    count = int(round(share * items.len()))
    if count == 0:
        return split, []
    held = items.sample(count, seed=seed).sort()
    train = split.train.filter(~pl.col("item_id").is_in(held.implode()))
    return SplitData(train, split.valid, split.test), held.to_list()


def split_dataset(dataset: Dataset) -> SplitData:
    """The dataset's own split when it has one, else leave-one-out by time."""
    return files_split(dataset.interactions) if dataset.has_split else leave_one_out(dataset.interactions)


def last_event_time(split: SplitData, through: str) -> int | None:
    """The latest timestamp among `events_through(split, through)`, read from the split's frames without joining
    them (None when there is none)."""
    frames = {"train": [split.train], "valid": [split.train, split.valid],
              "test": [split.train, split.valid, split.test]}[through]
    times = [frame["timestamp"].max() for frame in frames if frame.height]
    return max(times) if times else None


def events_through(split: SplitData, through: str) -> pl.DataFrame:
    """The interactions (user_id, item_id, timestamp) up to and including the `through` step: the train split,
    + every valid example's target event ("valid"), + every test example's too ("test")."""
    if through not in ("train", "valid", "test"):
        raise ValueError(f"through must be 'train', 'valid' or 'test', got {through!r}")
    steps = {"train": [], "valid": [split.valid], "test": [split.valid, split.test]}[through]
    columns = split.train.select("user_id", "item_id", "timestamp")
    targets = [s.select("user_id", pl.col("target").alias("item_id"), "timestamp").cast(columns.schema)
               for s in steps]
    return pl.concat([columns, *targets])
