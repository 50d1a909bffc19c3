"""ANN benchmark: for exact / HNSW / IVF-Flat / IVF-PQ indexes over 384-d catalogues, build time,
index size, recall@10 and recall@100 against exact search, and queries/s one query at a time and in
batches of 256. Writes ann.json, ann.md and ann.png (recall@100 vs single-query QPS).

    python -m benchmarks.ann --sizes 10000,100000,1000000 --out results/ann
    recsys bench ann --sizes 10000,100000,1000000 --out results/ann

Everything goes through `recsys.retrieval.VectorIndex` (the serving code path, raw-id mapping
included). Single-query rows use `--single-threads` faiss threads (default 1: one request per
thread, the exact baseline measured the same way); builds and batches use `--threads`.

On a shared machine run with OMP_WAIT_POLICY=PASSIVE (set here when this module is the first to load
faiss): spinning OpenMP threads made 2-thread faiss training 5-10× slower under contention.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no effect if faiss (libgomp) is already loaded

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import Column, environment, rss_mb, write_report
from recsys.config import IndexConfig  # noqa: E402
from recsys.retrieval import SearchParams, VectorIndex, clustered_embeddings, gpu_count  # noqa: E402
from recsys.text_format import counted

DIM, K, BATCH = 384, 100, 256
TARGET_RECALL, TARGET_SPEEDUP = 0.95, 20.0
KINDS = ("flat", "hnsw", "ivf_flat", "ivf_pq")
COLUMNS = [Column("dataset"), Column("index"), Column("search"), Column("build_s", "build s", ".1f"),
           Column("index_mb", "index MiB", ",.0f"), Column("recall@10", "R@10", ".3f"),
           Column("recall@100", "R@100", ".3f"), Column("qps_single_cpu", "QPS 1×1 /CPU-s", ",.0f"),
           Column("qps_single", "QPS 1×1 wall", ",.0f"), Column("qps_batch", f"QPS {BATCH}× wall", ",.0f"),
           Column("speedup", "× exact", ".1f"), Column("target", "target")]


@dataclass(frozen=True)
class Variant:
    label: str
    config: IndexConfig
    settings: tuple[SearchParams, ...] = (SearchParams(),)
    refine_of: str | None = None  # re-rank that ivf_pq variant's codes with fp16 vectors (shares its build)


def ivf_shape(n: int) -> dict:
    """nlist and training sample per size: ~4·√n lists up to 100k items; 2,048 at 1M, where 4,096 lists
    would double k-means and assignment time on 2 cores (trained on a 100k sample, 10 iterations)."""
    nlist = {10_000: 256, 100_000: 1024}.get(n, 2048 if n >= 500_000 else None)
    nlist = nlist or max(1, min(2 ** round(math.log2(4 * math.sqrt(n))), n // 39))
    return {"nlist": nlist, "train_size": min(n, 50 * nlist, 100_000), "kmeans_iters": 10}


def plan(n: int, kinds: Sequence[str], *, opq: bool = False, gpus: int = 0) -> list[Variant]:
    """Index variants and search settings for a catalogue of n items, cheapest builds first."""
    cpu = {"gpu": "off"}
    ivf = ivf_shape(n)
    out: list[Variant] = []
    if "flat" in kinds:
        out += [Variant("flat (exact)", IndexConfig(**cpu)), Variant("flat fp16", IndexConfig(float16=True, **cpu))]
    if "ivf_flat" in kinds:
        out.append(Variant(f"IVF{ivf['nlist']},Flat", IndexConfig(kind="ivf_flat", **ivf, **cpu),
                           tuple(SearchParams(nprobe=p) for p in (4, 8, 16, 32, 64, 128))))
    if "ivf_pq" in kinds:
        pq = IndexConfig(kind="ivf_pq", pq_m=48, **ivf, **cpu)
        label = f"IVF{ivf['nlist']},PQ48"
        out.append(Variant(label, pq, tuple(SearchParams(nprobe=p) for p in (8, 16, 32, 64))))
        out.append(Variant(label + " + fp16 refine", pq.model_copy(update={"refine": "fp16"}),
                           tuple(SearchParams(nprobe=p, refine_factor=f)
                                 for p, f in ((16, 4), (32, 4), (64, 4), (64, 8))),
                           refine_of=label))
        if opq and n <= 100_000:
            out.append(Variant(f"OPQ48,IVF{ivf['nlist']},PQ48 + fp16 refine",
                               pq.model_copy(update={"opq": True, "refine": "fp16"}),
                               tuple(SearchParams(nprobe=p) for p in (16, 32, 64))))
    if "hnsw" in kinds:
        efs = (32, 64, 128, 256, 512)
        out.append(Variant("HNSW16 (efC 40)", IndexConfig(kind="hnsw", hnsw_m=16, ef_construction=40, **cpu),
                           tuple(SearchParams(ef_search=e) for e in efs)))
        if n <= 200_000:  # 2x the build time of M=16; at 1M that is ~20 min on 2 shared cores
            out.append(Variant("HNSW32 (efC 80)", IndexConfig(kind="hnsw", hnsw_m=32, ef_construction=80, **cpu),
                               tuple(SearchParams(ef_search=e) for e in efs[1:])))
    if gpus:
        if "flat" in kinds:
            out.append(Variant("GPU flat", IndexConfig(gpu="auto")))
        if "ivf_flat" in kinds:
            out.append(Variant(f"GPU IVF{ivf['nlist']},Flat", IndexConfig(kind="ivf_flat", gpu="auto", **ivf),
                               tuple(SearchParams(nprobe=p) for p in (16, 64, 256))))
    return out


def read_embeddings(path: Path) -> np.ndarray:
    """Item vectors from a .npy file as float32 [n, d]; DataError (one line) for a file that is no such array: not
    .npy, pickled objects, not two-dimensional, fewer than `MIN_EMBEDDINGS` rows, non-finite values (was a numpy
    traceback, after the synthetic catalogues had run)."""
    from recsys.errors import DataError

    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"not a .npy array of item vectors ({str(error).split('.')[0]})", source=str(path)) from None
    if vectors.ndim != 2 or vectors.shape[0] < MIN_EMBEDDINGS or not np.issubdtype(vectors.dtype, np.number):
        raise DataError(f"expected item vectors as a numeric [n, d] array with n ≥ {MIN_EMBEDDINGS}, got shape "
                        f"{vectors.shape} of {vectors.dtype}", source=str(path))
    vectors = vectors.astype(np.float32)
    if not np.isfinite(vectors).all():
        raise DataError("the item vectors hold NaN or infinite values", source=str(path))
    return vectors


MIN_EMBEDDINGS = 10 * K
"""Rows an --embeddings file needs: a tenth is held out as queries, and recall@K needs K items."""


def load_dataset(n: int | None, n_queries: int, seed: int,
                 embeddings: Path | None) -> tuple[str, np.ndarray, np.ndarray]:
    """(name, items, queries): seeded synthetic clusters, or a real .npy with held-out query rows."""
    if embeddings is None:
        items, queries = clustered_embeddings(n, DIM, n_queries=n_queries, seed=seed)
        return f"synthetic {n:,} × {DIM}", items, queries
    vectors = read_embeddings(embeddings)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    order = np.random.default_rng(seed).permutation(len(vectors))
    held = min(n_queries, len(vectors) // 10)
    return (f"{embeddings.stem} {len(vectors) - held:,} × {vectors.shape[1]}", vectors[order[held:]],
            vectors[order[:held]])


def log(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:7.1f}s] {message}", file=sys.stderr, flush=True)


def build(variant: Variant, items: np.ndarray, ids: np.ndarray, built: dict) -> tuple[VectorIndex, float, float]:
    """(index, build seconds, RSS growth MiB); a refine variant re-uses its ivf_pq variant's codes."""
    rss, start = rss_mb(), time.perf_counter()
    if variant.refine_of is not None:
        base, base_s, _ = built[variant.refine_of]
        refine = faiss.IndexScalarQuantizer(items.shape[1], faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        refine.add(items)
        wrapped = faiss.IndexRefine(base.index, refine)
        wrapped.k_factor = variant.config.refine_factor
        index = VectorIndex(wrapped, base.catalogue, variant.config)  # the same rows: search only, never edited
        index._keep_alive = (base, refine)  # the wrapper holds raw pointers only
        return index, base_s + time.perf_counter() - start, rss_mb() - rss
    index = VectorIndex.build(items, ids, variant.config)
    return index, time.perf_counter() - start, rss_mb() - rss


def measure(index: VectorIndex, queries: np.ndarray, truth: np.ndarray | None, params: SearchParams, *,
            threads: int, single_threads: int, single_queries: int, max_seconds: float) -> tuple[dict, np.ndarray]:
    """Batched pass over all queries (timed; gives recall) then a capped single-query loop. Rates are
    per wall-clock second and per CPU-second of this process (robust when other jobs share the CPUs)."""
    faiss.omp_set_num_threads(threads)
    index.search(queries[:8], K, params=params)  # warm-up
    found = np.empty((len(queries), K), dtype=object)
    wall, cpu = time.perf_counter(), time.process_time()
    for s in range(0, len(queries), BATCH):
        found[s:s + BATCH] = index.search(queries[s:s + BATCH], K, params=params)[1]
    batch_wall, batch_cpu = time.perf_counter() - wall, time.process_time() - cpu
    faiss.omp_set_num_threads(single_threads)
    done, wall, cpu = 0, time.perf_counter(), time.process_time()
    while done < min(single_queries, len(queries)):
        index.search(queries[done:done + 1], K, params=params)
        done += 1
        if done >= 20 and time.perf_counter() - wall > max_seconds:
            break
    single_wall, single_cpu = time.perf_counter() - wall, time.process_time() - cpu
    faiss.omp_set_num_threads(threads)
    truth = found if truth is None else truth
    recall = {f"recall@{k}": float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))
              for k in (10, K)}
    return {**recall, "qps_single": done / single_wall, "qps_single_cpu": done / max(single_cpu, 1e-9),
            "qps_batch": len(queries) / batch_wall, "qps_batch_cpu": len(queries) / max(batch_cpu, 1e-9),
            "single_queries": done}, found


def describe(params: SearchParams, config: IndexConfig) -> str:
    if config.kind == "hnsw":
        return f"efSearch={params.ef_search}"
    if config.kind.startswith("ivf"):
        refine = f", k_factor={params.refine_factor}" if config.refine != "none" else ""
        return f"nprobe={params.nprobe}{refine}"
    return "exhaustive"


def target_notes(rows: Sequence[dict]) -> list[str]:
    notes = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        group = [r for r in rows if r["dataset"] == dataset and r.get("speedup") is not None]
        hits = [r for r in group if r["recall@100"] >= TARGET_RECALL and r["speedup"] >= TARGET_SPEEDUP]
        good = [r for r in group if r["recall@100"] >= TARGET_RECALL and r["index"] != "flat (exact)"]
        if hits:
            best = max(hits, key=lambda r: r["speedup"])
            notes.append(f"{dataset}: target met — {best['index']} {best['search']}: R@100 {best['recall@100']:.3f} "
                         f"at {best['speedup']:.0f}× the exact index's single-query rate ({len(hits)} of {len(group)} "
                         "rows qualify).")
        elif good:
            best = max(good, key=lambda r: r["speedup"])
            notes.append(f"{dataset}: target missed — fastest with R@100 ≥ {TARGET_RECALL}: {best['index']} "
                         f"{best['search']} at {best['speedup']:.1f}× (needs {TARGET_SPEEDUP:.0f}×).")
        elif group:
            notes.append(f"{dataset}: no configuration reached R@100 ≥ {TARGET_RECALL}.")
    return notes


def family(label: str) -> str:
    """Index label without its list count, so a family keeps one colour across catalogue sizes."""
    return re.sub(r"IVF\d+", "IVF", label)


def chart(rows: Sequence[dict], path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    families = list(dict.fromkeys(family(r["index"]) for r in rows if r["index"] != "flat (exact)"))
    colours = dict(zip(families, plt.cm.tab10.colors * 3))
    ncols = 2 if len(datasets) == 4 else min(len(datasets), 3)
    nrows = math.ceil(len(datasets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7.0 * ncols, 5.6 * nrows), squeeze=False)
    for ax in axes.flat[len(datasets):]:
        ax.set_visible(False)
    for ax, dataset in zip(axes.flat, datasets):
        group = [r for r in rows if r["dataset"] == dataset]
        exact = next((r for r in group if r["index"] == "flat (exact)"), None)
        for label in dict.fromkeys(r["index"] for r in group):
            points = sorted((r["qps_single_cpu"], r["recall@100"], r["search"]) for r in group if r["index"] == label)
            xs, ys, settings = zip(*points)
            if label == "flat (exact)":
                ax.plot(xs, ys, marker="*", markersize=15, linestyle="none", color="black", label=label)
                continue
            ax.plot(xs, ys, marker="o", markersize=4, color=colours[family(label)], label=label)
            for x, y, setting in points:
                if setting != "exhaustive":
                    ax.annotate("/".join(re.findall(r"=(\d+)", setting)), (x, y), textcoords="offset points",
                                xytext=(3, 3), fontsize=6, color=colours[family(label)])
        ax.axhline(TARGET_RECALL, color="grey", linestyle="--", linewidth=1)
        if exact:
            ax.axvline(TARGET_SPEEDUP * exact["qps_single_cpu"], color="grey", linestyle=":", linewidth=1)
            ax.text(TARGET_SPEEDUP * exact["qps_single_cpu"], 0.01, f" {TARGET_SPEEDUP:.0f}× exact", color="grey",
                    transform=ax.get_xaxis_transform(), fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(max(0.0, min(r["recall@100"] for r in group) - 0.03), 1.01)
        ax.set_xlabel("queries per CPU-second, one query per call, 1 thread (log)")
        ax.set_ylabel("recall@100 vs exact")
        ax.set_title(dataset)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"ANN recall vs speed — target: recall@100 ≥ {TARGET_RECALL} (dashed) at ≥ {TARGET_SPEEDUP:.0f}× "
                 "the exact index (dotted), i.e. up and to the right\nPoint labels: nprobe or efSearch (/k_factor)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rewrite_report(out: str | Path, name: str = "ann") -> dict[str, Path]:
    """Re-render ann.md and ann.png from ann.json (e.g. after a formatting change)."""
    import json

    data = json.loads((Path(out) / f"{name}.json").read_text())
    return write_report(out, name, data["rows"], COLUMNS, title="ANN retrieval benchmark", meta=data["meta"],
                        group_by="dataset", notes=report_notes(data["meta"], data["rows"]), chart=chart)


def run(sizes: Sequence[int] = (10_000, 100_000, 1_000_000), out: str | Path = "results/ann", *, n_queries: int = 1000,
        threads: int = 0, single_threads: int = 1, single_queries: int = 300, max_seconds: float = 20.0, seed: int = 0,
        kinds: Sequence[str] = KINDS, embeddings: str | Path | None = None, opq: bool = False,
        name: str = "ann") -> dict[str, Path]:
    """Run every (dataset, variant, search setting); the report is rewritten after each variant."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown index kinds {sorted(unknown)}; choose from {KINDS}")
    threads = threads or faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    gpus = gpu_count()
    datasets = [(n, None) for n in sizes] + ([(None, Path(embeddings))] if embeddings else [])
    meta = {"environment": environment(), "k": K, "batch": BATCH, "queries": n_queries, "threads": threads,
            "single_threads": single_threads, "single_queries": single_queries, "max_seconds": max_seconds,
            "seed": seed, "gpus": gpus, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    rows: list[dict] = []
    paths: dict[str, Path] = {}
    clock = time.perf_counter()
    for n, source in datasets:
        name_, items, queries = load_dataset(n, n_queries, seed, source)
        ids = np.arange(len(items)).astype(str).astype(object)
        log(f"{name_}: {len(queries)} queries", clock)
        truth, exact_qps, built = None, None, {}
        variants = plan(len(items), kinds, opq=opq, gpus=gpus)
        if "flat" not in kinds:
            variants.insert(0, Variant("flat (exact)", IndexConfig(gpu="off")))
        for variant in variants:
            cpu = time.process_time()
            index, build_s, rss_growth = build(variant, items, ids, built)
            build_cpu_s = time.process_time() - cpu
            index_mb = faiss.serialize_index(index.index).nbytes / 2**20 if index.gpu is None else None
            log(f"  {variant.label}: built in {build_s:.1f}s, {index_mb or 0:,.0f} MiB", clock)
            for params in variant.settings:
                stats, found = measure(index, queries, truth, params, threads=threads, single_threads=single_threads,
                                       single_queries=single_queries, max_seconds=max_seconds)
                if variant.label == "flat (exact)":
                    truth, exact_qps = found, stats["qps_single_cpu"]
                row = {"dataset": name_, "n": len(items), "dim": items.shape[1], "index": variant.label,
                       "search": describe(params, variant.config), "device": "gpu" if index.gpu else "cpu",
                       "build_s": build_s, "build_cpu_s": build_cpu_s, "index_mb": index_mb,
                       "build_rss_mb": rss_growth, "load_1m": os.getloadavg()[0], **stats,
                       "speedup": stats["qps_single_cpu"] / exact_qps if exact_qps else None}
                row["target"] = "✓" if row["recall@100"] >= TARGET_RECALL and (row["speedup"] or 0) >= TARGET_SPEEDUP \
                    else ""
                log(f"    {row['search']}: R@10 {row['recall@10']:.3f} R@100 {row['recall@100']:.3f} "
                    f"QPS 1×1 {row['qps_single_cpu']:,.0f}/CPU-s {row['qps_single']:,.0f} wall "
                    f"({row['speedup'] or 0:.1f}×) QPS batch {row['qps_batch']:,.0f}", clock)
                if variant.label in ("flat (exact)",) and "flat" not in kinds:
                    continue
                rows.append(row)
            if variant.config.kind == "ivf_pq" and variant.refine_of is None:
                built[variant.label] = (index, build_s, build_cpu_s)
            else:
                del index
            gc.collect()
            paths = write_report(out, name, rows, COLUMNS, title="ANN retrieval benchmark", meta=meta,
                                 group_by="dataset", notes=report_notes(meta, rows), chart=chart)
        built.clear()
        del items, queries, truth
        gc.collect()
    log(f"done: {', '.join(str(p) for p in paths.values())}", clock)
    return paths


def report_notes(meta: dict, rows: Sequence[dict]) -> list[str]:
    return [
        f"k={meta['k']}; recall against exact inner-product search over the same vectors; {meta['queries']} queries "
        f"per dataset (held-out draws, never catalogue rows); seed {meta['seed']}.",
        f"QPS 1×1: one query per call on {counted(meta['single_threads'], 'faiss thread')}, over the first "
        f"{meta['single_queries']} queries or {meta['max_seconds']:g} s, per CPU-second of the process (the "
        "× exact column and the chart use this rate: other jobs shared the CPUs, see load below) and per wall "
        f"second; QPS {BATCH}×: batches of {BATCH} on {counted(meta['threads'], 'thread')}, wall clock. All through "
        "VectorIndex.search (raw-id mapping included).",
        "index MiB: faiss.serialize_index size; build s includes training (IVF: seeded sample, 10 k-means iterations). "
        "The fp16-refine rows re-use the IVF-PQ row's trained and filled codes (build s = both).",
        "Synthetic data: recsys.retrieval.clustered_embeddings (categories → product families → items, low-rank, "
        "anisotropic), calibrated on all-MiniLM-L6-v2 item embeddings of the benchmark data sets.",
        *target_notes(rows),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ann", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated synthetic catalogue sizes")
    parser.add_argument("--out", default="results/ann")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0, help="faiss threads for builds and batches (0: all)")
    parser.add_argument("--single-threads", type=int, default=1)
    parser.add_argument("--single-queries", type=int, default=300)
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time cap per single-query loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--embeddings", default=None, help="also benchmark these item vectors (.npy, float32 [n, d])")
    parser.add_argument("--opq", action="store_true", help="add an OPQ variant (n ≤ 100k; slow to train)")
    parser.add_argument("--name", default="ann")
    parser.add_argument("--report-only", action="store_true", help="re-render .md and .png from an existing .json")
    args = parser.parse_args(argv)
    if args.report_only:
        rewrite_report(args.out, args.name)
        return
    run(parse_sizes(args.sizes), args.out, n_queries=args.queries, threads=args.threads,
        single_threads=args.single_threads, single_queries=args.single_queries, max_seconds=args.max_seconds,
        seed=args.seed, kinds=[k.strip() for k in args.kinds.split(",") if k.strip()], embeddings=args.embeddings,
        opq=args.opq, name=args.name)


def parse_sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s.strip()]


if __name__ == "__main__":
    main()
