"""Point-in-time count tables over sorted numpy arrays (`recsys.stats` holds three of them): one lookup of how
many events a key (an item, or a pair of items) had strictly before a time rank is a `searchsorted`."""

from __future__ import annotations

import numpy as np

DENSE_KEYS = 2_000_000
"""Tables with at most this many keys keep a dense count vector per query time asked for with one time."""
GLOBAL_SEARCH_PAIRS = 4_000_000
"""Pair tables up to this many pairs (32 MB of codes) are searched whole per lookup batch (`pair_number_blocks`)."""


class CountTable:
    """Cumulative counts per integer key over time ranks: `before(keys, ranks)` is the number of events of
    each key whose time rank is below the given rank (0 for key -1 or a key without events).

    `composite` (sorted) holds `key * span + time rank` per row, `cum` the key's events up to and including
    that time, `total` every key's count over all time (+ a trailing 0 for unknown keys)."""

    def __init__(self, composite: np.ndarray, cum: np.ndarray, total: np.ndarray, span: int) -> None:
        self.span = span
        self.composite, self.cum, self.total = composite, cum, total
        self._dense: dict[int, np.ndarray] = {}  # rank → every key's count before it (see `_at_rank`)

    @classmethod
    def build(cls, keys: np.ndarray, ranks: np.ndarray, cum: np.ndarray, span: int) -> "CountTable":
        """From unsorted rows (key, time rank, cumulative count)."""
        composite = np.asarray(keys, np.int64) * span + np.asarray(ranks, np.int64)
        order = np.argsort(composite, kind="stable")
        composite, cum = composite[order], np.asarray(cum, np.int64)[order]
        return cls(composite, cum, totals(composite // span, cum), span)

    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, time ranks, cumulative counts), sorted by key then time."""
        return self.composite // self.span, self.composite % self.span, self.cum

    def before(self, keys: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, np.int64)
        if not len(self.composite):
            return np.zeros(keys.shape, np.int64)
        ranks = np.asarray(ranks, np.int64)
        if ranks.min(initial=self.span) >= self.span - 1:  # every query after the last event: the totals
            return self.total[np.where((keys >= 0) & (keys < len(self.total) - 1), keys, -1)]
        if ranks.size and len(self.total) <= DENSE_KEYS and (ranks == ranks.flat[0]).all():
            return self._at_rank(int(ranks.flat[0]))[np.where((keys >= 0) & (keys < len(self.total) - 1), keys, -1)]
        return self._search(keys, ranks)

    def _at_rank(self, rank: int) -> np.ndarray:
        """Every key's count before `rank` (+ a trailing 0 for unknown keys), cached for the few query times
        serving uses (e.g. "now" and "now - recent window")."""
        dense = self._dense.get(rank)
        if dense is None:
            keys = np.arange(len(self.total) - 1)
            dense = np.append(self._search(keys, np.full(len(keys), rank)), 0)
            cache = dict(self._dense)  # replaced, never mutated: readers on other threads see a whole dict
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            cache[rank] = dense
            self._dense = cache
        return dense

    def _search(self, keys: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        base = keys * self.span
        idx = np.searchsorted(self.composite, base + ranks, side="left") - 1
        clipped = np.maximum(idx, 0)
        found = (keys >= 0) & (idx >= 0) & (self.composite[clipped] >= base)
        return np.where(found, self.cum[clipped], 0)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.composite": self.composite, f"{prefix}.cum": self.cum, f"{prefix}.total": self.total}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str, span: int) -> "CountTable":
        return cls(arrays[f"{prefix}.composite"], arrays[f"{prefix}.cum"], arrays[f"{prefix}.total"], span)


def totals(keys_sorted: np.ndarray, cum: np.ndarray) -> np.ndarray:
    """Every key's last cumulative count (rows sorted by key then time), + a trailing 0 for unknown keys."""
    if not len(keys_sorted):
        return np.zeros(1, np.int64)
    last = np.flatnonzero(np.append(keys_sorted[1:] != keys_sorted[:-1], True))
    total = np.zeros(int(keys_sorted[-1]) + 2, np.int64)
    total[keys_sorted[last]] = cum[last]
    return total


class PairCounts:
    """Point-in-time counts of item pairs (src → dst): pair codes `src * n_items + dst`, sorted, then a
    `CountTable` over pair numbers (the row of a pair's code in `pairs`)."""

    def __init__(self, pairs: np.ndarray, table: CountTable, n_items: int) -> None:
        self.pairs, self.table, self.n_items = pairs, table, n_items

    @classmethod
    def build(cls, src: np.ndarray, dst: np.ndarray, ranks: np.ndarray, cum: np.ndarray, n_items: int,
              span: int) -> "PairCounts":
        """From unsorted rows (src, dst, time rank, cumulative count)."""
        codes = np.asarray(src, np.int64) * n_items + np.asarray(dst, np.int64)
        pairs, number = np.unique(codes, return_inverse=True)
        return cls(pairs, CountTable.build(number.reshape(-1), ranks, cum, span), n_items)

    def pair_number(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Row of each (src, dst) in `pairs`, -1 where the pair never occurred."""
        src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
        if not len(self.pairs):
            return np.full(np.broadcast(src, dst).shape, -1, np.int64)
        codes = src * self.n_items + dst
        number = np.minimum(np.searchsorted(self.pairs, codes), len(self.pairs) - 1)
        return np.where((src >= 0) & (dst >= 0) & (self.pairs[number] == codes), number, -1)

    def source_offsets(self) -> list[int]:
        """[n_items + 1]: the pairs of source item `a` are rows offsets[a]:offsets[a + 1] of `pairs` (computed
        once, on first use; a list, as the lookups read it one source at a time)."""
        offsets = getattr(self, "_offsets", None)
        if offsets is None:
            starts = np.arange(self.n_items + 1, dtype=np.int64) * self.n_items
            offsets = self._offsets = np.searchsorted(self.pairs, starts).tolist()
        return offsets

    def pair_number_blocks(self, src: np.ndarray, dst: np.ndarray, starts: np.ndarray,
                           lengths: np.ndarray) -> np.ndarray:
        """`pair_number(src[query], dst[:, None])` for rows in contiguous query blocks (query q owns rows
        starts[q]:starts[q] + lengths[q]): src [queries, R] codes (-1: none), dst [rows] → [rows, R].
        Tables of up to `GLOBAL_SEARCH_PAIRS` pairs (cache-resident) are searched whole in one vectorised call;
        in larger ones (tens of millions of rows at 10M events) each (query, source) pair searches only its
        source's own slice of `pairs`, so the search stays in cache."""
        src = np.asarray(src, np.int64)
        out = np.full((len(dst), src.shape[1]), -1, np.int64)
        if not len(self.pairs) or not len(dst):
            return out
        pairs = self.pairs.view(np.ndarray)  # slices of a plain view: a memmap's slices are memmaps (slow to make)
        dst = np.asarray(dst, np.int64)
        if len(pairs) <= GLOBAL_SEARCH_PAIRS:
            rows_src = np.repeat(src, lengths, axis=0)  # [rows, R]: each row's query's sources
            codes = rows_src * self.n_items + dst[:, None]
            found = np.searchsorted(pairs, codes)
            np.minimum(found, len(pairs) - 1, out=found)
            hit = (rows_src >= 0) & (dst >= 0)[:, None] & (pairs[found] == codes)
            return np.where(hit, found, out)
        offsets, n = self.source_offsets(), self.n_items
        for q, (begin, length, sources) in enumerate(zip(starts.tolist(), lengths.tolist(), src.tolist())):
            block = dst[begin:begin + length]
            for r, a in enumerate(sources):
                if a < 0 or not length or offsets[a] == offsets[a + 1]:
                    continue
                lo, hi = offsets[a], offsets[a + 1]
                row, codes = pairs[lo:hi], block + a * n  # an unknown candidate (-1) gets a code below the slice
                found = np.searchsorted(row, codes)
                np.minimum(found, hi - lo - 1, out=found)
                out[begin:begin + length, r] = np.where(row[found] == codes, found + lo, -1)
        return out

    def before(self, src: np.ndarray, dst: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        return self.table.before(self.pair_number(src, dst), ranks)

    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(src, dst, time ranks, cumulative counts)."""
        number, ranks, cum = self.table.rows()
        codes = self.pairs[number]
        return codes // self.n_items, codes % self.n_items, ranks, cum

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.pairs": self.pairs, **self.table.arrays(prefix)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str, n_items: int, span: int) -> "PairCounts":
        return cls(arrays[f"{prefix}.pairs"], CountTable.from_arrays(arrays, prefix, span), n_items)
