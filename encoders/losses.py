"""The towers' training loss beyond plain cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0,
                           allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of `logits` [N, C] against `targets` [N]; with `smoothing` ε, (1 − ε) × that + ε × the
    mean negative log-probability over the `allowed` classes (bool [C]; default all): label smoothing that leaves
    the masked-out classes (unseen items) out of the uniform share, so it stays finite and means the same whatever
    the mask."""
    if smoothing == 0.0:
        return F.cross_entropy(logits, targets)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    nll = -log_probs.gather(1, targets[:, None]).squeeze(1)
    if allowed is None:
        uniform = -log_probs.mean(dim=-1)
    else:
        uniform = -(log_probs * allowed[None, :]).sum(dim=-1) / allowed.sum().clamp(min=1)
    return ((1.0 - smoothing) * nll + smoothing * uniform).mean()
