"""Item text features with those of the item's neighbours in the training sequences, a collaborative signal for
the text part of the item vectors (the ID block carries its own): mixed in at a fixed share
(`TowerConfig.neighbour_mix`) or beside them as a second input block of the item head, which learns how much to use
it (`TowerConfig.neighbour_features`). With a share, items that have no neighbours, and items added after training,
can borrow the neighbours of their text-nearest items that have some (`TowerConfig.neighbour_borrow`,
`BorrowedShare`). The towers keep each trained item's own neighbour share (`OwnNeighbours`), so a new text of a
trained item is mixed with its own neighbours' means, as training mixed it."""

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


def set_buffer(module: nn.Module, name: str, values: torch.Tensor) -> None:
    """`values` into `module`'s buffer `name`: copied in place when its shape holds (training wraps the towers once,
    so a refresh keeps the same tensors), else a copy on the buffer's device."""
    buffer = getattr(module, name)
    if buffer.shape == values.shape:
        buffer.copy_(values)
    else:
        setattr(module, name, values.to(buffer.device, copy=True))


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
            set_buffer(self, name, features.detach().float())
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


class OwnNeighbours(nn.Module):
    """Each trained item's own neighbour share, as the towers' last catalogue bank left it: `shares` [n_items], the
    weight of the neighbours' mean in the item's head input (with a share: neighbour_mix × n / (n + shrink), n its
    neighbour count; with the block: 1), 0 for an item without neighbours; and those neighbours' mean features,
    one row per item with neighbours in catalogue order. With a borrowed share the means are its bank's `values`
    (the same rows, saved with the towers), so only the shares are kept here (4 bytes an item); without one they
    are kept here as float32 (hidden × 4 bytes an item with neighbours). Empty (`saved` False) for towers saved
    before these were, whose trained items' new texts keep a new item's text part.

    Not part of the towers' weights file: `encoders.bundle` writes `state()` into `encoder/OWN_NEIGHBOURS_FILE`
    and `load`s it when the file is there (`encoders.bundle.OWN_NEIGHBOURS_FILE`)."""

    def __init__(self, hidden: int, keeps_means: bool, block: bool) -> None:
        super().__init__()
        self.keeps_means, self.block = keeps_means, block
        # filled by training (`fill`) or a load (`load`); sized 0 until then (non-persistent: their own file)
        self.register_buffer("shares", torch.zeros(0), persistent=False)
        self.register_buffer("means", torch.zeros(0, hidden), persistent=False)
        self.register_buffer("bank_rows", torch.zeros(0, dtype=torch.long), persistent=False)  # derived

    @classmethod
    def for_tower(cls, config: TowerConfig, hidden: int) -> OwnNeighbours | None:
        """The record for a tower config that uses neighbours (None when it uses none)."""
        if not config.neighbour_mix and not config.neighbour_features:
            return None
        borrows = bool(config.neighbour_borrow and config.neighbour_mix)  # as `BorrowedShare.for_tower`
        return cls(hidden, keeps_means=not borrows, block=config.neighbour_features)

    @property
    def saved(self) -> bool:
        """Whether the shares are known (towers trained or loaded with them)."""
        return len(self.shares) > 0

    def reserve(self, n_items: int, n_with: int) -> None:
        """Size the record before training wraps the towers (as `BorrowedShare.reserve`), so `fill` copies in
        place."""
        device = self.shares.device
        self.shares = torch.zeros(n_items, device=device)
        self.bank_rows = torch.zeros(n_items, dtype=torch.long, device=device)
        if self.keeps_means:
            self.means = torch.zeros(n_with, self.means.shape[1], device=device)

    def fill(self, shares: torch.Tensor, means: torch.Tensor) -> None:
        """Each item's share [n_items] (0 without neighbours) and the means of the items with neighbours [n_with,
        hidden] (kept only without a borrowed share, whose bank holds them)."""
        names = ("shares", "means") if self.keeps_means else ("shares",)
        for name, values in zip(names, (shares, means)):
            set_buffer(self, name, values.detach().float())
        self._index()

    def _index(self) -> None:
        has = self.shares > 0
        rows = torch.where(has, torch.cumsum(has.long(), 0) - 1, torch.zeros_like(has, dtype=torch.long))
        set_buffer(self, "bank_rows", rows)

    def state(self) -> dict[str, torch.Tensor]:
        """What a save writes (CPU, contiguous): the shares, and the means when they are kept here."""
        kept = {"shares": self.shares, **({"means": self.means} if self.keeps_means else {})}
        return {k: v.detach().cpu().contiguous() for k, v in kept.items()}

    def load(self, state: dict[str, torch.Tensor], n_items: int, bank_rows: int | None) -> None:
        """Read a saved `state()`; ValueError when it does not fit the towers (`n_items` items, a borrowed bank of
        `bank_rows` rows: None without one)."""
        shares = state.get("shares")
        if shares is None or shares.shape != (n_items,):
            raise ValueError(f"own neighbour shares: expected {n_items} items, found "
                             f"{None if shares is None else tuple(shares.shape)}")
        n_with = int((shares > 0).sum())
        means = state.get("means") if self.keeps_means else None
        if self.keeps_means and (means is None or means.shape != (n_with, self.means.shape[1])):
            raise ValueError(f"own neighbour means: expected {n_with} × {self.means.shape[1]}, found "
                             f"{None if means is None else tuple(means.shape)}")
        if bank_rows is not None and bank_rows != n_with:
            raise ValueError(f"{n_with} items have own neighbours but the borrowed share's bank holds {bank_rows}")
        device = self.shares.device
        self.shares = shares.float().to(device)
        if means is not None:
            self.means = means.float().to(device)
        self._index()

    def clear(self) -> None:
        """Forget the shares: trained items' new texts take a new item's text part, as towers saved before them."""
        self.shares = self.shares.new_zeros(0)
        self.bank_rows = self.bank_rows.new_zeros(0)

    def lookup(self, positions: torch.Tensor, borrowed_means: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(each row's own neighbours' means [n, hidden], its share [n]) for catalogue `positions` (−1: not
        trained); share 0 and a zero mean for rows without neighbours. `borrowed_means`: the borrowed share's
        values, when it holds the means."""
        known = (positions >= 0) & (positions < len(self.shares))
        safe = torch.where(known, positions, torch.zeros_like(positions))
        share = self.shares[safe] * known
        bank = self.means if self.keeps_means else borrowed_means
        if bank is None or not len(bank):  # no item has neighbours
            return self.means.new_zeros(len(positions), self.means.shape[1]), torch.zeros_like(share)
        return bank[self.bank_rows[safe]] * (share > 0)[:, None], share

    def mix(self, features: torch.Tensor, means: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
        """The head's input of rows with own neighbours, as training computes it (`NeighbourFeatures.__call__`):
        [own `features`, the neighbours' `means`] with the block, else (1 − share) × own + share × means."""
        means = means.to(features.dtype)
        if self.block:
            return torch.cat([features, means], dim=-1)
        share = share[:, None].to(features.dtype)
        return features * (1 - share) + means * share


class NeighbourFeatures:
    """The item head's input from the items' own features [n, hidden]: with a `share`, (1 − share) × own + share ×
    the count-weighted mean features of the item's neighbours (with `shrink` s, the item's share is share × n /
    (n + s), n its neighbour count, so an item seen beside few others keeps more of its own); with `block`, [own,
    that mean] side by side ([n, 2 × hidden]). An item without neighbours keeps its own features (in both blocks).
    The means are read off a bank of the whole catalogue's features (`refresh`) and then stay fixed, as the ID
    embeddings do, until the next refresh."""

    def __init__(self, sequences: Sequence[np.ndarray], n_items: int, share: float = 0.0,
                 block: bool = False, shrink: float = 0.0, borrow: BorrowedShare | None = None,
                 own: OwnNeighbours | None = None) -> None:
        """`borrow`: the towers' borrowed share for items without neighbours (its bank is refilled at each
        `refresh`); without it they keep their own features. `own`: the towers' record of each item's own share
        and neighbours' means (refilled at each `refresh`), so they are saved with them."""
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
        self.own = own
        if own is not None:
            own.reserve(n_items, int((degree > 0).sum()))
        # each catalogue row's row in the borrowed share's bank (the items with neighbours, in order), or −1
        self.bank_rows = torch.as_tensor(np.where(degree > 0, np.cumsum(degree > 0) - 1, -1))

    @classmethod
    def for_tower(cls, sequences: Sequence[np.ndarray], n_items: int, config: TowerConfig,
                  borrow: BorrowedShare | None = None, own: OwnNeighbours | None = None) -> NeighbourFeatures | None:
        """The tower config's neighbour features (None when it uses none); `borrow`: the towers' borrowed share;
        `own`: the towers' record of each item's own share."""
        if not config.neighbour_mix and not config.neighbour_features:
            return None
        return cls(sequences, n_items, share=config.neighbour_mix, block=config.neighbour_features,
                   shrink=config.neighbour_shrink if config.neighbour_mix else 0.0,  # a share's, not the block's
                   borrow=borrow, own=own)

    def item_shares(self) -> torch.Tensor:
        """float32 [n_items]: each item's weight on its neighbours' mean, as `__call__` mixes it (the block: 1), 0
        for an item without neighbours."""
        has = self.has_neighbours.float()
        if self.block:
            return has
        return self.shares.float() if self.shares is not None else self.share * has

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
        if self.own is not None:
            self.own.fill(self.item_shares(), self.means[self.has_neighbours])

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
