"""In-process engine cost: what one query costs the served pipeline on one thread, by query kind, with the
bundle's re-ranker and without it, alone and in batches, with a per-stage breakdown (user tower, FAISS
search, re-ranker features, LightGBM predict). Writes engine.json + engine.md + engine.png.

    recsys bench engine --bundle artifacts/scientific-cpu --out results/engine

Known users are timed with their query vector already computed (as the API serves them: vectors are
cached per history), sessions with the user tower on every query, similar items with a user id through
`similar_for_user`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import Column, environment, write_report

COLUMNS = [Column("query"), Column("ranker"), Column("batch", fmt=","), Column("queries", fmt=","),
           Column("p50_ms", "p50 ms/query", ".2f"), Column("p99_ms", "p99 ms/query", ".2f"),
           Column("mean_ms", "mean ms/query", ".2f"), Column("qps", "queries/s (1 thread)", ",.0f")]
STAGE_COLUMNS = [Column("stage"), Column("p50_ms", "p50 ms", ".3f"), Column("mean_ms", "mean ms", ".3f")]


def one_thread() -> None:
    """torch, FAISS and BLAS on one thread (a serving worker's settings)."""
    from jobs.threads import limit_cpu_threads

    limit_cpu_threads(1)


def _timed(calls: Sequence[Callable[[], object]], per_call: int) -> list[float]:
    """Milliseconds per query of each call (a call answers `per_call` queries)."""
    out = []
    for call in calls:
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1e3 / per_call)
    return out


def _row(query: str, ranker: bool, batch: int, ms: list[float]) -> dict:
    values = np.asarray(ms)
    return {"query": query, "ranker": "on" if ranker else "off", "batch": batch, "queries": len(values) * batch,
            "p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "mean_ms": float(values.mean()), "qps": 1e3 / float(values.mean())}


def _stages(recommender, histories: list[list[str]], repeats: int) -> list[dict]:
    """Per-stage cost of one re-ranked known-user query (query vector computed beforehand)."""
    reranker = recommender.reranker
    depth = reranker.config.candidates
    times: dict[str, list[float]] = {"FAISS search (top candidates)": [], "re-ranker features": [],
                                     "LightGBM predict": [], "re-rank call (features + predict + top-k)": []}
    vectors = recommender.user_tower.encode_histories(histories)
    for _ in range(repeats):
        for row, history in enumerate(histories):
            t0 = time.perf_counter()
            ids, scores = recommender.search_vectors(vectors[row:row + 1], depth, [set(history)])
            t1 = time.perf_counter()
            x = reranker.builder.matrix([history], ids, scores)
            t2 = time.perf_counter()
            reranker.ranker.predict(x)
            t3 = time.perf_counter()
            reranker.rerank([history], ids, scores, 10)
            t4 = time.perf_counter()
            for name, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[name].append(seconds * 1e3)
    return [{"stage": name, "p50_ms": float(np.median(v)), "mean_ms": float(np.mean(v))} for name, v in times.items()]


def _diversify_cost(recommender, histories: list[list[str]], batch: int) -> tuple[list[dict], str]:
    """Cost of the shown lists' near-duplicate collapsing + MMR alone (`Recommender.shown_lists`, k=10), one list
    and `batch` lists per call, on the bundle's ranked lists (re-ranked when it has a ranker). Times the bundle's
    diversification, or the library default's when the bundle has none."""
    from recsys.config import DiversifyConfig
    from recsys.diversify import active

    saved = recommender.config
    config = saved.diversify if active(saved.diversify) else DiversifyConfig(weight=0.1, duplicate_threshold=0.95)
    vectors = recommender.user_tower.encode_histories(histories)
    ranked = recommender.recommend_batch(histories, config.depth, True, vectors=vectors, diversify=False)
    recommender.config = saved.model_copy(update={"diversify": config})
    try:
        recommender.shown_lists(ranked[:8], 10)  # warm-up (unit vectors cached)
        rows = []
        for size in (1, batch):
            calls = [(lambda part=ranked[i:i + size]: recommender.shown_lists(part, 10))
                     for i in range(0, len(ranked) - size + 1, size)]
            rows.append(_row("diversify (shown_lists)", False, size, _timed(calls, size)))
            rows[-1]["ranker"] = "–"
    finally:
        recommender.config = saved
    return rows, (f"diversify: weight {config.weight}, duplicate_threshold {config.duplicate_threshold}, "
                  f"k=10 picked from the top {config.depth}")


def run(bundle: str | Path, out: str | Path, n_queries: int = 300, batch: int = 32, seed: int = 0,
        command: str = "", log=print) -> dict[str, Path]:
    """Time each query kind with the ranker on and off, one query at a time and in batches of `batch`."""
    from encoders.loading import load_recommender
    from recsys.artifacts import read_manifest, resolve_bundle

    one_thread()
    path = resolve_bundle(bundle)
    started = time.perf_counter()
    recommender = load_recommender(path)
    load_s = time.perf_counter() - started
    rng = random.Random(seed)
    users = rng.sample(sorted(u for u, h in recommender.histories.items() if h), min(n_queries,
                                                                                   len(recommender.histories)))
    histories = [recommender.histories[u][-50:] for u in users]
    items = recommender.item_ids
    sessions = [rng.sample(items, rng.randint(1, 5)) for _ in range(len(users))]
    anchors = [rng.choice(items) for _ in range(len(users))]
    reranker = recommender.reranker
    vectors = recommender.user_tower.encode_histories(histories)  # known users: vectors cached by the API

    def user(rows: slice, rerank: bool):
        return lambda: recommender.recommend_batch(histories[rows], 10, True, rerank=rerank,
                                                   vectors=vectors[rows])

    def session(rows: slice, rerank: bool):
        return lambda: recommender.recommend_batch(sessions[rows], 10, True, rerank=rerank, strategy="session")

    def similar(i: int, rerank: bool):
        saved = recommender.reranker
        def call():
            recommender.reranker = saved if rerank else None
            try:
                return recommender.similar_for_user(anchors[i], histories[i], 10)
            finally:
                recommender.reranker = saved
        return call

    modes = [True, False] if reranker is not None else [False]
    rows = []
    for rerank in modes:
        user(slice(0, 8), rerank)(), session(slice(0, 8), rerank)()  # warm-up
        n = len(histories)
        rows.append(_row("known user", rerank, 1, _timed([user(slice(i, i + 1), rerank) for i in range(n)], 1)))
        rows.append(_row("known user", rerank, batch,
                         _timed([user(slice(i, i + batch), rerank) for i in range(0, n - batch + 1, batch)], batch)))
        rows.append(_row("session (items)", rerank, 1,
                         _timed([session(slice(i, i + 1), rerank) for i in range(n)], 1)))
        rows.append(_row("session (items)", rerank, batch,
                         _timed([session(slice(i, i + batch), rerank) for i in range(0, n - batch + 1, batch)],
                                batch)))
        rows.append(_row("similar + user", rerank, 1, _timed([similar(i, rerank) for i in range(n)], 1)))
        for row in rows[-5:]:
            log(f"{row['query']:16s} ranker {row['ranker']:3s} batch {row['batch']:3d}: p50 {row['p50_ms']:.2f} "
                f"p99 {row['p99_ms']:.2f} ms/query")
    diversify_rows, diversify_note = _diversify_cost(recommender, histories, batch)
    rows += diversify_rows
    for row in diversify_rows:
        log(f"{row['query']:16s} batch {row['batch']:3d}: p50 {row['p50_ms']:.3f} p99 {row['p99_ms']:.3f} ms/query")
    stages = _stages(recommender, histories[:100], 3) if reranker is not None else []
    manifest = read_manifest(path, verify=False)
    ranker_note = (f"re-ranker: {reranker.ranker.n_trees} trees over the top {reranker.config.candidates} "
                   f"candidates, {len(reranker.builder.names)} features" if reranker is not None
                   else "this bundle has no re-ranker")
    notes = [f"command: `{command}`" if command else "command: (library call)",
             f"bundle `{path}` ({manifest.get('name', path.parent.name)}), {len(items):,} items, "
             f"{recommender.user_tower.dim}-d; {ranker_note}; loaded in {load_s:.1f}s",
             "one thread (torch, FAISS, BLAS, LightGBM); ms per query; `batch` queries answered by one "
             "recommend_batch call (as the API's loop-turn batching and batch scoring do)",
             "known user: query vector precomputed (the API caches it per history); session: the user tower on "
             "every query; similar + user: the anchor's neighbours re-ranked for the user (ranker on) or "
             "blended with the user's vector (off)",
             "diversify (shown_lists): near-duplicate collapsing + MMR alone, on ranked lists already computed "
             f"({diversify_note}); the rows above include it when the bundle diversifies"]
    if stages:
        notes.append("stages of one re-ranked known-user query: " + "; ".join(
            f"{s['stage']} {s['p50_ms']:.3f} ms" for s in stages))
    meta = {"environment": environment(("numpy", "polars", "lightgbm", "faiss-cpu", "torch")), "bundle": str(path),
            "command": command, "n_queries": len(histories), "batch": batch, "stages": stages,
            "load_seconds": round(load_s, 2)}
    return write_report(out, "engine", rows, COLUMNS, title="Engine cost per query, in process (one thread)",
                        meta=meta, notes=notes, chart=_chart)


def _chart(rows, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = [f"{r['query']}\nbatch {r['batch']}" for r in rows if r["ranker"] == rows[0]["ranker"]]
    xs = np.arange(len(labels))
    for offset, mode in ((-0.2, "on"), (0.2, "off")):
        values = [r["p50_ms"] for r in rows if r["ranker"] == mode]
        if values:
            ax.bar(xs[:len(values)] + offset, values, 0.4, label=f"re-ranker {mode}")
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("p50 ms per query (one thread)")
    ax.set_title("Engine cost per query")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
