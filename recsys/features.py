"""Re-ranker features: one float64 matrix per batch of (history, retrieved candidates), the single code path
behind ranker training, evaluation, batch scoring and the API.

Every feature reads only the query's own history (items strictly before the query) and the point-in-time
statistics of `recsys.stats` (events strictly before the query time, fit on the train split). The work is
a handful of vectorised numpy operations over precomputed per-item arrays (normalised vectors, attribute
codes, prices, statistics codes) for the whole batch, so one query costs about as much per candidate as a
batch of thousands. Missing values are NaN (LightGBM's missing value).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recsys.catalogue import CandidateRows
from recsys.errors import DataError
from recsys.feature_config import ATTRIBUTE_FEATURES, FEATURE_VERSION, FeatureConfig, feature_names
from recsys.item_arrays import ItemArrays, unit_rows
from recsys.stats import InteractionStats

if TYPE_CHECKING:
    from recsys.catalogue import Catalogue, CatalogueState

__all__ = ["FeatureBuilder", "FeatureConfig", "ItemArrays", "feature_names", "ATTRIBUTE_FEATURES", "FEATURE_VERSION",
           "CHUNK_QUERIES"]

CHUNK_QUERIES = 128
"""Queries per vectorised block (bounds the [queries, candidates, dim] similarity block in memory)."""


def _last_and_max(out: np.ndarray, column: dict, last: str, largest: str, sims: np.ndarray, mask: np.ndarray,
                  usable: np.ndarray) -> None:
    """Write the cosine to the last history item (`sims`' last column) and the largest unmasked one (NaN where
    a row has no usable history item)."""
    out[:, column[last]] = np.where(usable, sims[:, -1], np.nan)
    out[:, column[largest]] = np.where(usable, np.where(mask, sims, -np.inf).max(axis=1), np.nan)


class FeatureBuilder:
    """Features for retrieved candidates, bound to a catalogue (ids, vectors, attributes) and statistics.

    The per-item arrays live in the catalogue's state (attached here when it has none), so they follow live
    upserts and compaction; a builder whose statistics are not the attached ones computes its own copy per
    catalogue version."""

    def __init__(self, catalogue: Catalogue, stats: InteractionStats, config: FeatureConfig) -> None:
        self.config = config
        self.stats = stats
        self.catalogue = catalogue
        if catalogue.state.features is None:
            catalogue.attach_features(lambda state: ItemArrays.of(state, stats))
        self._own: tuple[int, ItemArrays] | None = None
        self.attributes: list[str] | None = None
        available = self.arrays_of(catalogue.state).attributes
        self.attributes = available if config.attributes is None else [a for a in available if a in config.attributes]
        if self._own is not None and self._own[1].attributes != self.attributes:  # computed with every group
            self._own = (self._own[0], self._own[1].only(self.attributes))
        self.names = feature_names(self.attributes, config)
        if config.ease and stats.ease is None:
            raise DataError("this re-ranker reads EASE scores, but its statistics have no EASE weights (refitted "
                            f"on more than {stats.config.ease.max_items if stats.config.ease else 0:,} items, or "
                            "without them); train the re-ranker again (`recsys train-ranker`)")
        if config.has_blocks and int(config.trained_dim) >= catalogue.dim:  # type: ignore[arg-type]
            raise ValueError(f"block similarity: the trained block ({config.trained_dim} columns) leaves no zero-shot "
                             f"block in {catalogue.dim}-dimensional catalogue vectors")

    @classmethod
    def from_frame(cls, items: pl.DataFrame, item_vectors: np.ndarray, stats: InteractionStats,
                   config: FeatureConfig) -> "FeatureBuilder":
        """A builder over a private catalogue of `items` (rows aligned with `item_vectors`)."""
        from recsys.catalogue import Catalogue

        return cls(Catalogue.from_frame(items, item_vectors), stats, config)

    def arrays_of(self, state: CatalogueState) -> ItemArrays:
        """The per-item arrays for `state`, this builder's statistics and attribute groups."""
        arrays = state.features
        shared = arrays is not None and arrays.stats is self.stats
        if shared and self.attributes in (None, arrays.attributes):
            return arrays
        own = self._own
        if own is None or own[0] != state.version:
            own = self._own = (state.version, arrays.only(self.attributes) if shared
                               else ItemArrays.of(state, self.stats, self.attributes))
        return own[1]

    @property
    def arrays(self) -> ItemArrays:
        return self.arrays_of(self.catalogue.state)

    # ---- the matrix -----------------------------------------------------------------------------
    def matrix(self, histories: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]],
               scores: Sequence[Sequence[float]], as_of: Sequence[int | None] | None = None,
               rows: CandidateRows | None = None) -> np.ndarray:
        """float64 [sum of candidate list lengths, len(self.names)]: one row per (query, candidate), queries
        in order, each query's candidates in the given order.

        `histories` are items strictly before each query (oldest first); `as_of` the query times
        (None: now). Statistics are read strictly before each query time. `rows`: the candidates' catalogue
        rows (used while the catalogue is unchanged; else the ids are looked up)."""
        times = self.stats.query_times(as_of, len(histories))
        state = self.catalogue.state
        arrays = self.arrays_of(state)
        known = rows.valid_in(state) if rows is not None else None
        blocks = [self._block(state, arrays, histories[s:s + CHUNK_QUERIES], candidates[s:s + CHUNK_QUERIES],
                              scores[s:s + CHUNK_QUERIES], times[s:s + CHUNK_QUERIES],
                              None if known is None else known[s:s + CHUNK_QUERIES])
                  for s in range(0, len(histories), CHUNK_QUERIES)]
        return np.concatenate(blocks) if blocks else np.zeros((0, len(self.names)))

    def build(self, histories: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]],
              scores: Sequence[Sequence[float]], as_of: Sequence[int | None] | None = None) -> pl.DataFrame:
        """`matrix` as a frame: `query`, `item_id`, then `self.names` (missing values null)."""
        values = self.matrix(histories, candidates, scores, as_of)
        lengths = np.fromiter(map(len, candidates), np.int64, len(candidates))
        frame = pl.DataFrame({"query": np.repeat(np.arange(len(candidates), dtype=np.int64), lengths),
                              "item_id": pl.Series([i for c in candidates for i in c], dtype=pl.Utf8)})
        features = pl.from_numpy(values, schema=self.names, orient="row") if len(values) else \
            pl.DataFrame(schema={n: pl.Float64 for n in self.names})
        return pl.concat([frame, features.with_columns(pl.all().fill_nan(None))], how="horizontal")

    def _block(self, state: CatalogueState, arrays: ItemArrays, histories: Sequence[Sequence[str]],
               candidates: Sequence[Sequence[str]], scores: Sequence[Sequence[float]], times: np.ndarray,
               candidate_rows: Sequence[np.ndarray] | None = None) -> np.ndarray:
        n = len(histories)
        lengths = np.fromiter(map(len, candidates), np.int64, n)
        query = np.repeat(np.arange(n), lengths)
        starts = np.cumsum(lengths) - lengths
        if candidate_rows is not None and n:
            cand = np.concatenate(candidate_rows).astype(np.int64, copy=False)
        else:
            cand = state.rows(list(chain.from_iterable(candidates)))
        out = np.full((len(cand), len(self.names)), np.nan)
        column = {name: j for j, name in enumerate(self.names)}

        score = np.fromiter(chain.from_iterable(scores), np.float64, len(cand))
        out[:, column["retrieval_score"]] = score
        out[:, column["retrieval_rank"]] = np.arange(len(cand)) - starts[query]
        if len(cand):
            nonempty = lengths > 0
            best = np.zeros(n)
            best[nonempty] = np.maximum.reduceat(score, starts[nonempty])
            out[:, column["retrieval_gap"]] = score - best[query]

        at = times[query]
        stats_cand = np.where(cand >= 0, arrays.stats_code[np.maximum(cand, 0)], -1)
        window = self.stats.config.recent_window
        total = self.stats.item_counts(stats_cand, at)
        before_recent = self.stats.item_counts(stats_cand, at - window)
        before_prev = self.stats.item_counts(stats_cand, at - 2 * window)
        recent, previous = total - before_recent, before_recent - before_prev
        out[:, column["pop_all"]] = total
        out[:, column["pop_recent"]] = recent
        out[:, column["pop_trend"]] = (recent + 1) / (previous + 1)
        out[:, column["hist_len"]] = np.fromiter(map(len, histories), np.float64, n)[query]

        hist_rows = [state.rows(h) for h in histories]
        self._history_pairs(arrays, out, column, hist_rows, query, stats_cand, times, starts, lengths)
        self._consumed(len(state), out, column, hist_rows, query, cand)
        self._similarity(arrays, out, column, hist_rows, query, cand, lengths)
        if self.config.ease:
            rows = self._recent(hist_rows, self.config.ease_items, newest_first=True)
            src = np.where(rows >= 0, arrays.stats_code[np.maximum(rows, 0)], -1)
            out[:, column["ease_score"]] = self.stats.ease_scores(src, stats_cand, query, times)
        if self.attributes:
            self._attribute_agreement(arrays, out, column, hist_rows, query, cand)
        return out

    @staticmethod
    def _recent(hist_rows: Sequence[np.ndarray], depth: int, newest_first: bool) -> np.ndarray:
        """[queries, depth] catalogue rows of each history's last `depth` items (-2 pads short histories):
        newest first (column 0 = the last item), or oldest first right-aligned (last column = the last item)."""
        out = np.full((len(hist_rows), depth), -2, np.int64)
        for q, rows in enumerate(hist_rows):
            tail = rows[-depth:]
            if newest_first:
                out[q, :len(tail)] = tail[::-1]
            elif len(tail):
                out[q, depth - len(tail):] = tail
        return out

    def _history_pairs(self, arrays: ItemArrays, out: np.ndarray, column: dict, hist_rows: Sequence[np.ndarray],
                       query: np.ndarray,
                       stats_cand: np.ndarray, times: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> None:
        """Transition / co-occurrence counts from the last `recent_items` history items to each candidate (and the
        normalized ones, which read the counts of up to `decay_items`: looked up once, the recent ones sliced)."""
        config = self.config
        recent_depth = config.recent_items
        depth = max(recent_depth, config.decay_items) if config.normalized_pairs else recent_depth
        rows = self._recent(hist_rows, depth, newest_first=True)  # column j: the item j steps before the last
        src = np.where(rows >= 0, arrays.stats_code[np.maximum(rows, 0)], -1)  # [queries, depth]
        long_trans = config.extended_pairs and depth > recent_depth
        trans = self.stats.pair_counts_blocks("transitions", src if long_trans else src[:, :recent_depth],
                                              stats_cand, starts, lengths, times)  # [rows, depth or recent_depth]
        cooc = self.stats.pair_counts_blocks("cooccurrence", src, stats_cand, starts, lengths, times)
        recent_trans, recent_cooc = trans[:, :recent_depth], cooc[:, :recent_depth]
        last_pop = self.stats.item_counts(src[:, 0], times) if src.shape[1] else np.zeros(len(times))
        out[:, column["trans_last"]] = recent_trans[:, 0]
        out[:, column["trans_recent"]] = recent_trans.sum(axis=1)
        out[:, column["cooc_recent"]] = recent_cooc.sum(axis=1)
        out[:, column["cooc_max"]] = recent_cooc.max(axis=1, initial=0)
        out[:, column["trans_last_norm"]] = recent_trans[:, 0] / (last_pop[query] + 1)
        if config.normalized_pairs:
            self._normalized_pairs(out, column, query, stats_cand, times, src, trans, cooc)

    def _normalized_pairs(self, out: np.ndarray, column: dict, query: np.ndarray, stats_cand: np.ndarray,
                          times: np.ndarray, src: np.ndarray, trans: np.ndarray, cooc: np.ndarray) -> None:
        """Pair counts relative to the items' own counts (both before the query time): the co-occurrence cosine
        cooc / √((n_src + 1)(n_cand + 1)) and transitions per source event trans / (n_src + 1), summed over the
        last `recent_items`; and the cosine summed over the last `decay_items`, weighted decay^(steps back).
        `src` [queries, D ≥ both depths] and `cooc` [rows, D]: newest first; `trans`: D columns with
        `extended_pairs`, else `recent_items`."""
        recent_depth, depth = self.config.recent_items, self.config.decay_items
        cand_count = out[:, column["pop_all"]] + 1.0  # the candidates' counts before the query time
        src_events = self._source_counts(src, times)  # [queries, D]
        src_count = src_events[query] + 1.0  # [rows, D]
        cosine = cooc / np.sqrt(src_count * cand_count[:, None])
        out[:, column["cooc_cos_recent"]] = cosine[:, :recent_depth].sum(axis=1)
        out[:, column["trans_norm_recent"]] = (trans[:, :recent_depth] / src_count[:, :recent_depth]).sum(axis=1)
        weights = self.config.decay ** np.arange(depth, dtype=np.float64)
        out[:, column["cooc_cos_decay"]] = cosine[:, :depth] @ weights
        if not self.config.extended_pairs:
            return
        out[:, column["trans_norm_decay"]] = (trans[:, :depth] / src_count[:, :depth]) @ weights  # ≥ depth columns
        out[:, column["cooc_cos_max"]] = cosine[:, :recent_depth].max(axis=1, initial=0.0)
        present = src[:, :depth] >= 0  # [queries, depth]
        log_counts = np.where(present, np.log(src_events[:, :depth] + 1.0), 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = log_counts.sum(axis=1) / present.sum(axis=1)
        out[:, column["hist_pop_mean"]] = np.where(present.any(axis=1), mean, np.nan)[query]

    def _source_counts(self, src: np.ndarray, times: np.ndarray) -> np.ndarray:
        """[queries, depth] event counts of history items (statistics codes, -1: none → 0) before the query time."""
        if not src.size:
            return np.zeros(src.shape)
        return self.stats.item_counts(src.ravel(), np.repeat(times, src.shape[1])).reshape(src.shape).astype(
            np.float64)

    @staticmethod
    def _consumed(n_rows: int, out: np.ndarray, column: dict, hist_rows: Sequence[np.ndarray], query: np.ndarray,
                  cand: np.ndarray) -> None:
        """How often each candidate is in the history, and how many steps ago it was last (NaN: never)."""
        size = n_rows + 1
        lengths = np.fromiter(map(len, hist_rows), np.int64, len(hist_rows))
        rows = np.concatenate(hist_rows) if len(hist_rows) else np.zeros(0, np.int64)
        owner = np.repeat(np.arange(len(hist_rows)), lengths)
        steps = np.repeat(np.cumsum(lengths), lengths) - np.arange(len(rows)) - 1  # 0 = the last item
        known = rows >= 0
        keys, steps = owner[known] * size + rows[known], steps[known]
        order = np.lexsort((steps, keys))
        keys, steps = keys[order], steps[order]
        unique, first, counts = np.unique(keys, return_index=True, return_counts=True)
        out[:, column["consumed_count"]] = 0
        if not len(unique):
            return  # consumed_steps_ago stays NaN (never consumed)
        wanted = query * size + cand
        at = np.minimum(np.searchsorted(unique, wanted), len(unique) - 1)
        found = (cand >= 0) & (unique[at] == wanted)
        out[:, column["consumed_count"]] = np.where(found, counts[at], 0)
        out[:, column["consumed_steps_ago"]] = np.where(found, steps[first[at]], np.nan)

    def _similarity(self, arrays: ItemArrays, out: np.ndarray, column: dict, hist_rows: Sequence[np.ndarray],
                    query: np.ndarray, cand: np.ndarray, lengths: np.ndarray) -> None:
        """Cosine of each candidate to the last `sim_items` history items in the catalogue: to the last, max, mean;
        with `block_similarity`, also to the last and max within the trained and the zero-shot block."""
        depth = self.config.sim_items
        kept = [rows[-depth:] for rows in hist_rows]
        recent = self._recent([k[k >= 0] for k in kept], depth, newest_first=False)  # [queries, depth], right-aligned
        valid = recent >= 0
        if not valid.any() or not len(cand):
            return
        vectors = arrays.vectors
        history = vectors[np.maximum(recent, 0)]  # [queries, depth, dim]
        starts = np.cumsum(lengths) - lengths
        known = np.maximum(cand, 0)
        parts = self._blocks(vectors.shape[1])
        sims = np.zeros((len(cand), depth))
        block_sims = {suffix: np.zeros((len(cand), depth)) for suffix in parts}
        for q in np.flatnonzero(valid.any(axis=1) & (lengths > 0)).tolist():  # small GEMMs per query
            block = slice(starts[q], starts[q] + lengths[q])
            mine = vectors[known[block]]
            sims[block] = mine @ history[q].T
            for suffix, part in parts.items():
                block_sims[suffix][block] = unit_rows(mine[:, part]) @ unit_rows(history[q][:, part]).T
        mask = valid[query] & (cand >= 0)[:, None]
        usable = mask.any(axis=1)
        _last_and_max(out, column, "sim_last", "sim_max", sims, mask, usable)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, column["sim_mean"]] = np.where(usable, np.where(mask, sims, 0).sum(axis=1) / mask.sum(axis=1),
                                                  np.nan)
        for suffix, values in block_sims.items():
            _last_and_max(out, column, f"sim_last_{suffix}", f"sim_max_{suffix}", values, mask, usable)

    def _blocks(self, width: int) -> dict[str, slice]:
        """The vector blocks of the block similarity features (none when they are off; the width is checked when
        the builder is made)."""
        if not self.config.has_blocks:
            return {}
        trained = int(self.config.trained_dim)  # type: ignore[arg-type]
        return {"towers": slice(0, trained), "text": slice(trained, width)}

    def _attribute_agreement(self, arrays: ItemArrays, out: np.ndarray, column: dict,
                             hist_rows: Sequence[np.ndarray], query: np.ndarray, cand: np.ndarray) -> None:
        """Category/brand of the last history item and share among the last `attr_items`; log price ratio to
        their median price."""
        recent = self._recent(hist_rows, self.config.attr_items, newest_first=False)  # -1 unknown, -2 padding
        size = (recent != -2).sum(axis=1).astype(np.float64)
        has_history = size > 0
        for attr, codes in arrays.codes.items():
            window = np.where(recent >= 0, codes[np.maximum(recent, 0)], -1)  # null / unknown / padding: -1
            mine = np.where(cand >= 0, codes[np.maximum(cand, 0)], -1)
            last = window[:, -1][query]
            match = np.where((mine >= 0) & (last >= 0), (mine == last).astype(np.float64), np.nan)
            same = ((window[query] == mine[:, None]) & (mine >= 0)[:, None]).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                share = np.where(has_history[query], same / size[query], np.nan)
            out[:, column[f"{attr}_match_last"]] = match
            out[:, column[f"{attr}_share"]] = share
        if arrays.price is not None:
            prices = np.where(recent >= 0, arrays.price[np.maximum(recent, 0)], np.nan)
            prices = np.where(prices > 0, prices, np.nan)
            median = _nan_median_rows(prices)
            mine = np.where(cand >= 0, arrays.price[np.maximum(cand, 0)], np.nan)
            med = median[query]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, column["price_log_ratio"]] = np.where((mine > 0) & (med > 0), np.log(mine) - np.log(med), np.nan)

    # ---- explanations ---------------------------------------------------------------------------
    def closest_history(self, history: Sequence[str], item_ids: Sequence[str]) -> list[tuple[str | None, float]]:
        """For each item: the most similar of the last `explain_items` history items and the cosine."""
        state = self.catalogue.state
        position, vectors = state.position, self.arrays_of(state).vectors
        window = [i for i in history[-self.config.explain_items:] if i in position]
        if not window:
            return [(None, float("nan")) for _ in item_ids]
        rows = [position[i] for i in window]
        out = []
        for item in item_ids:
            if item not in position:
                out.append((None, float("nan")))
                continue
            sims = vectors[rows] @ vectors[position[item]]
            sims = np.where(np.asarray(window) == item, -np.inf, sims)  # "because you bought" another item
            best = len(window) - 1 - int(np.argmax(sims[::-1]))  # ties → the most recent
            out.append((window[best], float(sims[best])) if np.isfinite(sims[best]) else (None, float("nan")))
        return out


def _nan_median_rows(values: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN (NaN for a row of NaN only); np.nanmedian goes through masked arrays,
    ~100x slower on the small rows of one request."""
    ordered = np.sort(values, axis=1)  # NaN sort last
    count = (~np.isnan(values)).sum(axis=1)
    rows = np.arange(len(values))
    low, high = np.maximum(count - 1, 0) // 2, count // 2
    with np.errstate(invalid="ignore"):
        middle = (ordered[rows, low] + ordered[rows, np.minimum(high, values.shape[1] - 1)]) / 2
    return np.where(count > 0, middle, np.nan)
