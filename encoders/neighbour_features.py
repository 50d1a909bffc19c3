"""The item head's second input block (`TowerConfig.neighbour_features`): the mean text features of the items
next to an item in the training sequences, beside the item's own, so the text part of an item vector carries a
collaborative signal the head learns how much to use."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch


def neighbour_counts(sequences: Sequence[np.ndarray], n_items: int) -> sp.csr_matrix:
    """[n_items, n_items] counts of how often two items stand next to each other in the sequences (either order;
    an item next to itself is not its own neighbour)."""
    pairs = [(s[:-1], s[1:]) for s in sequences if len(s) > 1]
    if not pairs:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    left = np.concatenate([p[0] for p in pairs])
    right = np.concatenate([p[1] for p in pairs])
    keep = left != right
    left, right = left[keep], right[keep]
    rows, cols = np.concatenate([left, right]), np.concatenate([right, left])
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_items, n_items))


def own_features_twice(features: torch.Tensor) -> torch.Tensor:
    """The head's input for an item without neighbours (or added after training): its own features in both
    blocks."""
    return torch.cat([features, features], dim=-1)


class NeighbourFeatures:
    """features [n, hidden] → [n, 2 × hidden]: each item's own features, then the count-weighted mean features of
    its neighbours (its own again where it has none). The means are read off a bank of the whole catalogue's
    features (`refresh`) and then stay fixed, as the ID embeddings do, until the next refresh."""

    def __init__(self, sequences: Sequence[np.ndarray], n_items: int) -> None:
        counts = neighbour_counts(sequences, n_items)
        degree = np.asarray(counts.sum(axis=1)).ravel()
        inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
        self.weights = sp.diags(inverse.astype(np.float32)) @ counts  # rows sum to 1 or 0
        self.has_neighbours = torch.as_tensor(degree > 0)
        self.means: torch.Tensor | None = None

    def refresh(self, bank: torch.Tensor) -> None:
        """Neighbour means from `bank` [n_items, hidden], the catalogue's current features."""
        means = self.weights @ bank.detach().float().cpu().numpy()
        self.means = torch.as_tensor(np.asarray(means, np.float32), device=bank.device)

    def __call__(self, features: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The head's input for catalogue `rows` given their own `features` [len(rows), hidden]."""
        if self.means is None:
            raise RuntimeError("NeighbourFeatures.refresh must see the catalogue's features first")
        has = self.has_neighbours.to(features.device)[rows][:, None]
        return torch.cat([features, torch.where(has, self.means[rows].to(features.dtype), features)], dim=-1)
