"""More than one candidate source for the re-ranker: beside the towers' top N, the items that most often came
right after the history's last item (train-split transitions) and the most popular items, both counted strictly
before the query's time (the statistics of `recsys.stats`, so training queries inside the train split see no
event of their own future).

Extra candidates get the towers' score for the query (query vector · L2-normalised item vector, what the index
scores), and every list is kept in descending towers' score, so `retrieval_score` / `retrieval_rank` mean the
same for every candidate whatever brought it in."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from recsys.catalogue import REMOVED, CatalogueState
from recsys.features import FeatureBuilder
from recsys.stats import InteractionStats


class CandidateSources:
    """Transition and popularity candidates over the catalogue a feature builder reads (its current state: live
    upserts and deletions included; nothing copied)."""

    def __init__(self, builder: FeatureBuilder, transitions: int, popular: int) -> None:
        self.builder = builder
        self.stats: InteractionStats = builder.stats
        self.transitions, self.popular = transitions, popular
        src, dst, _, cum = self.stats.transitions.rows()  # cumulative per pair over time: its last row is the total
        last = np.append((src[1:] != src[:-1]) | (dst[1:] != dst[:-1]), True) if len(src) else np.zeros(0, bool)
        src, dst, total = src[last], dst[last], cum[last]
        order = np.lexsort((-total, src))
        self.successors = dst[order]  # per source: by all-time count (ties: code), what serving ("now") reads
        self.by_code = dst  # per source: by code (rows sorted by src, dst), what earlier query times read
        self.starts = np.searchsorted(src[order], np.arange(len(self.stats.item_ids) + 1))
        self._rows: tuple[int, np.ndarray] | None = None  # (catalogue version, statistics code → catalogue row)

    def catalogue_rows(self, state: CatalogueState) -> np.ndarray:
        """int64 [statistics items]: each item's row in `state` (-1: not in the catalogue), per state version."""
        cached = self._rows
        if cached is None or cached[0] != state.version:
            codes = self.builder.arrays_of(state).stats_code
            rows = np.full(len(self.stats.item_ids), -1, np.int64)
            alive = np.flatnonzero((codes >= 0) & ((state.flags & REMOVED) == 0))
            rows[codes[alive]] = alive
            cached = self._rows = (state.version, rows)
        return cached[1]

    def extra(self, histories: Sequence[Sequence[str]], times: np.ndarray,
              state: CatalogueState) -> list[np.ndarray]:
        """Per query, rows of `state` of its extra candidates: the successors of its last item by transition
        count, then the popular items, each counted strictly before the query's time (duplicates removed)."""
        catalogue_row = self.catalogue_rows(state)
        out = [np.zeros(0, np.int64) for _ in histories]
        if self.transitions:
            last = self.stats.codes([h[-1] if h else "" for h in histories])
            for q, rows in enumerate(self._successors(last, times, catalogue_row)):
                out[q] = rows
        if self.popular:
            for time in np.unique(times):
                top = self._popular_at(time, catalogue_row)
                for q in np.flatnonzero(times == time):
                    out[q] = np.concatenate([out[q], top[~np.isin(top, out[q])]])
        return out

    def _successors(self, last: np.ndarray, times: np.ndarray, catalogue_row: np.ndarray) -> list[np.ndarray]:
        """A query at the statistics' "now" reads its last item's all-time top successors; a query before it reads
        every successor, counted at its time (ties by code either way): which ones lead all-time depends on later
        events, even its own target's."""
        now = self.stats.query_time(None)
        spans = [(self.starts[c], self.starts[c + 1] if t < now else min(self.starts[c + 1],
                                                                            self.starts[c] + self.transitions))
                 if c >= 0 else (0, 0) for c, t in zip(last.tolist(), times.tolist())]
        lengths = np.array([b - a for a, b in spans], np.int64)
        if not lengths.sum():
            return [np.zeros(0, np.int64) for _ in spans]
        dst = np.concatenate([(self.by_code if t < now else self.successors)[a:b]
                              for (a, b), t in zip(spans, times.tolist())])
        owner = np.repeat(np.arange(len(spans)), lengths)
        counts = self.stats.pair_counts("transitions", last[owner], dst, times[owner])
        out = []
        for q, (start, stop) in enumerate(zip(np.cumsum(lengths) - lengths, np.cumsum(lengths))):
            mine, seen = dst[start:stop], counts[start:stop]
            order = np.argsort(-seen, kind="stable")
            kept = mine[order][seen[order] > 0][:self.transitions]
            rows = catalogue_row[kept]
            out.append(rows[rows >= 0])
        return out

    def _popular_at(self, time: int, catalogue_row: np.ndarray) -> np.ndarray:
        codes = np.arange(len(self.stats.item_ids))
        counts = self.stats.item_counts(codes, np.full(len(codes), time))
        order = np.argsort(-counts, kind="stable")[:self.popular]
        rows = catalogue_row[order[counts[order] > 0]]
        return rows[rows >= 0]

    def widen(self, histories: Sequence[Sequence[str]], queries: np.ndarray, ids: list[list[str]],
              scores: list[list[float]], times: np.ndarray,
              allowed: Callable[[int, str], bool] = lambda row, item_id: True
              ) -> tuple[list[list[str]], list[list[float]]]:
        """The towers' candidates of each query plus its allowed extra ones, in descending towers' score."""
        state = self.builder.catalogue.state
        unit_vectors, item_ids = self.builder.arrays_of(state).vectors, state.ids
        out_ids, out_scores = [], []
        for q, rows in enumerate(self.extra(histories, times, state)):
            have = set(ids[q])
            new = [r for r in rows.tolist() if item_ids[r] not in have and allowed(q, item_ids[r])]
            if not new or not np.any(queries[q]):
                out_ids.append(ids[q])
                out_scores.append(scores[q])
                continue
            merged_ids = ids[q] + [item_ids[r] for r in new]
            merged = np.concatenate([np.asarray(scores[q], np.float64),
                                     (unit_vectors[new] @ np.asarray(queries[q], np.float32)).astype(np.float64)])
            order = np.argsort(-merged, kind="stable")
            out_ids.append([merged_ids[i] for i in order])
            out_scores.append(merged[order].tolist())
        return out_ids, out_scores
