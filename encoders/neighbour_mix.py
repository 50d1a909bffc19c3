"""Item text features mixed with those of the item's neighbours in the training sequences
(`TowerConfig.neighbour_mix`): a collaborative signal that reaches the text block of the item vectors, where the
ID block alone carries one."""

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


class NeighbourMix:
    """features → (1 − share) × features + share × the count-weighted mean features of the item's neighbours, for
    items that have neighbours (the others keep their own). The means are read off a bank of the whole catalogue's
    features (`refresh`) and then stay fixed, as the ID embeddings do, until the next refresh."""

    def __init__(self, sequences: Sequence[np.ndarray], n_items: int, share: float) -> None:
        counts = neighbour_counts(sequences, n_items)
        degree = np.asarray(counts.sum(axis=1)).ravel()
        self.share = share
        inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
        self.weights = sp.diags(inverse.astype(np.float32)) @ counts  # rows sum to 1 or 0
        self.has_neighbours = torch.as_tensor(degree > 0)
        self.means: torch.Tensor | None = None

    def refresh(self, bank: torch.Tensor) -> None:
        """Neighbour means from `bank` [n_items, hidden], the catalogue's current (unmixed) features."""
        means = self.weights @ bank.detach().float().cpu().numpy()
        self.means = torch.as_tensor(np.asarray(means, np.float32), device=bank.device)

    def __call__(self, features: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The mixed features of catalogue `rows` given their own `features` [len(rows), hidden]."""
        if self.means is None:
            raise RuntimeError("NeighbourMix.refresh must see the catalogue's features first")
        share = self.share * self.has_neighbours.to(features.device)[rows].to(features.dtype)[:, None]
        return features * (1 - share) + self.means[rows].to(features.dtype) * share
