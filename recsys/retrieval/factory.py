"""Build, train, parameterise and compact FAISS indexes described by an `IndexConfig`."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import faiss
import numpy as np

from recsys.config import IndexConfig
from recsys.errors import SettingError

METRIC = faiss.METRIC_INNER_PRODUCT
MIN_POINTS_PER_LIST = 39  # below this faiss k-means warns and centroids are poor


@dataclass(frozen=True)
class SearchParams:
    """Per-query search settings; `None` means the index config's value.

    `exact_below`: a filtered search whose eligible set has at most this many items scores those
    items exactly (brute force) instead of walking the ANN structure.
    """

    nprobe: int | None = None
    ef_search: int | None = None
    refine_factor: int | None = None
    exact_below: int = 2048


def choose_nlist(n: int, config: IndexConfig) -> int:
    """Inverted lists for `n` training vectors: the configured value (at most n), or a power of two
    near 4·√n with at least `MIN_POINTS_PER_LIST` vectors per list."""
    if config.nlist is not None:
        return max(1, min(config.nlist, n))
    target = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    return int(max(1, min(target, n // MIN_POINTS_PER_LIST)))


def factory_string(config: IndexConfig, dim: int, nlist: int) -> str:
    """The `faiss.index_factory` description of the index (also a readable label)."""
    storage = "SQfp16" if config.float16 else "Flat"
    if config.kind == "flat":
        return storage
    if config.kind == "hnsw":
        return f"HNSW{config.hnsw_m},{storage}"
    if config.kind == "ivf_flat":
        return f"IVF{nlist},{storage}"
    if config.kind != "ivf_pq":
        raise ValueError(f"index kind {config.kind!r} must be resolved first (recsys.retrieval.choice.resolve_index)")
    pq_m = config.pq_m or default_pq_m(dim)
    if dim % pq_m:
        raise SettingError(f"index.pq_m={pq_m} must divide the vector dimension {dim}")
    opq = f"OPQ{pq_m}," if config.opq else ""
    refine = {"none": "", "flat": ",RFlat", "fp16": ",Refine(SQfp16)"}[config.refine]
    return f"{opq}IVF{nlist},PQ{pq_m}x{config.pq_nbits}{refine}"


def default_pq_m(dim: int) -> int:
    """The largest divisor of `dim` up to dim / 8 (8 dimensions per sub-quantizer: 384 → 48, 512 → 64)."""
    return max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)


def ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
    """The IndexIVF inside `index` (through OPQ / refine wrappers), or None."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def hnsw_of(index: faiss.Index) -> faiss.IndexHNSW | None:
    index = faiss.downcast_index(index)
    return index if isinstance(index, faiss.IndexHNSW) else None


def new_index(config: IndexConfig, vectors: np.ndarray) -> faiss.Index:
    """An index of `config.kind`, trained on a seeded sample of `vectors` when the type needs it,
    holding all `vectors` in row order (faiss label = row)."""
    n, dim = vectors.shape
    nlist = choose_nlist(n, config) if config.kind.startswith("ivf") else 0
    index = faiss.index_factory(dim, factory_string(config, dim, nlist), METRIC)
    hnsw = hnsw_of(index)
    if hnsw is not None:
        hnsw.hnsw.efConstruction = config.ef_construction
        hnsw.hnsw.efSearch = config.ef_search
    ivf = ivf_of(index)
    if ivf is not None:
        ivf.nprobe = min(config.nprobe, ivf.nlist)
        ivf.cp.seed = config.seed
        ivf.cp.niter = config.kmeans_iters
        ivf.verbose = False
        if isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQ):
            pq_ivf = faiss.downcast_index(ivf)
            pq_ivf.pq.cp.seed = config.seed
            pq_ivf.pq.cp.niter = config.kmeans_iters
            pq_ivf.do_polysemous_training = False  # the factory turns on a slow annealing step we never use
    if not index.is_trained:
        check_trainable(config, n)
        rng = np.random.default_rng(config.seed)
        sample = vectors if n <= config.train_size \
            else vectors[np.sort(rng.choice(n, config.train_size, replace=False))]
        index.train(np.ascontiguousarray(sample))
    add_in_chunks(index, vectors)
    return index


def check_trainable(config: IndexConfig, n: int) -> None:
    """SettingError when an index of `config.kind` that must be trained cannot be on `n` vectors (IVF-PQ: fewer
    than 2**pq_nbits; IVF: none)."""
    if config.kind == "ivf_pq" and n < 2 ** config.pq_nbits:
        raise SettingError(f"an ivf_pq index needs at least 2**index.pq_nbits = {2 ** config.pq_nbits} items to "
                           f"train, got {n}: choose another index kind (auto picks exact search for this size)")
    if config.kind.startswith("ivf") and n == 0:
        raise SettingError(f"a {config.kind} index needs training vectors, got none")


def add_in_chunks(index: faiss.Index, vectors: np.ndarray, chunk: int = 262_144) -> None:
    for start in range(0, len(vectors), chunk):
        index.add(np.ascontiguousarray(vectors[start:start + chunk]))


@dataclass(frozen=True)
class Layout:
    """Where the tunable parts of a faiss index sit (looked up once, not on every search)."""

    ivf: faiss.IndexIVF | None
    hnsw: faiss.IndexHNSW | None
    refine: bool
    flat: faiss.IndexFlat | None = None  # a plain fp32 flat index (searched by `exact.exact_top_k`)

    @classmethod
    def of(cls, index: faiss.Index) -> "Layout":
        outer = faiss.downcast_index(index)
        flat = outer if type(outer) in (faiss.IndexFlat, faiss.IndexFlatIP) else None
        return cls(ivf_of(index), hnsw_of(index), isinstance(outer, faiss.IndexRefine), flat)


def refine_factor(config: IndexConfig, params: SearchParams | None, k: int | None) -> float:
    """PQ candidates fetched per result before the refine step re-scores them: the call's own factor when it
    gives one, else the config's, lowered for deep searches so that at most `refine_max` candidates per query
    are re-scored (never below 2). On 100k items (IVF-PQ, nprobe 48), a top-200 search re-scoring 400 candidates
    (factor 2) has recall@200 0.973 against exact search (0.998 at 800, 0.999 at 1,600) and recall@10 0.996 (the
    same), in 70 % of the time at 800; the re-ranker's test N@10 on those candidates does not change."""
    if params is not None and params.refine_factor:
        return float(params.refine_factor)
    factor = float(config.refine_factor)
    if k is not None and k * factor > config.refine_max:
        factor = max(config.refine_max / k, min(factor, 2.0))
    return factor


def faiss_params(layout: Layout, config: IndexConfig, params: SearchParams | None,
                 selector: faiss.IDSelector | None = None, widen: int = 1, k: int | None = None
                 ) -> faiss.SearchParameters:
    """faiss SearchParameters for one search call of depth `k` (thread-safe: the index itself is not mutated).
    `widen` multiplies nprobe / efSearch (used when a filtered search must refill)."""
    factor = refine_factor(config, params, k)
    params = params or SearchParams()
    if layout.ivf is not None:
        inner = faiss.SearchParametersIVF()
        inner.nprobe = int(min(layout.ivf.nlist, (params.nprobe or config.nprobe) * widen))
    elif layout.hnsw is not None:
        inner = faiss.SearchParametersHNSW()
        inner.efSearch = int((params.ef_search or config.ef_search) * widen)
    else:
        inner = faiss.SearchParameters()
    if selector is not None:
        inner.sel = selector
    if layout.refine:
        outer = faiss.IndexRefineSearchParameters()
        outer.k_factor = factor
        outer.base_index_params = inner
        outer.keep_alive = (inner, selector)  # SWIG holds raw pointers only
        return outer
    inner.keep_alive = selector
    return inner


def exhaustive_params(layout: Layout, config: IndexConfig, selector: faiss.IDSelector | None) -> faiss.SearchParameters:
    """Parameters that make an IVF search visit every list (exact over the selected items up to
    the codes' precision)."""
    nprobe = layout.ivf.nlist if layout.ivf is not None else None
    return faiss_params(layout, config, SearchParams(nprobe=nprobe), selector)


def empty_copy(index: faiss.Index, hold: Callable[[], AbstractContextManager] = nullcontext) -> faiss.Index:
    """A trained copy of `index` holding no rows (the clone reads `index` inside `hold()`): what `compact_index`
    clones for IVF kinds, so that later compactions copy no rows twice."""
    with hold():
        empty = faiss.clone_index(index)
    empty.reset()
    return empty


def compact_index(index: faiss.Index, config: IndexConfig, keep: np.ndarray, rows: int | None = None,
                  hold: Callable[[], AbstractContextManager] = nullcontext, empty: faiss.Index | None = None,
                  chunk: int = 65_536) -> faiss.Index:
    """A new index holding only rows `keep` (old labels, ascending, below `rows`: default all), relabelled
    0..len(keep)-1.

    IVF kinds move their stored codes list by list (exact, no retraining, no re-encoding; `empty`: a trained empty
    copy of `index` to start from, see `empty_copy`); flat and HNSW rebuild from their stored vectors. Every read of
    `index` runs inside `hold()`, a short one each (one inverted list, or `chunk` rows): a caller may let rows be
    appended to `index` between them (rows past `rows`, which are left out), and the reads see the same first `rows`
    rows throughout."""
    keep = np.asarray(keep, dtype=np.int64)
    rows = index.ntotal if rows is None else int(rows)

    def gathered(source: faiss.Index) -> np.ndarray:
        parts = [np.zeros((0, index.d), np.float32)]
        for start in range(0, len(keep), chunk):
            with hold():
                parts.append(source.reconstruct_batch(keep[start:start + chunk]))
        return np.concatenate(parts)

    old_ivf = ivf_of(index)
    if old_ivf is None:
        vectors = gathered(index)
        fresh = faiss.index_factory(index.d, factory_string(config, index.d, 0), METRIC)
        if hnsw_of(fresh) is not None:
            hnsw_of(fresh).hnsw.efConstruction = config.ef_construction
            hnsw_of(fresh).hnsw.efSearch = config.ef_search
        if not fresh.is_trained:
            fresh.train(vectors)
        add_in_chunks(fresh, vectors)
        return fresh
    fresh = faiss.clone_index(empty) if empty is not None else empty_copy(index, hold)
    new_ivf = ivf_of(fresh)
    new_ivf.make_direct_map(False)
    remap = np.full(rows, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep), dtype=np.int64)
    code_size = old_ivf.code_size
    for list_no in range(old_ivf.nlist):
        with hold():  # (an append may move a list's storage: its pointers are taken afresh each time)
            old_lists = old_ivf.invlists
            size = old_lists.list_size(list_no)
            if not size:
                continue
            labels = faiss.rev_swig_ptr(old_lists.get_ids(list_no), size).copy()
            codes = faiss.rev_swig_ptr(old_lists.get_codes(list_no), size * code_size).copy().reshape(size, code_size)
        kept = labels < rows
        kept[kept] = remap[labels[kept]] >= 0
        if kept.any():
            new_labels = np.ascontiguousarray(remap[labels[kept]])
            new_codes = np.ascontiguousarray(codes[kept])
            new_ivf.invlists.add_entries(list_no, int(kept.sum()), faiss.swig_ptr(new_labels),
                                         faiss.swig_ptr(new_codes))
    new_ivf.ntotal = len(keep)
    outer = faiss.downcast_index(fresh)
    if isinstance(outer, faiss.IndexRefine):
        if len(keep):
            outer.refine_index.add(gathered(faiss.downcast_index(index).refine_index))
        inner = faiss.downcast_index(outer.base_index)
        if isinstance(inner, faiss.IndexPreTransform):
            inner.ntotal = len(keep)
        outer.base_index.ntotal = len(keep)
    elif isinstance(outer, faiss.IndexPreTransform):
        outer.ntotal = len(keep)
    fresh.ntotal = len(keep)
    return fresh


def reconstruct_rows(index: faiss.Index, rows: np.ndarray) -> np.ndarray:
    """Stored vectors of `rows` (IVF kinds get a direct map on first use; PQ rows are approximate)."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros((0, index.d), dtype=np.float32)
    ivf = ivf_of(index)
    if ivf is not None and not isinstance(faiss.downcast_index(index), faiss.IndexRefine) \
            and ivf.direct_map.type == faiss.DirectMap.NoMap:
        ivf.make_direct_map(True)
    return index.reconstruct_batch(rows)


__all__ = ["SearchParams", "Layout", "choose_nlist", "factory_string", "default_pq_m", "new_index", "faiss_params",
           "refine_factor", "exhaustive_params",
           "compact_index", "empty_copy", "reconstruct_rows", "ivf_of", "hnsw_of", "METRIC"]
