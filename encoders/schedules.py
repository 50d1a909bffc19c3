"""Learning-rate schedules of the training loop and the item–item pre-stage."""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, total: int, warmup_ratio: float) -> float:
    """The learning-rate factor at `step`: linear warm-up over `warmup_ratio` of `total` steps, then cosine decay to
    zero at `total`."""
    warmup = max(1, int(warmup_ratio * total))
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(total, 1))))


def warmup_cosine(optimizer: torch.optim.Optimizer, total: int,
                  warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_ratio` of `total` steps, then cosine decay to zero at `total`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine_factor(s, total, warmup_ratio))
