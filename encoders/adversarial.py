"""FGM-style adversarial training on the item-text embeddings (Miyato et al., 2017; FGM as used for BERT
fine-tuning): the loss is also taken at features pushed a small step in the direction that raises it most, so
the towers learn a ranking that a slight change of an item's text representation does not overturn."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def adversarial_loss(objective: Callable[[torch.Tensor], torch.Tensor], features: torch.Tensor,
                     eps: float) -> torch.Tensor:
    """Mean of `objective(features)` and `objective(features + r)`, where each row of r is the gradient of the
    clean loss with respect to that row, scaled to `eps` × the row's own norm (relative, so ε means the same for
    any backbone). Gradients reach the parameters through both terms; r itself is a constant."""
    delta = torch.zeros_like(features, requires_grad=True)
    clean = objective(features + delta)
    (grad,) = torch.autograd.grad(clean, delta, retain_graph=True)
    step = eps * features.detach().norm(dim=-1, keepdim=True) * F.normalize(grad, dim=-1)
    return 0.5 * (clean + objective(features + step))
