"""Pooling token states into one vector per text."""

from __future__ import annotations

import torch


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states where attention_mask is 1."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, method: str) -> torch.Tensor:
    """'mean' or 'cls' pooling."""
    if method == "mean":
        return mean_pool(hidden, attention_mask)
    if method == "cls":
        return hidden[:, 0]
    raise ValueError(f"unknown pooling {method!r}")
