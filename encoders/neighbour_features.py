"""Item text features with those of the item's neighbours in the training sequences, a collaborative signal for
the text part of the item vectors (the ID block carries its own): mixed in at a fixed share
(`TowerConfig.neighbour_mix`) or beside them as a second input block of the item head, which learns how much to use
it (`TowerConfig.neighbour_features`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from recsys.config import TowerConfig


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
    """The item head's input from the items' own features [n, hidden]: with a `share`, (1 − share) × own + share ×
    the count-weighted mean features of the item's neighbours (with `shrink` s, the item's share is share × n /
    (n + s), n its neighbour count, so an item seen beside few others keeps more of its own); with `block`, [own,
    that mean] side by side ([n, 2 × hidden]). An item without neighbours keeps its own features (in both blocks).
    The means are read off a bank of the whole catalogue's features (`refresh`) and then stay fixed, as the ID
    embeddings do, until the next refresh."""

    def __init__(self, sequences: Sequence[np.ndarray], n_items: int, share: float = 0.0,
                 block: bool = False, shrink: float = 0.0) -> None:
        if block == (share > 0):
            raise ValueError("NeighbourFeatures needs a share or the block, not both")
        if shrink and block:
            raise ValueError("NeighbourFeatures: shrink applies to a share, not to the block")
        counts = neighbour_counts(sequences, n_items)
        degree = np.asarray(counts.sum(axis=1)).ravel()
        inverse = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
        self.weights = sp.diags(inverse.astype(np.float32)) @ counts  # rows sum to 1 or 0
        self.has_neighbours = torch.as_tensor(degree > 0)
        self.share, self.block = share, block
        # with `shrink` s, each item's own share: share × n / (n + s), n its neighbour count (0 without neighbours)
        self.shares = torch.as_tensor(np.divide(np.float32(share) * degree, degree + shrink,
                                                out=np.zeros_like(degree), where=degree > 0)) if shrink else None
        self.means: torch.Tensor | None = None

    @classmethod
    def for_tower(cls, sequences: Sequence[np.ndarray], n_items: int,
                  config: TowerConfig) -> NeighbourFeatures | None:
        """The tower config's neighbour features (None when it uses none)."""
        if not config.neighbour_mix and not config.neighbour_features:
            return None
        return cls(sequences, n_items, share=config.neighbour_mix, block=config.neighbour_features,
                   shrink=config.neighbour_shrink if config.neighbour_mix else 0.0)  # a share's, not the block's

    def refresh(self, bank: torch.Tensor) -> None:
        """Neighbour means from `bank` [n_items, hidden], the catalogue's current features."""
        means = self.weights @ bank.detach().float().cpu().numpy()
        self.means = torch.as_tensor(np.asarray(means, np.float32), device=bank.device)
        self.has_neighbours = self.has_neighbours.to(bank.device)  # kept beside the means: no copy per step
        if self.shares is not None:
            self.shares = self.shares.to(bank.device)

    def as_unseen(self, features: torch.Tensor) -> torch.Tensor:
        """The head's input for items with these own `features` computed as items unseen in training are: their own
        features (in both blocks with `block`), no neighbours' share."""
        return own_features_twice(features) if self.block else features

    def __call__(self, features: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The head's input for catalogue `rows` given their own `features` [len(rows), hidden]."""
        if self.means is None:
            raise RuntimeError("NeighbourFeatures.refresh must see the catalogue's features first")
        has = self.has_neighbours.to(features.device)[rows][:, None]  # a no-op move once refresh placed it
        means = self.means[rows].to(features.dtype)  # zero rows for items without neighbours
        if self.block:
            return torch.cat([features, torch.where(has, means, features)], dim=-1)
        if self.shares is None:
            share = self.share * has.to(features.dtype)
        else:
            share = self.shares.to(features.device)[rows][:, None].to(features.dtype)
        return features * (1 - share) + means * share
