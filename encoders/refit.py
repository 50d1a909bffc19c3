"""Refitting a trained engine's towers on later events, for serving.

`recsys train` learns the towers on the train split and picks the epoch on the valid step, so the towers a shop
serves never learned from each user's two latest events (the valid and test steps of leave-one-out), and the ID
block of an item seen only there stays untrained. A refit repeats the chosen run on the events through a later
step: the bundle's own training config, exactly its best epoch's number of epochs (the learning-rate schedule
unchanged), the last state kept (no early stopping: the validation step is then training data), and the
zero-shot blend at the weight the run chose. The engine's re-ranker is kept, its statistics refreshed through
the same step over the new item vectors, so `StatsConfig.through` records what the bundle has seen and a split
it learned from is refused for evaluation.
"""

from __future__ import annotations

from recsys.config import TrainConfig
from recsys.errors import BundleError
from recsys.splits import SplitData, events_through

REFIT_STEPS = ("valid", "test")


def refit_split(split: SplitData, through: str) -> SplitData:
    """`split` with its train part extended by every example's target through `through` ("valid": + the valid
    step; "test": + both steps). Its valid and test examples stay, for the trainer's per-epoch log and the
    evaluation of what is still unseen."""
    if through not in REFIT_STEPS:
        raise ValueError(f"through must be one of {REFIT_STEPS}, got {through!r}")
    return SplitData(events_through(split, through).cast(split.train.schema), split.valid, split.test)


def refit_config(train: dict) -> TrainConfig:
    """The config that repeats a bundle's training run (`manifest["train"]`) on more events: its config with
    `refit_epochs` = its best epoch and the zero-shot blend fixed at the weight it chose (none if it chose 0).
    BundleError for runs a refit cannot repeat (seed ensembles, adapters trained last)."""
    config = TrainConfig.model_validate(train["config"])
    if config.ensemble > 1:
        raise BundleError("this bundle serves a seed ensemble; refitting one is not supported (refit a one-tower "
                          "bundle, or train the ensemble again)")
    if config.adapter_phase == "last":
        raise BundleError("this bundle trained its adapters in a last phase after early stopping, which a refit "
                          "without validation cannot repeat")
    best = int(train.get("best_epoch") or 0)
    if best < 1:
        raise BundleError("this bundle's manifest records no best epoch to repeat")
    weight = float((train.get("zero_shot_blend") or {}).get("weight") or 0.0)
    return config.model_copy(update={"refit_epochs": best, "zero_shot_blend": (weight,) if weight else ()})


__all__ = ["REFIT_STEPS", "refit_split", "refit_config"]
