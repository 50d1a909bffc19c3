"""Item-text encoder backends side by side: torch fp32, ONNX Runtime fp32 and ONNX Runtime int8 (dynamic
quantisation) on the same texts: items/s (wall and per CPU-second), the cosine of each backend's vectors to torch
fp32's, and, with `--data`, the zero-shot NDCG@10 / Recall@10 of each on the dataset's test step (full ranking).

    recsys bench encoder --texts 10000 --threads 2 --data ../shared/data/amazon-scientific --out results/encoder
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.common import Column, environment, write_report
from recsys.text_format import counted

BACKENDS = ("torch", "onnx", "onnx-int8")
COLUMNS = [Column("backend"), Column("texts", fmt=","), Column("items_per_s", "items/s (wall)", ",.0f"),
           Column("items_per_cpu_s", "items/CPU-s", ",.0f"), Column("speedup", "× torch (CPU-s)", ".2f"),
           Column("cosine_min", "cosine min", ".4f"), Column("cosine_mean", "cosine mean", ".4f"),
           Column("ndcg@10", "zero-shot N@10", ".4f"), Column("recall@10", "zero-shot R@10", ".4f"),
           Column("load_s", "load s", ".1f")]


def shop_texts(n: int, seed: int = 0) -> list[str]:
    """`n` synthetic shop item texts (the catalogue generator only: no users)."""
    from recsys.data.shop_catalogue import build_catalogue

    return build_catalogue(n, np.random.default_rng([seed, 0])).items["text"].to_list()


def _encoder(backend: str):
    from encoders.text_encoder import load_text_encoder
    from recsys.config import EncoderConfig

    return load_text_encoder(EncoderConfig(backend=backend))


def _timed_encode(encoder, texts: list[str]) -> tuple[np.ndarray, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    vectors = encoder.encode(texts, progress=True, desc=getattr(encoder.config, "backend", "torch"))
    return vectors, time.perf_counter() - wall, time.process_time() - cpu


def _zero_shot(backend: str, data: Path) -> dict:
    from jobs.workflows import build_recommender, load_dataset
    from recsys.config import BuildConfig, EncoderConfig, EvalConfig
    from recsys.evaluation import evaluate
    from recsys.splits import split_dataset

    dataset = load_dataset(data)
    split = split_dataset(dataset)
    recommender, _ = build_recommender(dataset, split, BuildConfig(encoder=EncoderConfig(backend=backend)), True)
    return evaluate(recommender, split.test, EvalConfig(ks=(10,), splits=("test",)), progress=True)


def run(out: Path, n_texts: int = 10_000, threads: int = 2, data: Path | None = None, seed: int = 0,
        command: str | None = None) -> dict[str, Path]:
    import torch

    torch.set_num_threads(threads)
    texts = shop_texts(n_texts, seed)
    rows, reference = [], None
    for backend in BACKENDS:
        started = time.perf_counter()
        encoder = _encoder(backend)
        load_s = time.perf_counter() - started
        _timed_encode(encoder, texts[:64])  # warm-up (first-call allocations)
        vectors, wall, cpu = _timed_encode(encoder, texts)
        reference = vectors if reference is None else reference
        cosine = (vectors * reference).sum(axis=1)
        row = {"backend": backend, "texts": len(texts), "items_per_s": len(texts) / wall,
               "items_per_cpu_s": len(texts) / max(cpu, 1e-9), "cosine_min": float(cosine.min()),
               "cosine_mean": float(cosine.mean()), "load_s": load_s, "wall_s": wall, "cpu_s": cpu}
        if data is not None:
            metrics = _zero_shot(backend, data)
            row.update({"ndcg@10": metrics["ndcg@10"], "recall@10": metrics["recall@10"],
                        "eval_examples": metrics["n_examples"]})
        rows.append(row)
    for row in rows:
        row["speedup"] = row["items_per_cpu_s"] / rows[0]["items_per_cpu_s"]
    notes = [f"command: `{command}`" if command else "command: (library call)",
             f"{len(texts):,} synthetic shop item texts (recsys.data.shop_catalogue), default BERT (all-MiniLM-L6-v2), "
             f"max_length 64; {counted(threads, 'thread')} for torch and ONNX Runtime; length-bucketed batches for "
             "ONNX Runtime, length-sorted batches of 64 for torch",
             "items/CPU-s: texts per CPU-second of this process (other jobs on the machine do not count against it); "
             "× torch uses it; cosine: each text's vector against torch fp32's (all L2-normalised)",
             "the ONNX graphs are exported once and cached (load s includes the export and the int8 quantisation "
             "on a first run)"]
    if data is not None:
        notes.append(f"zero-shot N@10 / R@10: the frozen BERT's item vectors, recency-pooled histories, full ranking "
                     f"on the test step of `{data}`")
    meta = {"environment": environment(("numpy", "torch", "onnxruntime", "onnx")), "command": command,
            "threads": threads, "texts": len(texts)}
    return write_report(out, "encoder", rows, COLUMNS, title="Item-text encoder backends", meta=meta, notes=notes,
                        chart=_chart)


def _chart(rows, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = [r["backend"] for r in rows]
    ax.bar(names, [r["items_per_cpu_s"] for r in rows], color=["#888", "#4a7", "#27a"][:len(rows)])
    for x, r in enumerate(rows):
        label = f"{r['speedup']:.2f}×\ncos {r['cosine_min']:.3f}"
        if r.get("ndcg@10") is not None:
            label += f"\nN@10 {r['ndcg@10']:.4f}"
        ax.annotate(label, (x, r["items_per_cpu_s"]), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("items per CPU-second")
    ax.set_title("Item-text encoder backends")
    ax.margins(y=0.3)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
