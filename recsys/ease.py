"""EASE item–item weights for the re-ranker (Steck, "Embarrassingly Shallow Autoencoders", WWW 2019), point in time.

EASE fits B = argmin ‖X − XB‖² + λ‖B‖² with diag(B) = 0 over the binary user × item matrix X of the events, in
closed form: P = (XᵀX + λI)⁻¹, B = −P / diag(P). A history's score of item j is Σ_{h ∈ history} B[h, j]: what a
regression over whole histories learns, which the pair counts (items a few steps apart) do not hold.

Point in time, as every statistic: each fit counts only the events strictly before its cut, and a query uses the
latest fit whose cut is not after it. In absolute time `fits` fits are made, cut at quantiles of time (by default of
each user's latest event time, where the users' next queries, the valid step the re-ranker learns from, begin); the
last one counts every event (what serving and the test step use), and a query before the first cut has no score
(NaN). In sequence time one fit counts every event, and a query inside the train split (a negative step offset) has
none. Only each row's `neighbours` largest weights are kept ([fits, items, neighbours] columns and weights), so a
bundle holds fits × items × neighbours × 8 bytes, and the dense n × n inverse limits EASE to catalogues of
`max_items` items with events (above that no fit is made, and the re-ranker goes without the feature).

Off by default (`RankerConfig.ease`): measured on validation it is level on amazon-scientific and within noise on
movielens-100k (benchmarks/EXPERIMENTS.md "EASE scores in the re-ranker").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field
from tqdm.auto import tqdm

from recsys.config import FrozenModel


ROWS_AT_ONCE = 1024
"""Rows of B searched for their largest weights at once."""


class EaseConfig(FrozenModel):
    """How the EASE weights are fitted and kept (saved with the statistics)."""

    # λ 200 of 100 / 200 / 500: the best on validation on both datasets (benchmarks/EXPERIMENTS.md "EASE")
    l2: float = Field(200.0, gt=0, description="ridge weight λ")
    neighbours: int = Field(100, ge=1, description="largest weights kept per item")
    fits: int = Field(10, ge=1, description="absolute time: fits cut at quantiles of `cut_at` (the last one counts "
                      "every event); sequence time makes one")
    cut_at: Literal["users", "events"] = Field(
        "users", description="absolute time: the cuts' quantiles are of each user's latest event time (where the "
        "users' next queries begin) or of every event's")
    max_items: int = Field(10_000, ge=2, description="no EASE above this many items with events (the inverse of "
                           "a dense n × n matrix: ~13 GB of float64 work space at 20,000)")


def ease_weights(users: np.ndarray, items: np.ndarray, n_items: int, l2: float) -> np.ndarray:
    """B [n_items, n_items] float32 with a zero diagonal, from (user code, item code) events (repeats count once)."""
    from scipy import sparse

    n_users = int(users.max(initial=-1)) + 1
    x = sparse.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    x.data[:] = 1.0  # duplicates were summed: binary
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices(n_items)] += l2
    inverse = np.linalg.inv(gram)
    del gram
    weights = inverse / -np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)


def largest(weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's `k` largest entries: (columns int32 [n, k], values float32 [n, k]), zero weights padding rows
    with fewer than k other items."""
    n = weights.shape[0]
    keep = min(k, n)
    columns = np.zeros((n, keep), np.int32)
    for start in range(0, n, ROWS_AT_ONCE):  # argpartition's int64 work space is rows × n
        block = weights[start:start + ROWS_AT_ONCE]
        columns[start:start + len(block)] = np.argpartition(-block, keep - 1, axis=1)[:, :keep]
    values = np.take_along_axis(weights, columns, axis=1)
    if keep < k:
        columns = np.pad(columns, ((0, 0), (0, k - keep)))
        values = np.pad(values, ((0, 0), (0, k - keep)))
    return columns.astype(np.int32), values.astype(np.float32)


def fit_cuts(users: np.ndarray, ranks: np.ndarray, n_times: int, config: EaseConfig,
             sequence_time: bool) -> np.ndarray:
    """Each fit's cut as a time rank (it counts the events of smaller rank): quantiles of the time ranks just after
    each user's latest event (`cut_at` users) or of every event's (events), the last one `n_times` (every event);
    one cut in sequence time."""
    if sequence_time or not len(ranks):
        return np.array([n_times], np.int64)
    if config.cut_at == "users":
        latest = np.zeros(int(users.max()) + 1, np.int64)
        np.maximum.at(latest, users, ranks)
        points = latest + 1  # a user's next query sees every event up to their latest
    else:
        points = ranks
    inner = np.quantile(points, np.arange(1, config.fits) / config.fits, method="higher").astype(np.int64)
    return np.unique(np.append(inner[(inner > 0) & (inner < n_times)], n_times))


@dataclass(frozen=True)
class EaseTable:
    """The kept weights of each fit: fit f counts the events whose time rank is below `cuts[f]`."""

    cuts: np.ndarray  # int64 [fits], increasing
    columns: np.ndarray  # int32 [fits, items, neighbours]
    weights: np.ndarray  # float32 [fits, items, neighbours]

    @classmethod
    def fit(cls, users: np.ndarray, items: np.ndarray, ranks: np.ndarray, n_items: int, n_times: int,
            config: EaseConfig, sequence_time: bool, progress: bool = False) -> "EaseTable":
        """Fits over (user code, item code, time rank) events, one per cut."""
        cuts = fit_cuts(users, ranks, n_times, config, sequence_time)
        columns = np.zeros((len(cuts), n_items, config.neighbours), np.int32)
        weights = np.zeros((len(cuts), n_items, config.neighbours), np.float32)
        for f, cut in enumerate(tqdm(cuts.tolist(), desc="EASE fits", unit="fit", disable=not progress)):
            before = ranks < cut
            columns[f], weights[f] = largest(ease_weights(users[before], items[before], n_items, config.l2),
                                             config.neighbours)
        return cls(cuts, columns, weights)

    def fit_of(self, ranks: np.ndarray) -> np.ndarray:
        """The fit each query time rank reads (-1: none, it is before the first cut)."""
        return np.searchsorted(self.cuts, np.asarray(ranks, np.int64), side="right") - 1

    def scores(self, sources: np.ndarray, candidates: np.ndarray, query: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        """float64 [rows]: Σ over each query's distinct history items (`sources` [queries, depth] item codes, -1:
        none) of the weight to its row's candidate (`candidates` item codes, -1: none → 0; `query` the row's
        query), from the fit of the query's time rank (`ranks` [queries]; none: NaN)."""
        n_queries, n_items = sources.shape[0], self.columns.shape[1]
        fit = self.fit_of(ranks)
        q, d = np.nonzero((sources >= 0) & (fit >= 0)[:, None])
        keys = np.unique(q * n_items + sources[q, d])  # an item twice in a history counts once (binary X)
        owner, item = keys // n_items, keys % n_items
        columns, weights = self.columns[fit[owner], item], self.weights[fit[owner], item]  # [pairs, neighbours]
        sums = np.bincount((owner[:, None] * n_items + columns).ravel(), weights.ravel().astype(np.float64),
                           minlength=n_queries * n_items)
        known = candidates >= 0
        out = np.zeros(len(candidates))
        out[known] = sums[query[known] * n_items + candidates[known]]
        out[fit[query] < 0] = np.nan
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays to save (`from_arrays` reads them back)."""
        return {"ease_cuts": self.cuts, "ease_columns": self.columns, "ease_weights": self.weights}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "EaseTable | None":
        """The table saved by `arrays` (None: the statistics have none)."""
        if "ease_cuts" not in arrays:
            return None
        return cls(np.asarray(arrays["ease_cuts"]), arrays["ease_columns"], arrays["ease_weights"])


__all__ = ["EaseConfig", "EaseTable", "ease_weights", "largest", "fit_cuts"]
