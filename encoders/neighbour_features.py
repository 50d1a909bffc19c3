"""Item text features with those of the item's neighbours in the training sequences, a collaborative signal for
the text part of the item vectors (the ID block carries its own): mixed in at a fixed share
(`TowerConfig.neighbour_mix`) or beside them as a second input block of the item head, which learns how much to use
it (`TowerConfig.neighbour_features`). With a share, items that have no neighbours, and items added after training,
can borrow the neighbours of their text-nearest items that have some (`TowerConfig.neighbour_borrow`,
`BorrowedShare`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recsys.config import TowerConfig


BORROW_ROWS_PER_BLOCK = 4096  # rows whose similarities to the borrowed share's keys are computed at once
TIE_TOLERANCE = 1e-6  # k-th and (k+1)-th key similarities this close: which one top-k keeps is not defined


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


class BorrowedShare(nn.Module):
    """The neighbour share of an item the training sequences give no neighbours (or one added after training),
    borrowed from the `k` items nearest to it by text (cosine on own features) among those that have neighbours:
    the mean of their neighbours' mean features, mixed in at `share`, as if the item stood beside what they stand
    beside. Its banks (those items' own features, to find them; their neighbours' means, to borrow) are buffers of
    the towers: saved with them, so serving (upserts, free-text queries, the ONNX item tower) computes a new item
    as training computed an item without neighbours."""

    def __init__(self, k: int, share: float, hidden: int) -> None:
        super().__init__()
        self.k, self.share = k, share
        # filled by training (`fill`), sized by a load
        self.register_buffer("keys", torch.zeros(0, hidden))  # own features of the items with neighbours
        self.register_buffer("values", torch.zeros(0, hidden))  # ... and their neighbours' mean features
        # the keys L2-normalised once (derived, not saved): a text query compares itself with all of them
        self.register_buffer("unit_keys", torch.zeros(0, hidden), persistent=False)

    def reserve(self, n: int) -> None:
        """Size the banks for `n` items before training wraps the towers (data-parallel training keeps a reference
        to every buffer), so each `fill` after it copies in place."""
        self.keys = torch.zeros(n, self.keys.shape[1], device=self.keys.device)
        self.values = torch.zeros_like(self.keys)
        self.unit_keys = torch.zeros_like(self.keys)

    def fill(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """The banks [n, hidden]: own features and neighbours' means of the items that have neighbours (in place
        when the size holds)."""
        for name, features in (("keys", keys), ("values", values)):
            bank, features = getattr(self, name), features.detach().float()
            if bank.shape == features.shape:
                bank.copy_(features)
            else:
                setattr(self, name, features.to(bank.device, copy=True))
        self._normalise_keys()

    def _normalise_keys(self) -> None:
        unit = F.normalize(self.keys, dim=-1)
        if self.unit_keys.shape == unit.shape:
            self.unit_keys.copy_(unit)  # in place, as `fill`
        else:
            self.unit_keys = unit

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in ("keys", "values"):
            saved, bank = state_dict.get(prefix + name), getattr(self, name)
            if saved is not None and saved.shape != bank.shape:
                setattr(self, name, torch.empty_like(saved, device=bank.device))  # the saved catalogue's size
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._normalise_keys()

    def means(self, features: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """The borrowed mean of each row [n, hidden]: the mean `values` of its `k` nearest `keys`; `exclude`: per
        row, a bank row it may not borrow from (itself, when training computes a warm item as a new one), or −1."""
        sims = F.normalize(features.float(), dim=-1) @ self.unit_keys.T
        if exclude is not None:
            rows = torch.nonzero(exclude >= 0).flatten()
            sims[rows, exclude[rows]] = float("-inf")
        top = sims.topk(min(self.k, len(self.keys) - (exclude is not None)), dim=-1).indices
        return self.values[top].mean(dim=1).to(features.dtype)

    def tied(self, features: torch.Tensor) -> torch.Tensor:
        """bool [n]: rows whose `k` nearest keys are not unique (the k-th and the (k+1)-th similarity tie within
        TIE_TOLERANCE, as duplicate item texts do), so their borrowed mean depends on how top-k breaks the tie:
        torch leaves it unspecified, ONNX Runtime keeps the lower index."""
        if len(self.keys) <= self.k:
            return torch.zeros(len(features), dtype=torch.bool)
        sims = F.normalize(features.float(), dim=-1) @ self.unit_keys.T
        top = sims.topk(self.k + 1, dim=-1).values
        return (top[:, self.k - 1] - top[:, self.k]) <= TIE_TOLERANCE

    def forward(self, features: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """(1 − share) × own + share × the borrowed mean; own features alone while the bank is too small."""
        if len(self.keys) <= self.k:
            return features
        return features * (1 - self.share) + self.means(features, exclude) * self.share

    @classmethod
    def for_tower(cls, config: TowerConfig, hidden: int) -> BorrowedShare | None:
        """The tower config's borrowed share (None without `neighbour_borrow` or without a share to borrow, so a
        preset's value stays inert when a --config turns the share off): neighbour_mix × k / (k + shrink), what a
        warm item seen beside k others gets."""
        k = config.neighbour_borrow
        if not k or not config.neighbour_mix:
            return None
        return cls(k, config.neighbour_mix * k / (k + config.neighbour_shrink), hidden)


class NeighbourFeatures:
    """The item head's input from the items' own features [n, hidden]: with a `share`, (1 − share) × own + share ×
    the count-weighted mean features of the item's neighbours (with `shrink` s, the item's share is share × n /
    (n + s), n its neighbour count, so an item seen beside few others keeps more of its own); with `block`, [own,
    that mean] side by side ([n, 2 × hidden]). An item without neighbours keeps its own features (in both blocks).
    The means are read off a bank of the whole catalogue's features (`refresh`) and then stay fixed, as the ID
    embeddings do, until the next refresh."""

    def __init__(self, sequences: Sequence[np.ndarray], n_items: int, share: float = 0.0,
                 block: bool = False, shrink: float = 0.0, borrow: BorrowedShare | None = None) -> None:
        """`borrow`: the towers' borrowed share for items without neighbours (its bank is refilled at each
        `refresh`); without it they keep their own features."""
        if block == (share > 0):
            raise ValueError("NeighbourFeatures needs a share or the block, not both")
        if shrink and block:
            raise ValueError("NeighbourFeatures: shrink applies to a share, not to the block")
        if borrow is not None and block:
            raise ValueError("NeighbourFeatures: a borrowed share needs a share, not the block")
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
        self.borrow = borrow
        if borrow is not None:
            borrow.reserve(int((degree > 0).sum()))
        # each catalogue row's row in the borrowed share's bank (the items with neighbours, in order), or −1
        self.bank_rows = torch.as_tensor(np.where(degree > 0, np.cumsum(degree > 0) - 1, -1))

    @classmethod
    def for_tower(cls, sequences: Sequence[np.ndarray], n_items: int, config: TowerConfig,
                  borrow: BorrowedShare | None = None) -> NeighbourFeatures | None:
        """The tower config's neighbour features (None when it uses none); `borrow`: the towers' borrowed share."""
        if not config.neighbour_mix and not config.neighbour_features:
            return None
        return cls(sequences, n_items, share=config.neighbour_mix, block=config.neighbour_features,
                   shrink=config.neighbour_shrink if config.neighbour_mix else 0.0,  # a share's, not the block's
                   borrow=borrow)

    def refresh(self, bank: torch.Tensor) -> None:
        """Neighbour means from `bank` [n_items, hidden], the catalogue's current features (and, with a borrowed
        share, its banks: the own features and neighbours' means of the items that have neighbours)."""
        means = self.weights @ bank.detach().float().cpu().numpy()
        self.means = torch.as_tensor(np.asarray(means, np.float32), device=bank.device)
        self.has_neighbours = self.has_neighbours.to(bank.device)  # kept beside the means: no copy per step
        self.bank_rows = self.bank_rows.to(bank.device)
        if self.shares is not None:
            self.shares = self.shares.to(bank.device)
        if self.borrow is not None:
            self.borrow.fill(bank[self.has_neighbours], self.means[self.has_neighbours])

    def as_unseen(self, features: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The head's input for catalogue `rows` with these own `features` computed as items unseen in training
        are: their own features (in both blocks with `block`), no neighbours' share, or the borrowed share (never
        from the item itself)."""
        if self.block:
            return own_features_twice(features)
        if self.borrow is None:
            return features
        return self._borrowed(features, self.bank_rows.to(features.device)[rows])

    def _borrowed(self, features: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """The borrowed share for many rows, a block of rows at a time (each block's similarities to the bank are
        [rows, bank items])."""
        step = BORROW_ROWS_PER_BLOCK
        return torch.cat([self.borrow(features[i:i + step], None if exclude is None else exclude[i:i + step])
                          for i in range(0, len(features), step)]) if len(features) else features

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
        mixed = features * (1 - share) + means * share
        loners = torch.nonzero(~has[:, 0]).flatten()
        if self.borrow is None or not len(loners):
            return mixed
        return mixed.index_put((loners,), self._borrowed(features[loners]))  # out of place: gradients flow to both
