"""Batch scoring benchmark (`recsys bench batch`): users/s and peak memory of `recsys batch-score`,
local engine vs Ray engine, on real bundles (e.g. amazon-scientific, all users; with and without
the re-ranker) and on a generated history set (1M users by default).

Every run is a fresh `recsys batch-score` subprocess into an empty directory; peak memory is the
largest proportional set size (PSS, so shared pages are not counted twice) summed over its whole
process tree (the Ray engine's raylet, GCS and actors included), sampled every 0.2 s. users/s is
users ÷ the job's own time (bundle load included, interpreter start excluded); wall time is also
reported. A row scoring a subset of the generated users shows that peak memory does not grow with
the number of users scored.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import psutil

from benchmarks.common import Column, environment, write_report

COLUMNS = (Column("dataset"), Column("engine"), Column("ranker"), Column("users", fmt=","), Column("k"),
           Column("rows", fmt=","), Column("job_s", "job s", ".1f"), Column("wall_s", "wall s", ".1f"),
           Column("users_per_s", "users/s", ",.0f"), Column("peak_mb", "peak MB (PSS, tree)", ",.0f"))


@dataclass(frozen=True)
class BenchSettings:
    """What to run; `bundles` are real bundles scored for all their users."""

    bundles: tuple[Path, ...] = ()
    synthetic_users: int = 1_000_000
    synthetic_subset: int = 100_000
    synthetic_items: int = 5_000
    engines: tuple[str, ...] = ("local", "ray")
    synthetic_engines: tuple[str, ...] = ("local", "ray")
    k: int = 100
    chunk_size: int = 2048
    workers: int = 2
    work: Path = Path("/tmp/recsys-bench-batch")
    command: str = ""
    extra: dict = field(default_factory=dict)


def tree_pss_mb(process: psutil.Process) -> float:
    """PSS (falling back to RSS) of a process and all its descendants, MiB."""
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


def measured_run(args: Sequence[str], interval: float = 0.2) -> tuple[float, float, str]:
    """(wall seconds, peak tree PSS MiB, output) of one subprocess."""
    started = time.perf_counter()
    proc = psutil.Popen(list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_pss_mb(proc))
        time.sleep(interval)
    output = proc.stdout.read() if proc.stdout else ""
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{output[-3000:]}")
    return wall, peak, output


def synthetic_bundle(root: Path, n_users: int, n_items: int, dim: int = 384, seed: int = 0) -> Path:
    """A generated history set (cached under `root`): clustered item embeddings shaped like
    MiniLM's, Zipf-popular items, 3–12 items per user drawn mostly from one taste category."""
    from recsys.config import BuildConfig
    from recsys.pipeline import Recommender
    from recsys.popularity import Popularity
    from recsys.retrieval import clustered_embeddings

    path = root / f"synthetic-{n_users}u-{n_items}i" / "v1"
    if (path / "manifest.json").is_file():
        return path
    rng = np.random.default_rng(seed)
    vectors, _ = clustered_embeddings(n_items, dim, seed=seed)
    item_ids = np.array([f"P{j:06d}" for j in range(n_items)], dtype=object)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity /= popularity.sum()
    groups = np.argsort(vectors @ rng.standard_normal(dim).astype(np.float32)) // max(1, n_items // 50)
    by_group = [np.flatnonzero(groups == g) for g in range(int(groups.max()) + 1)]
    lengths = rng.integers(3, 13, n_users)
    taste = rng.integers(0, len(by_group), n_users)
    histories: dict[str, list[str]] = {}
    for u in range(n_users):
        own = by_group[taste[u]]
        picks = np.where(rng.random(lengths[u]) < 0.7, own[rng.integers(0, len(own), lengths[u])],
                         rng.choice(n_items, lengths[u], p=popularity))
        histories[f"U{u:08d}"] = item_ids[picks].tolist()
    counts = np.bincount(rng.choice(n_items, 20 * n_users // 10, p=popularity), minlength=n_items)
    config = BuildConfig()
    items = pl.DataFrame({"item_id": item_ids.tolist(), "text": item_ids.tolist()})
    recommender = Recommender.from_parts(config, items, vectors, Popularity(item_ids.tolist(), counts), histories,
                                         {"kind": "synthetic", "dim": dim})
    return recommender.save(path, {"name": path.parent.name, "note": "generated history set (benchmarks/batch.py)"})


def score(bundle: Path, engine: str, settings: BenchSettings, label: str, users: Path | None = None) -> dict:
    """One measured `recsys batch-score` run; returns a report row."""
    out = settings.work / "out" / f"{label}-{engine}"
    shutil.rmtree(out, ignore_errors=True)
    args = [sys.executable, "-c", "from jobs.cli import main; main()",
            "batch-score", "--bundle", str(bundle), "--out", str(out),
            "--k", str(settings.k), "--chunk-size", str(settings.chunk_size), "--engine", engine, "--no-progress",
            "--no-store"]  # the bundle alone: not an API event store that the working directory may hold
    if users is not None:
        args += ["--users", str(users)]
    if engine == "ray":
        args += ["--workers", str(settings.workers)]
    wall, peak, _ = measured_run(args)
    manifest = json.loads((out / "manifest.json").read_text())
    run = manifest["run"]
    row = {"dataset": label, "engine": engine, "ranker": manifest["has_ranker"], "users": manifest["n_users"],
           "k": manifest["k"], "rows": manifest["n_rows"], "job_s": run["seconds"], "wall_s": round(wall, 2),
           "users_per_s": manifest["n_users"] / run["seconds"], "peak_mb": round(peak, 1),
           "bundle": manifest["bundle"], "shards": len(manifest["shards"])}
    shutil.rmtree(out, ignore_errors=True)  # 1M users × k=100 is ~1 GB of Parquet
    print(json.dumps(row), flush=True)
    return row


def chart(rows: Sequence[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    labels = [f"{r['dataset']}\n{r['engine']}{' +ranker' if r['ranker'] else ''}\n{r['users']:,} users" for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(rows)), 4.5))
    left.bar(range(len(rows)), [r["users_per_s"] for r in rows], color="tab:blue")
    left.set_title("throughput (users/s)")
    right.bar(range(len(rows)), [r["peak_mb"] for r in rows], color="tab:orange")
    right.set_title("peak memory (MB, PSS of the process tree)")
    for axis in (left, right):
        axis.set_xticks(range(len(rows)), labels, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_benchmark(settings: BenchSettings, out_dir: Path) -> dict[str, Path]:
    """Every (bundle, engine) run plus the generated set; writes batch.json / batch.md / batch.png."""
    settings.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for bundle in settings.bundles:
        from recsys.artifacts import resolve_bundle
        path = resolve_bundle(bundle)
        label = json.loads((path / "manifest.json").read_text()).get("name") or path.parent.name
        for engine in settings.engines:
            rows.append(score(path, engine, settings, f"{label}", None))
    if settings.synthetic_users:
        started = time.perf_counter()
        bundle = synthetic_bundle(settings.work, settings.synthetic_users, settings.synthetic_items)
        generated_s = time.perf_counter() - started
        label = f"synthetic-{settings.synthetic_users // 1000}k"
        if settings.synthetic_subset and settings.synthetic_subset < settings.synthetic_users:
            subset = settings.work / f"users-{settings.synthetic_subset}.txt"
            subset.write_text("\n".join(f"U{u:08d}" for u in range(settings.synthetic_subset)) + "\n")
            rows.append(score(bundle, "local", settings, label, subset))
        for engine in settings.synthetic_engines:
            rows.append(score(bundle, engine, settings, label, None))
        settings.extra["synthetic_bundle_seconds"] = round(generated_s, 1)
    ray = any(row["engine"] == "ray" for row in rows)
    notes = [f"command: `{settings.command}`" if settings.command else "",
             "users/s = users ÷ the job's time (bundle load + planning + scoring + writing, interpreter start "
             "excluded); wall s includes interpreter start" + (" and, for Ray, starting a local Ray instance"
                                                              if ray else ""),
             "peak MB = largest PSS summed over the batch-score process tree" +
             (f" (Ray: raylet, GCS, {settings.workers} actors)" if ray else "") + ", sampled every 0.2 s",
             "each run scores the bundle alone (`--no-store`: no API event store's events or catalogue edits)",
             f"chunk size {settings.chunk_size}, one FAISS thread per worker (byte-identical output across engines)"]
    return write_report(out_dir, "batch", rows, COLUMNS, title="Batch scoring: local vs Ray engine",
                        meta={"environment": environment(("numpy", "faiss-cpu", "polars", "pyarrow", "ray",
                                                          "lightgbm")),
                              "settings": {k: str(v) for k, v in settings.__dict__.items()}},
                        notes=[n for n in notes if n], chart=chart)
