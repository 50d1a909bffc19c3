"""`VectorIndex`: a FAISS index over the L2-normalised item vectors of a `Catalogue`, with live add / remove /
deactivate (through the catalogue), query-time filters and save/load without pickle.

FAISS label = catalogue row; rows are append-only. The ids, the row flags (removed / inactive) and the filter
attributes are the catalogue's: searches skip flagged rows through a faiss IDSelector (CPU) or a host-side
filter (GPU), over-fetching and refilling so k results come back whenever k eligible items exist.
A plain fp32 flat index on the CPU is searched by `exact.exact_top_k` instead (one GEMM per batch, masks and
exclusions applied to the scores, batch-invariant results).
`compact()` drops removed rows for good (IVF codes are moved, flat/HNSW rebuilt), built aside while searches and
edits go on, and swapped in with the rows added meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import faiss
import numpy as np
import polars as pl

from recsys.config import IndexConfig
from recsys.errors import BundleError

from .factory import (Layout, SearchParams, add_in_chunks, compact_index, empty_copy, exhaustive_params, faiss_params,
                      new_index, reconstruct_rows, refine_factor)
from .choice import resolve_index
from .exact import exact_top_k
from .filters import Where, bitmap_selector, normalise_attributes, rows_of
from .gpu import GPU_MAX_K, GpuReplica, to_gpu

if TYPE_CHECKING:  # recsys.catalogue imports this package's filters: import it lazily
    from recsys.catalogue import Catalogue, CatalogueState

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
        if np.abs(norms[norms > 0] - 1.0).max(initial=0.0) > 1e-4 + 1e-5:  # np.allclose(…, 1.0, atol=1e-4)
            vectors = vectors / np.where(norms > 0, norms, 1.0)[:, None]
    return np.ascontiguousarray(vectors)


class TextEncoder(Protocol):
    """The item tower as the index sees it (e.g. `encoders.TextEncoder`)."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


def pin_omp_threads(n: int) -> None:
    """Cap FAISS's OpenMP threads at `n` in the calling thread. OpenMP's setting belongs to the thread that makes
    it: `faiss.omp_set_num_threads` in one thread leaves every other thread (a server's thread pool, a
    micro-batcher's) at the machine's core count, so each search sets it in its own thread (a no-op once set)."""
    if faiss.omp_get_max_threads() != n:
        faiss.omp_set_num_threads(n)


class VectorIndex:
    """Inner-product search over the rows of a `Catalogue`: FAISS label = catalogue row.

    The index holds only the FAISS structure; ids, id → row, state flags and filter attributes are read from
    the catalogue it references, and it follows the catalogue's appended and compacted rows (a `RowListener`).
    Built from bare vectors and ids (`build`) it makes itself a private catalogue, so it also works alone.
    """

    def __init__(self, index: faiss.Index, catalogue: Catalogue, config: IndexConfig) -> None:
        if index.ntotal != len(catalogue):
            raise BundleError(f"index holds {index.ntotal} vectors but the catalogue {len(catalogue)} rows")
        self.index = index  # the CPU master: saved, edited, compacted
        self.catalogue = catalogue
        self.config = config
        self._layout = Layout.of(index)
        self._params_cache: dict = {}
        self.gpu: GpuReplica | None = to_gpu(index, config)
        self._empty: faiss.Index | None = None  # IVF kinds: a trained empty copy, cloned by each compaction
        self.search_threads = 0  # OpenMP threads of its FAISS searches, set in each searching thread (0: leave)
        catalogue.attach(self)

    # ---- views of the catalogue -----------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        """The id stored in each row (removed rows included until `compact()`)."""
        return self.catalogue.state.ids

    @property
    def position(self) -> dict:
        """id → row of every item not removed."""
        return self.catalogue.state.position

    @property
    def attributes(self) -> pl.DataFrame | None:
        return self.catalogue.state.attributes

    @property
    def dim(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return self.index.ntotal  # == catalogue rows

    @property
    def n_available(self) -> int:
        """Items a search can return (neither removed nor deactivated)."""
        return self.catalogue.state.n_available

    @property
    def n_removed(self) -> int:
        """Tombstoned rows that `compact()` would reclaim."""
        return self.catalogue.state.n_removed

    def is_active(self, item_id: Any) -> bool:
        return self.catalogue.state.is_active(item_id)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def build(cls, vectors: np.ndarray, ids: list[str] | np.ndarray, config: IndexConfig | None = None, *,
              attributes: pl.DataFrame | dict | None = None) -> "VectorIndex":
        """Index `vectors` (rows aligned with `ids`, and with `attributes` rows when given) over a private
        catalogue; trains on a seeded sample when the kind needs it (`kind="auto"`: see `over`)."""
        from recsys.catalogue import Catalogue

        ids = np.asarray(ids, dtype=object)
        if len(set(ids.tolist())) != len(ids):
            raise ValueError("ids must be unique")
        return cls.over(Catalogue.from_ids(ids.tolist(), prepare_vectors(vectors, len(ids), False),
                                           normalise_attributes(attributes, len(ids))), config)

    @classmethod
    def over(cls, catalogue: Catalogue, config: IndexConfig | None = None) -> "VectorIndex":
        """Index every row of `catalogue` (its vectors, L2-normalised when the config says so). `kind="auto"` is
        resolved for the number of rows (`choice.resolve_index`): `self.config` holds the kind built."""
        config = resolve_index(config or IndexConfig(), len(catalogue))
        state = catalogue.state
        return cls(new_index(config, prepare_vectors(state.vectors, len(state), config.normalize)), catalogue, config)

    # ---- live catalogue (through the catalogue: one change, one version) ------------------------
    def add(self, vectors: np.ndarray, ids: Sequence[Any], *, attributes: pl.DataFrame | dict | None = None) -> None:
        """Insert items without retraining (IVF assigns them to the existing lists). An id that is
        already present is replaced: its old row becomes a tombstone."""
        ids = list(ids)
        vectors = prepare_vectors(vectors, len(ids), False, self.dim)
        extra = normalise_attributes(attributes, len(ids))
        rows = extra.to_dicts() if extra is not None else [{} for _ in ids]
        self.catalogue.upsert([{**row, "item_id": item_id} for row, item_id in zip(rows, ids)], vectors)

    def add_texts(self, texts: Sequence[str], ids: Sequence[Any], encoder: TextEncoder, *,
                  attributes: pl.DataFrame | dict | None = None) -> None:
        """Encode new items' text with the item tower and insert them."""
        self.add(encoder.encode(list(texts)), ids, attributes=attributes)

    def remove(self, ids: Iterable[Any], *, missing_ok: bool = False) -> int:
        """Tombstone items: never returned again, forgotten by `position`; returns how many."""
        return self.catalogue.remove(ids, missing_ok=missing_ok)

    def deactivate(self, ids: Iterable[Any], *, missing_ok: bool = False) -> int:
        """Hide items (out of stock) but keep them known; `activate` reverses it."""
        return self.catalogue.set_active(ids, False, missing_ok=missing_ok)

    def activate(self, ids: Iterable[Any], *, missing_ok: bool = False) -> int:
        return self.catalogue.set_active(ids, True, missing_ok=missing_ok)

    def compact(self) -> int:
        """Drop removed rows for good (rows are renumbered; see `Catalogue.compact`). Returns the number of
        rows reclaimed."""
        return self.catalogue.compact()

    # ---- RowListener: the catalogue calls these ------------------------------------------------------
    def rows_added(self, vectors: np.ndarray) -> None:
        self.gpu = self._append(self.index, self.gpu, [vectors])

    def _append(self, master: faiss.Index, replica: GpuReplica | None,
                batches: Sequence[np.ndarray]) -> GpuReplica | None:
        """Add rows to `master` and its GPU replica, a batch at a time (each as `rows_added` got it); returns the
        replica (a sharded one is cloned again from the master, once)."""
        for vectors in batches:
            vectors = prepare_vectors(vectors, len(vectors), self.config.normalize, self.dim)
            add_in_chunks(master, vectors)
            if replica is not None and not replica.sharded:
                replica.add(vectors)
        if replica is not None and replica.sharded and len(batches):
            return to_gpu(master, self.config)
        return replica

    def compacted(self, keep: np.ndarray, rows: int, reading: Callable[[], AbstractContextManager] = nullcontext):
        """Build the compacted FAISS master (and GPU replica) aside, reading the serving master a list or a chunk of
        rows at a time inside `reading()` (rows may be appended between the reads); the returned install appends
        the rows added since and swaps them in (see `RowListener`)."""
        if self._layout.ivf is not None and self._empty is None:  # copied once: later compactions clone no rows
            self._empty = empty_copy(self.index, reading)
        master = compact_index(self.index, self.config, keep, rows, reading, self._empty)
        replica = to_gpu(master, self.config) if self.gpu is not None else None

        def install(appended: Sequence[np.ndarray]) -> None:
            self.index, self.gpu = master, self._append(master, replica, appended)
            self._layout, self._params_cache = Layout.of(master), {}

        return install

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
        scores, labels, state = self.search_rows(queries, k, exclude=exclude, exclude_per_query=exclude_per_query,
                                                 allow=allow, where=where, params=params)
        if not labels.size or labels.min() >= 0:
            return scores, state.ids[labels]
        ids = np.full(labels.shape, None, dtype=object)
        valid = labels >= 0
        ids[valid] = state.ids[labels[valid]]
        return scores, ids

    def similarities(self, query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """float32 [n]: the score a search with `query` [d] gives the items whose catalogue vectors are `vectors`
        [n, d]: the inner product with them as the index stores them (L2-normalised when the config says so), one
        dot product per item as the exact search rescores (an approximate index's own scores may differ)."""
        stored = prepare_vectors(vectors, len(vectors), self.config.normalize, self.dim)
        return np.einsum("md,d->m", stored, np.asarray(query, dtype=np.float32))

    def search_rows(self, queries: np.ndarray, k: int, *, exclude: Collection[Any] | None = None,
                    exclude_per_query: Sequence[Collection[Any] | None] | None = None,
                    allow: Collection[Any] | np.ndarray | None = None, where: Where | None = None,
                    params: SearchParams | None = None) -> tuple[np.ndarray, np.ndarray, CatalogueState]:
        """`search` as catalogue rows: (scores [n, w], rows int64 [n, w] with -1 for missing slots, the catalogue
        state the rows belong to)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        params = params or SearchParams()
        exclude = list(exclude) if exclude is not None else None
        if self.search_threads:
            pin_omp_threads(self.search_threads)
        with self.catalogue.reading() as state:
            width = max(0, min(int(k), state.n_available))
            if width == 0 or len(queries) == 0:
                return (np.full((len(queries), width), -np.inf, np.float32),
                        np.full((len(queries), width), -1, np.int64), state)
            if exclude_per_query is not None and len(exclude_per_query) != len(queries):
                raise ValueError(f"exclude_per_query has {len(exclude_per_query)} entries for {len(queries)} queries")
            mask, keep_alive = self._eligible(state, allow, where, exclude)
            per_rows = None
            if exclude_per_query is not None:
                per_rows = [rows_of(e, state.position) if e is not None else np.zeros(0, np.int64)
                            for e in exclude_per_query]
            if self._layout.flat is not None and self.gpu is None:  # exact: one GEMM per batch (see .exact)
                scores, labels = exact_top_k(self._flat_vectors(), queries, width, mask=mask, exclude_rows=per_rows,
                                             row_norm=self._row_norm())
                return scores, labels, state
            selector = keep_alive[0] if keep_alive else None
            n_eligible = state.n_available if mask is None else int(mask.sum())
            if per_rows is not None and mask is not None:
                per_rows = [r[mask[r]] for r in per_rows]
            if mask is None and per_rows is None and self.gpu is None:  # the common case, kept lean
                scores, labels = self.index.search(queries, width, params=self._faiss_params(params, None, 1, width))
                if labels[:, -1].min() < 0:  # an IVF probe came up short: refill
                    scores, labels = self._search(queries, width, mask, selector, n_eligible, per_rows, params)
            else:
                scores, labels = self._search(queries, width, mask, selector, n_eligible, per_rows, params)
        if labels.size and labels.min() < 0:
            scores = np.where(labels >= 0, scores, -np.inf).astype(np.float32)
        return scores, labels, state

    def _eligible(self, state: CatalogueState, allow, where, exclude) -> tuple[np.ndarray | None, tuple]:
        """Row mask of items a query may return (None: every row) + (selector, bitmap) to keep alive."""
        if allow is None and where is None and not exclude and state.n_available == len(state):
            return None, ()
        mask = state.available
        if where is not None:
            mask = mask & state.where_mask(where)
        if allow is not None:
            if isinstance(allow, np.ndarray) and allow.dtype == bool:
                if len(allow) != len(state):
                    raise ValueError(f"allow mask has {len(allow)} rows, the index {len(state)}")
                mask = mask & allow
            else:
                allowed = np.zeros(len(state), bool)
                allowed[rows_of(allow, state.position)] = True
                mask = mask & allowed
        if exclude:
            mask = mask.copy() if mask is state.available else mask
            mask[rows_of(exclude, state.position)] = False
        if mask is state.available:
            return mask, state.selector
        return mask, bitmap_selector(mask)

    def _search(self, queries, width, mask, selector, n_eligible, per_rows, params):
        """Each query searches as deep as its own exclusions need, in a group of the batch's queries that need the
        same: never as deep as the batch's longest, which changed an approximate index's results (IVF-PQ's refine
        pool, HNSW's beam) with whoever else was in the batch. A query's results are those it gets alone."""
        nq = len(queries)
        per_counts = np.array([len(r) for r in per_rows]) if per_rows is not None else np.zeros(nq, int)
        targets = np.minimum(width, n_eligible - per_counts)
        extra = per_counts
        out_l = np.full((nq, width), -1, np.int64)
        out_s = np.full((nq, width), -np.inf, np.float32)
        pending = np.arange(nq)
        if mask is None or n_eligible > params.exact_below:
            scale = len(self) / max(n_eligible, 1) if self.gpu is not None and mask is not None else 1.0
            fetch = np.ceil((width + extra) * scale).astype(np.int64)
            widen = np.ones(nq, np.int64)
            on_gpu = np.full(nq, self.gpu is not None)
            for _ in range(REFILL_ROUNDS):
                short = []
                for group in _groups(pending, fetch, widen, on_gpu):
                    if on_gpu[group[0]] and fetch[group[0]] > GPU_MAX_K:  # too deep for the GPU: CPU master
                        on_gpu[group], fetch[group] = False, width + extra[group]
                    k_fetch, wide = min(int(fetch[group[0]]), len(self)), int(widen[group[0]])
                    if on_gpu[group[0]]:
                        nprobe = (params.nprobe or self.config.nprobe) * wide if self._layout.ivf is not None else None
                        scores, labels = self.gpu.search(queries[group], k_fetch, nprobe)
                    else:
                        scores, labels = self.index.search(queries[group], k_fetch,
                                                           params=self._faiss_params(params, selector, wide, k_fetch))
                    short.append(self._collect(group, scores, labels, mask, per_rows, targets, out_l, out_s))
                pending = np.concatenate(short) if short else pending[:0]
                if not len(pending):
                    return out_s, out_l
                fetch[pending], widen[pending] = fetch[pending] * 4, widen[pending] * 4
        for group in _groups(pending, width + extra):
            scores, labels = self._exact(queries[group], min(width + int(extra[group[0]]), len(self)), selector)
            self._collect(group, scores, labels, mask, per_rows, targets, out_l, out_s)
        return out_s, out_l

    def _row_norm(self) -> float:
        """An upper bound on the stored vectors' L2 norms (the exact search's rounding bound): 1 when the config
        normalises them, else measured (cached until the row count changes)."""
        if self.config.normalize:
            return 1.0 + 1e-5
        cached = self._params_cache.get("row_norm")
        if cached is None or cached[0] != len(self):
            vectors = self._flat_vectors()
            cached = self._params_cache["row_norm"] = (len(self), float(np.sqrt(
                np.einsum("ij,ij->i", vectors, vectors).max(initial=0.0))))
        return cached[1]

    def _flat_vectors(self) -> np.ndarray:
        """The fp32 flat index's stored vectors [rows, dim], a view (taken per search: `add` may move them)."""
        flat = self._layout.flat
        return faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)

    def _faiss_params(self, params: SearchParams, selector, widen: int, k: int) -> faiss.SearchParameters:
        if selector is not None:
            return faiss_params(self._layout, self.config, params, selector, widen, k)
        key = (params, widen, refine_factor(self.config, params, k) if self._layout.refine else None)
        cached = self._params_cache.get(key)
        if cached is None:
            cached = self._params_cache[key] = faiss_params(self._layout, self.config, params, None, widen, k)
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
        """index.faiss (CPU master) + ids.npy + state.npy (the catalogue's flags) + config.json
        (+ attributes.parquet)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self.catalogue.reading() as state:
            faiss.write_index(self.index, str(directory / "index.faiss"))
            np.save(directory / "ids.npy", state.ids.astype(str), allow_pickle=False)
            np.save(directory / "state.npy", state.flags, allow_pickle=False)
            (directory / "config.json").write_text(self.config.model_dump_json(indent=2))
            if state.attributes is not None:
                state.attributes.write_parquet(directory / "attributes.parquet")

    @staticmethod
    def read_parts(directory: str | Path) -> tuple[faiss.Index, np.ndarray, np.ndarray | None, IndexConfig]:
        """(FAISS index, ids, state flags or None for old bundles, config) from a saved index directory."""
        directory = Path(directory)
        config = IndexConfig.model_validate_json((directory / "config.json").read_text())
        index = faiss.read_index(str(directory / "index.faiss"))
        ids = np.load(directory / "ids.npy", allow_pickle=False).astype(object)
        state = np.load(directory / "state.npy", allow_pickle=False) if (directory / "state.npy").exists() else None
        return index, ids, state, config

    @classmethod
    def load(cls, directory: str | Path) -> "VectorIndex":
        """A saved index with a private catalogue (ids, flags, attributes; vectors reconstructed from FAISS)."""
        from recsys.catalogue import Catalogue

        directory = Path(directory)
        index, ids, state, config = cls.read_parts(directory)
        attributes = pl.read_parquet(directory / "attributes.parquet") \
            if (directory / "attributes.parquet").exists() else None
        frame = pl.DataFrame({"item_id": ids.tolist()})
        if attributes is not None:
            frame = pl.concat([frame, attributes], how="horizontal")
        vectors = reconstruct_rows(index, np.arange(index.ntotal))
        return cls(index, Catalogue(frame, vectors, state), config)


def reconstruct_all(index: VectorIndex) -> np.ndarray:
    """All stored vectors in row order, aligned with `index.ids` (float32; PQ rows approximate)."""
    with index.catalogue._lock.write():  # an IVF index may build its direct map here
        return reconstruct_rows(index.index, np.arange(len(index)))


def _groups(rows: np.ndarray, *keys: np.ndarray) -> list[np.ndarray]:
    """`rows` split by their values in `keys` (arrays over all rows), each group in `rows`' order."""
    if not len(rows):
        return []
    values = np.stack([np.asarray(key)[rows] for key in keys], axis=1)
    _, which = np.unique(values, axis=0, return_inverse=True)
    return [rows[which.ravel() == g] for g in range(int(which.max()) + 1)]


def _member(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`np.isin(values, rows)`; a broadcast compare for the small arrays of one request (~7x faster)."""
    if len(values) * len(rows) <= 1 << 16:
        return (values[:, None] == rows[None, :]).any(axis=1)
    return np.isin(values, rows)


__all__ = ["VectorIndex", "TextEncoder", "reconstruct_all"]

