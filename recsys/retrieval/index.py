"""`VectorIndex`: a FAISS index over L2-normalised item vectors, keyed by raw item ids, with live
add / remove / deactivate, query-time filters and save/load without pickle.

Rows ("slots") are append-only: faiss label = row of `ids`. Removing or deactivating an item sets
a flag on its row (a tombstone); searches skip flagged rows through a faiss IDSelector (CPU) or a
host-side filter (GPU), over-fetching and refilling so k results come back whenever k eligible
items exist. `compact()` drops removed rows for good (IVF codes are moved, flat/HNSW rebuilt).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np
import polars as pl

from recsys.config import IndexConfig
from recsys.errors import BundleError, UnknownIdError

from .factory import (Layout, SearchParams, add_in_chunks, compact_index, exhaustive_params, faiss_params, new_index,
                      reconstruct_rows)
from .choice import resolve_index
from .exact import exact_top_k
from .filters import RWLock, Where, bitmap_selector, normalise_attributes, rows_of, where_key, where_mask
from .gpu import GPU_MAX_K, GpuReplica, to_gpu

REMOVED = np.uint8(1)   # gone from the catalogue (until compact() reclaims the row)
INACTIVE = np.uint8(2)  # kept but not recommendable (out of stock); activate() brings it back
REFILL_ROUNDS = 3       # over-fetch rounds (×4 fetch, ×4 nprobe/efSearch each) before the exact fallback


def prepare_vectors(vectors: np.ndarray, n: int, normalize: bool, dim: int | None = None) -> np.ndarray:
    """float32, C-contiguous, L2-normalised when asked (zero rows stay zero); a copy only if needed."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise ValueError(f"vectors {vectors.shape} do not match {n} ids")
    if dim is not None and vectors.shape[1] != dim:
        raise ValueError(f"vectors have dimension {vectors.shape[1]}, the index {dim}")
    if normalize and n:
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        if not np.allclose(norms[norms > 0], 1.0, atol=1e-4):
            vectors = vectors / np.where(norms > 0, norms, 1.0)[:, None]
    return np.ascontiguousarray(vectors)


class TextEncoder(Protocol):
    """The item tower as the index sees it (e.g. `encoders.TextEncoder`)."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


class VectorIndex:
    """Inner-product search with a raw-id mapping in both directions.

    `ids[row]` is the raw id stored at faiss label `row` (removed rows included until `compact()`);
    `position[raw_id]` is the row of every item not removed. `len()` counts rows.
    """

    def __init__(self, index: faiss.Index, ids: np.ndarray, config: IndexConfig, *,
                 state: np.ndarray | None = None, attributes: pl.DataFrame | None = None) -> None:
        if index.ntotal != len(ids):
            raise BundleError(f"index holds {index.ntotal} vectors but {len(ids)} ids")
        self.index = index  # the CPU master: saved, edited, compacted
        self._layout = Layout.of(index)
        self._params_cache: dict = {}
        self.ids = np.asarray(ids, dtype=object)
        self.config = config
        self._state = np.zeros(len(self.ids), np.uint8) if state is None else np.asarray(state, np.uint8).copy()
        if len(self._state) != len(self.ids):
            raise BundleError(f"state has {len(self._state)} rows for {len(self.ids)} ids")
        self.attributes = normalise_attributes(attributes, len(self.ids))
        self._lock = RWLock()
        self._rebuild_position()
        self.gpu: GpuReplica | None = to_gpu(index, config)

    # ---- bookkeeping --------------------------------------------------------------------------
    def _rebuild_position(self) -> None:
        live = np.flatnonzero((self._state & REMOVED) == 0)
        self.position = dict(zip(self.ids[live].tolist(), live.tolist()))
        self._invalidate()

    def _invalidate(self) -> None:
        self._available = self._state == 0
        self._n_available = int(self._available.sum())
        self._selector_cache: tuple | None = None
        self._where_cache: dict = {}

    @property
    def dim(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return len(self.ids)  # == index.ntotal

    @property
    def n_available(self) -> int:
        """Items a search can return (neither removed nor deactivated)."""
        return self._n_available

    @property
    def n_removed(self) -> int:
        """Tombstoned rows that `compact()` would reclaim."""
        return int(((self._state & REMOVED) != 0).sum())

    def is_active(self, item_id: Any) -> bool:
        row = self.position.get(item_id)
        return row is not None and self._state[row] == 0

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def build(cls, vectors: np.ndarray, ids: list[str] | np.ndarray, config: IndexConfig | None = None, *,
              attributes: pl.DataFrame | dict | None = None) -> "VectorIndex":
        """Index `vectors` (rows aligned with `ids`, and with `attributes` rows when given);
        trains on a seeded sample when the kind needs it. `kind="auto"` is resolved for the number of items
        (`choice.resolve_index`): `self.config` holds the kind built."""
        config = resolve_index(config or IndexConfig(), len(ids))
        ids = np.asarray(ids, dtype=object)
        if len(set(ids.tolist())) != len(ids):
            raise ValueError("ids must be unique")
        vectors = prepare_vectors(vectors, len(ids), config.normalize)
        return cls(new_index(config, vectors), ids, config, attributes=normalise_attributes(attributes, len(ids)))

    # ---- live catalogue -----------------------------------------------------------------------
    def add(self, vectors: np.ndarray, ids: Sequence[Any], *, attributes: pl.DataFrame | dict | None = None) -> None:
        """Insert items without retraining (IVF assigns them to the existing lists). An id that is
        already present is replaced: its old row becomes a tombstone."""
        ids = list(ids)
        if len(set(ids)) != len(ids):
            raise ValueError("ids must be unique")
        vectors = prepare_vectors(vectors, len(ids), self.config.normalize, self.dim)
        new_attributes = normalise_attributes(attributes, len(ids))
        with self._lock.write():
            replaced = [self.position[i] for i in ids if i in self.position]
            self._state[replaced] |= REMOVED
            start = len(self.ids)
            add_in_chunks(self.index, vectors)
            if self.gpu is not None and self.gpu.sharded:
                self.gpu = to_gpu(self.index, self.config)
            elif self.gpu is not None:
                self.gpu.add(vectors)
            self.ids = np.concatenate([self.ids, np.asarray(ids, dtype=object)])
            self._state = np.concatenate([self._state, np.zeros(len(ids), np.uint8)])
            if new_attributes is not None or self.attributes is not None:
                old = self.attributes if self.attributes is not None else new_attributes.clear(start)
                new = new_attributes if new_attributes is not None else self.attributes.clear(len(ids))
                self.attributes = pl.concat([old, new], how="diagonal_relaxed")
            self.position.update(zip(ids, range(start, start + len(ids))))
            self._invalidate()

    def add_texts(self, texts: Sequence[str], ids: Sequence[Any], encoder: TextEncoder, *,
                  attributes: pl.DataFrame | dict | None = None) -> None:
        """Encode new items' text with the item tower and insert them."""
        self.add(encoder.encode(list(texts)), ids, attributes=attributes)

    def _rows(self, ids: Iterable[Any], missing_ok: bool) -> np.ndarray:
        ids = list(ids)
        missing = [i for i in ids if i not in self.position]
        if missing and not missing_ok:
            raise UnknownIdError("item", missing)
        return rows_of(ids, self.position)

    def remove(self, ids: Iterable[Any], *, missing_ok: bool = False) -> int:
        """Tombstone items: never returned again, forgotten by `position`; returns how many."""
        with self._lock.write():
            rows = self._rows(ids, missing_ok)
            self._state[rows] |= REMOVED
            for row in rows.tolist():
                self.position.pop(self.ids[row], None)
            self._invalidate()
            return len(rows)

    def deactivate(self, ids: Iterable[Any], *, missing_ok: bool = False) -> int:
        """Hide items (out of stock) but keep them known; `activate` reverses it."""
        with self._lock.write():
            rows = self._rows(ids, missing_ok)
            self._state[rows] |= INACTIVE
            self._invalidate()
            return len(rows)

    def activate(self, ids: Iterable[Any], *, missing_ok: bool = False) -> int:
        with self._lock.write():
            rows = self._rows(ids, missing_ok)
            self._state[rows] &= ~INACTIVE
            self._invalidate()
            return len(rows)

    def compact(self) -> int:
        """Drop removed rows from the index for good (rows are renumbered); on GPU the rebuilt
        master is cloned to the GPUs and swapped in. Returns the number of rows reclaimed."""
        with self._lock.write():
            keep = np.flatnonzero((self._state & REMOVED) == 0)
            if len(keep) == len(self.ids):
                return 0
            master = compact_index(self.index, self.config, keep)
            replica = to_gpu(master, self.config) if self.gpu is not None else None
            self.index, self.gpu = master, replica
            self._layout, self._params_cache = Layout.of(master), {}
            dropped = len(self.ids) - len(keep)
            self.ids, self._state = self.ids[keep], self._state[keep]
            if self.attributes is not None:
                self.attributes = self.attributes[keep]
            self._rebuild_position()
            return dropped

    # ---- search -------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, *, exclude: Collection[Any] | None = None,
               exclude_per_query: Sequence[Collection[Any] | None] | None = None,
               allow: Collection[Any] | np.ndarray | None = None, where: Where | None = None,
               params: SearchParams | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores float32 [n, w], raw ids object [n, w]) per query row, w = min(k, items
        available); missing slots have id None and score -inf.

        exclude: ids no query may return; exclude_per_query: one collection per query row (e.g.
        the user's seen items); allow: only these ids (or a boolean mask over rows); where: an
        attribute filter (see `filters.Where`); params: nprobe / efSearch / refine for this call.
        Every row holds min(w, eligible items) results: filtered searches over-fetch and refill,
        ending in an exact scan of the eligible items if the ANN structure comes up short.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        params = params or SearchParams()
        exclude = list(exclude) if exclude is not None else None
        with self._lock.read():
            width = max(0, min(int(k), self._n_available))
            if width == 0 or len(queries) == 0:
                return (np.full((len(queries), width), -np.inf, np.float32),
                        np.full((len(queries), width), None, dtype=object))
            if exclude_per_query is not None and len(exclude_per_query) != len(queries):
                raise ValueError(f"exclude_per_query has {len(exclude_per_query)} entries for {len(queries)} queries")
            mask, keep_alive = self._eligible(allow, where, exclude)
            per_rows = None
            if exclude_per_query is not None:
                per_rows = [rows_of(e, self.position) if e is not None else np.zeros(0, np.int64)
                            for e in exclude_per_query]
            if self._layout.flat is not None and self.gpu is None:  # exact: one GEMM per batch (see .exact)
                return self._as_ids(*exact_top_k(self._flat_vectors(), queries, width, mask=mask,
                                                 exclude_rows=per_rows))
            selector = keep_alive[0] if keep_alive else None
            n_eligible = self._n_available if mask is None else int(mask.sum())
            if per_rows is not None and mask is not None:
                per_rows = [r[mask[r]] for r in per_rows]
            if mask is None and per_rows is None and self.gpu is None:  # the common case, kept lean
                scores, labels = self.index.search(queries, width, params=self._faiss_params(params, None, 1))
                if labels[:, -1].min() < 0:  # an IVF probe came up short: refill
                    scores, labels = self._search(queries, width, mask, selector, n_eligible, per_rows, params)
            else:
                scores, labels = self._search(queries, width, mask, selector, n_eligible, per_rows, params)
            return self._as_ids(scores, labels)  # under the lock: compact() renumbers rows

    def _as_ids(self, scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if labels.min() >= 0:
            return scores, self.ids[labels]
        ids = np.full(labels.shape, None, dtype=object)
        valid = labels >= 0
        ids[valid] = self.ids[labels[valid]]
        return np.where(valid, scores, -np.inf).astype(np.float32), ids

    def _eligible(self, allow, where, exclude) -> tuple[np.ndarray | None, tuple]:
        """Row mask of items a query may return (None: every row) + (selector, bitmap) to keep alive."""
        if allow is None and where is None and not exclude and self._n_available == len(self):
            return None, ()
        mask = self._available
        if where is not None:
            key = where_key(where)
            where_rows = self._where_cache.get(key) if key is not None else None
            if where_rows is None:
                where_rows = where_mask(self.attributes, where)
                if key is not None and len(self._where_cache) < 64:
                    self._where_cache[key] = where_rows
            mask = mask & where_rows
        if allow is not None:
            if isinstance(allow, np.ndarray) and allow.dtype == bool:
                if len(allow) != len(self):
                    raise ValueError(f"allow mask has {len(allow)} rows, the index {len(self)}")
                mask = mask & allow
            else:
                allowed = np.zeros(len(self), bool)
                allowed[rows_of(allow, self.position)] = True
                mask = mask & allowed
        if exclude:
            mask = mask.copy() if mask is self._available else mask
            mask[rows_of(exclude, self.position)] = False
        if mask is self._available:
            if self._selector_cache is None:
                self._selector_cache = bitmap_selector(mask)
            return mask, self._selector_cache
        return mask, bitmap_selector(mask)

    def _search(self, queries, width, mask, selector, n_eligible, per_rows, params):
        nq = len(queries)
        per_counts = np.array([len(r) for r in per_rows]) if per_rows is not None else np.zeros(nq, int)
        targets = np.minimum(width, n_eligible - per_counts)
        out_l = np.full((nq, width), -1, np.int64)
        out_s = np.full((nq, width), -np.inf, np.float32)
        pending = np.arange(nq)
        if mask is None or n_eligible > params.exact_below:
            use_gpu = self.gpu is not None
            extra = int(per_counts.max(initial=0))
            scale = len(self) / max(n_eligible, 1) if use_gpu and mask is not None else 1.0
            fetch, widen = int(math.ceil((width + extra) * scale)), 1
            for _ in range(REFILL_ROUNDS):
                if use_gpu and fetch > GPU_MAX_K:  # too deep for the GPU: CPU master with a selector
                    use_gpu, fetch = False, width + extra
                k_fetch = min(fetch, len(self))
                if use_gpu:
                    nprobe = (params.nprobe or self.config.nprobe) * widen if self._layout.ivf is not None else None
                    scores, labels = self.gpu.search(queries[pending], k_fetch, nprobe)
                else:
                    scores, labels = self.index.search(queries[pending], k_fetch,
                                                       params=self._faiss_params(params, selector, widen))
                pending = self._collect(pending, scores, labels, mask, per_rows, targets, out_l, out_s)
                if not len(pending):
                    return out_s, out_l
                fetch, widen = fetch * 4, widen * 4
        k_fetch = min(width + int(per_counts[pending].max(initial=0)), len(self))
        scores, labels = self._exact(queries[pending], k_fetch, selector)
        self._collect(pending, scores, labels, mask, per_rows, targets, out_l, out_s)
        return out_s, out_l

    def _flat_vectors(self) -> np.ndarray:
        """The fp32 flat index's stored vectors [rows, dim], a view (taken per search: `add` may move them)."""
        flat = self._layout.flat
        return faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)

    def _faiss_params(self, params: SearchParams, selector, widen: int) -> faiss.SearchParameters:
        if selector is not None:
            return faiss_params(self._layout, self.config, params, selector, widen)
        cached = self._params_cache.get((params, widen))
        if cached is None:
            cached = self._params_cache[(params, widen)] = faiss_params(self._layout, self.config, params, None, widen)
        return cached

    def _exact(self, queries: np.ndarray, k: int, selector) -> tuple[np.ndarray, np.ndarray]:
        """Score every selected row (IVF: all lists; HNSW: its flat storage) on the CPU master."""
        if self._layout.ivf is not None:
            return self.index.search(queries, k, params=exhaustive_params(self._layout, self.config, selector))
        hnsw = self._layout.hnsw
        target = faiss.downcast_index(hnsw.storage) if hnsw is not None else self.index
        p = faiss.SearchParameters()
        if selector is not None:
            p.sel = selector
        return target.search(queries, k, params=p)

    @staticmethod
    def _collect(pending, scores, labels, mask, per_rows, targets, out_l, out_s) -> np.ndarray:
        """Write each pending row's first `width` eligible hits; return the rows still short."""
        width = out_l.shape[1]
        if mask is None and per_rows is None:  # plain search: faiss already returns hits first
            got = (labels[:, :width] >= 0).sum(axis=1)
            out_l[pending] = labels[:, :width]
            out_s[pending] = scores[:, :width]
            return pending[got < targets[pending]]
        short = []
        for j, q in enumerate(pending):
            lab = labels[j]
            ok = lab >= 0
            if mask is not None:
                ok[ok] = mask[lab[ok]]
            if per_rows is not None and len(per_rows[q]):
                ok &= ~_member(lab, per_rows[q])
            hits = np.flatnonzero(ok)[:width]
            out_l[q] = -1
            out_s[q] = -np.inf
            out_l[q, :len(hits)] = lab[hits]
            out_s[q, :len(hits)] = scores[j, hits]
            if len(hits) < targets[q]:
                short.append(q)
        return np.asarray(short, dtype=np.int64)

    # ---- persistence --------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """index.faiss (CPU master) + ids.npy + state.npy + config.json (+ attributes.parquet)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock.read():
            faiss.write_index(self.index, str(directory / "index.faiss"))
            np.save(directory / "ids.npy", self.ids.astype(str), allow_pickle=False)
            np.save(directory / "state.npy", self._state, allow_pickle=False)
            (directory / "config.json").write_text(self.config.model_dump_json(indent=2))
            if self.attributes is not None:
                self.attributes.write_parquet(directory / "attributes.parquet")

    @classmethod
    def load(cls, directory: str | Path) -> "VectorIndex":
        directory = Path(directory)
        config = IndexConfig.model_validate_json((directory / "config.json").read_text())
        index = faiss.read_index(str(directory / "index.faiss"))
        ids = np.load(directory / "ids.npy", allow_pickle=False).astype(object)
        state = np.load(directory / "state.npy", allow_pickle=False) if (directory / "state.npy").exists() else None
        attributes = pl.read_parquet(directory / "attributes.parquet") \
            if (directory / "attributes.parquet").exists() else None
        return cls(index, ids, config, state=state, attributes=attributes)


def reconstruct_all(index: VectorIndex) -> np.ndarray:
    """All stored vectors in row order, aligned with `index.ids` (float32; PQ rows approximate)."""
    with index._lock.write():  # an IVF index may build its direct map here
        return reconstruct_rows(index.index, np.arange(len(index)))


def _member(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`np.isin(values, rows)`; a broadcast compare for the small arrays of one request (~7x faster)."""
    if len(values) * len(rows) <= 1 << 16:
        return (values[:, None] == rows[None, :]).any(axis=1)
    return np.isin(values, rows)


__all__ = ["VectorIndex", "TextEncoder", "reconstruct_all"]

