"""What ends a training run, and the warning when the time budget, not early stopping, did."""

from __future__ import annotations

import time
from typing import Literal, get_args

# what ended a training run (`TrainResult.stopped`, saved as the manifest's `train.stopped`)
StopReason = Literal["early stopping", "epochs", "refit epochs", "time budget"]
STOP_REASONS: tuple[str, ...] = get_args(StopReason)


def stop_reason(patience_ran_out: bool, refit_done: bool, out_of_time: bool) -> StopReason | None:
    """Why training stops after this epoch (None: it goes on); early stopping and a refit's count come before the
    time budget, so "time budget" means the budget cut training short."""
    if patience_ran_out:
        return "early stopping"
    if refit_done:
        return "refit epochs"
    return "time budget" if out_of_time else None


def over_budget(started: float, max_minutes: float | None) -> bool:
    """Whether a run begun at `started` (`time.perf_counter()`) has used up its `max_minutes` (None / 0: no
    budget)."""
    return bool(max_minutes) and time.perf_counter() - started > 60 * max_minutes


def time_budget_message(max_minutes: float, epochs_done: int, max_epochs: int) -> str:
    """The warning printed when the wall-clock budget, not early stopping, ended training."""
    return (f"training stopped after epoch {epochs_done} of at most {max_epochs}: its {max_minutes:g}-minute time "
            "budget (max_minutes) ran out before early stopping did, so a slower or busier machine trains fewer "
            "epochs and gets a weaker model; raise max_minutes (`recsys train --max-minutes`) to train to convergence")
