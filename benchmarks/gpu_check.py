"""GPU check (`recsys bench gpu`): one command, sized to finish in ≤ 8 minutes on one large GPU, that runs every
GPU path of the engine for real and writes gpu.json + gpu.md + gpu.png (rewritten after each stage, so a run cut short
still leaves the finished stages):

1. train    the `gpu` preset (LoRA in every BERT layer, bf16 autocast) on --data to a bundle, capped at
            --train-minutes; the towers' valid/test N@10 and R@10, next to the `cpu` preset's committed figures;
2. encode   item-encoding throughput of the BERT item tower (TextEncoder) in fp32, bf16 autocast and fp16,
            over --encode-items texts (the dataset's item texts, repeated);
3. ann      faiss-gpu flat and IVF against faiss-cpu on the same --ann-size × 384 vectors (benchmarks/ann.py:
            recall@100 against exact search, queries/s one at a time and in batches);
4. latency  the API latency table (benchmarks/latency.py) serving the trained bundle, whose user tower and
            index sit on the GPU.

    recsys bench gpu --data ../shared/data/amazon-scientific --out results/gpu

Without CUDA or faiss-gpu every stage that can still runs on the CPU, and the report lists what was skipped
and why (the test suite runs it that way at tiny size, so the code cannot rot). A stage that would start after
--budget-minutes is skipped too.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import Column, environment, markdown_table

STAGES = ("train", "encode", "ann", "latency")
REFERENCE_FILE = Path(__file__).parent / "results" / "quality-scientific-ranked-cpu.json"
TARGET_FLAT_QPS = 10_000
TARGET_FP16_ITEMS = 10_000
COLUMNS = {
    "train": [Column("model"), Column("device"), Column("split"), Column("ndcg@10", "N@10", ".4f"),
              Column("recall@10", "R@10", ".4f"), Column("ndcg@50", "N@50", ".4f"), Column("best_epoch", "best epoch"),
              Column("train_minutes", "train min", ".1f")],
    "encode": [Column("precision"), Column("device"), Column("items", fmt=","), Column("batch_size", "batch"),
               Column("seconds", "s", ".1f"), Column("items_per_s", "items/s", ",.0f")],
    "ann": [Column("index"), Column("device"), Column("search"), Column("build_s", "build s", ".1f"),
            Column("recall@100", "R@100", ".3f"), Column("qps_single", "QPS 1×1", ",.0f"),
            Column("qps_batch", "QPS 256×", ",.0f")],
    "latency": [Column("endpoint"), Column("ranker"), Column("concurrency"), Column("requests", fmt=","),
                Column("errors"), Column("p50_ms", "p50 ms", ".1f"), Column("p99_ms", "p99 ms", ".1f"),
                Column("rps", "req/s", ",.0f")],
}


@dataclass(frozen=True)
class GpuCheckSettings:
    """Sizes of each stage; the defaults fit ≤ 8 minutes on one large GPU."""

    data: Path
    model: str = "default"
    train_minutes: float = 2.5
    train_overrides: dict = field(default_factory=dict)  # merged over the `gpu` preset (tests shrink it)
    encode_items: int = 100_000
    encode_batch: int = 512
    ann_size: int = 1_000_000
    ann_queries: int = 1_000
    latency_concurrency: tuple[int, ...] = (1, 32)
    latency_requests: int = 3_000
    latency_seconds: float = 6.0
    budget_minutes: float = 8.0
    stages: tuple[str, ...] = STAGES


def cuda_device() -> str | None:
    """The CUDA device's name, or None without one."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def reference_rows(path: Path = REFERENCE_FILE) -> dict[str, Any] | None:
    """The committed `cpu` preset towers' test N@10 / R@10 on amazon-scientific (benchmarks/results)."""
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    for row in report["rows"]:
        if row["model"] == "peft-bert:cpu" and row["split"] == "test" and row["slice"] == "all":
            return {"dataset": report["meta"]["dataset"]["name"], "ndcg@10": row["ndcg@10"],
                    "recall@10": row["recall@10"]}
    return None


def train_stage(settings: GpuCheckSettings, out: Path, report: dict) -> list[dict]:
    """The `gpu` preset to a bundle; rows: its towers' valid and test metrics (all users)."""
    from encoders.experiment import train_and_evaluate
    from encoders.presets import merge, preset
    from jobs.workflows import load_dataset
    from recsys.splits import split_dataset

    dataset = load_dataset(settings.data)
    overrides = merge({"encoder": {"model": settings.model}, "max_minutes": settings.train_minutes},
                      settings.train_overrides)
    config = preset("gpu", **overrides)
    trained = train_and_evaluate(dataset, split_dataset(dataset), config, name="gpu-check", out_root=out / "bundles",
                                 run_dir=out / "runs" / "gpu", progress=True)
    result = trained.result
    if result.device != "cuda":
        report["skipped"].append("train: no CUDA device, so the `gpu` preset trained on the CPU (no bf16 autocast)")
    report["bundle"] = str(trained.path)
    report["dataset"] = dataset.name
    report["train_config"] = config.model_dump(mode="json")
    return [{"model": f"gpu preset ({dataset.name})", "device": result.device, "split": r["split"],
             "best_epoch": result.best_epoch, "train_minutes": result.seconds / 60,
             **{k: r[k] for k in ("ndcg@10", "recall@10", "ndcg@50")}}
            for r in trained.rows if r["slice"] == "all"]


def encode_stage(settings: GpuCheckSettings, out: Path, report: dict) -> list[dict]:
    """TextEncoder throughput at each precision the device supports (warm-up batch excluded)."""
    import torch

    from encoders.text_encoder import TextEncoder
    from jobs.workflows import load_dataset
    from recsys.config import EncoderConfig

    base = load_dataset(settings.data).items["text"].to_list()
    texts = (base * math.ceil(settings.encode_items / len(base)))[:settings.encode_items]
    config = EncoderConfig(model=settings.model, batch_size=settings.encode_batch)
    cuda = torch.cuda.is_available()
    rows = []
    for precision, label in (("fp32", "fp32"), ("auto", "bf16 autocast"), ("fp16", "fp16")):
        if not cuda and precision != "fp32":
            report["skipped"].append(f"encode {label}: needs a CUDA device (on the CPU it is the fp32 row)")
            continue
        encoder = TextEncoder.from_config(config, precision=precision)
        encoder.encode(texts[:settings.encode_batch])  # warm-up: kernels, allocator
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        encoder.encode(texts, progress=True, desc=f"encoding ({label})")
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        rows.append({"precision": label, "device": encoder.device.type, "items": len(texts),
                     "batch_size": settings.encode_batch, "seconds": seconds, "items_per_s": len(texts) / seconds})
        del encoder
        if cuda:
            torch.cuda.empty_cache()
    return rows


def ann_stage(settings: GpuCheckSettings, out: Path, report: dict) -> list[dict]:
    """benchmarks/ann.py's flat and IVF variants (CPU, and GPU when faiss-gpu sees one) on one synthetic set."""
    from benchmarks.ann import run
    from recsys.retrieval import gpu_count

    if gpu_count() == 0:
        report["skipped"].append("ann: faiss-gpu flat and IVF need faiss-gpu and a visible GPU (pip install "
                                 "'.[gpu]'); only the faiss-cpu rows ran")
    paths = run([settings.ann_size], out / "ann", n_queries=settings.ann_queries, single_queries=200, max_seconds=3.0,
                kinds=("flat", "ivf_flat"))
    return json.loads(Path(paths["json"]).read_text())["rows"]


def latency_stage(settings: GpuCheckSettings, out: Path, report: dict) -> list[dict]:
    """The API latency table serving the trained bundle (user tower and index on the GPU when there is one)."""
    from benchmarks.latency import run

    if not report.get("bundle"):
        raise RuntimeError("no bundle: the train stage did not run")
    if report.get("cuda_device") is None:
        report["skipped"].append("latency: no CUDA device, so the bundle was served from the CPU")
    result = run(report["bundle"], out / "latency", settings.latency_concurrency, requests=settings.latency_requests,
                 seconds=settings.latency_seconds, reload_test=False, warmup=min(200, settings.latency_requests))
    return result["rows"]


RUNNERS: dict[str, Callable[[GpuCheckSettings, Path, dict], list[dict]]] = {
    "train": train_stage, "encode": encode_stage, "ann": ann_stage, "latency": latency_stage}


def target_notes(report: dict) -> list[str]:
    """The issue's targets, each met / missed / not measured."""
    stages = report["stages"]
    notes = []
    train = {r["split"]: r for r in stages.get("train", {}).get("rows", [])}
    reference = report.get("reference")
    if "test" in train and reference and reference["dataset"] == report.get("dataset"):
        ok = train["test"]["ndcg@10"] > reference["ndcg@10"]
        notes.append(f"`gpu` preset test N@10 {train['test']['ndcg@10']:.4f} vs the `cpu` preset's towers "
                     f"{reference['ndcg@10']:.4f}: {'met' if ok else 'missed'}")
    elif "test" in train:
        notes.append(f"`gpu` preset above the `cpu` preset's towers: no committed `cpu` figure for "
                     f"{report.get('dataset')} (the reference is on amazon-scientific)")
    flat = [r for r in stages.get("ann", {}).get("rows", []) if r["index"] == "GPU flat"]
    notes.append(f"faiss-gpu flat ≥ {TARGET_FLAT_QPS:,} queries/s: " + (
        f"{flat[0]['qps_batch']:,.0f} queries/s in batches of 256, "
        f"{'met' if flat[0]['qps_batch'] >= TARGET_FLAT_QPS else 'missed'}" if flat else "not measured (no GPU)"))
    fp16 = [r for r in stages.get("encode", {}).get("rows", []) if r["precision"] == "fp16"]
    notes.append(f"fp16 item encoding ≥ {TARGET_FP16_ITEMS:,} items/s: " + (
        f"{fp16[0]['items_per_s']:,.0f} items/s, {'met' if fp16[0]['items_per_s'] >= TARGET_FP16_ITEMS else 'missed'}"
        if fp16 else "not measured (no GPU)"))
    return notes


def write(out: Path, report: dict) -> dict[str, Path]:
    """gpu.json and gpu.md from the report so far."""
    out.mkdir(parents=True, exist_ok=True)
    report["targets"] = target_notes(report)
    paths = {"json": out / "gpu.json", "md": out / "gpu.md"}
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n")
    device = report.get("cuda_device") or "no CUDA device (CPU only)"
    parts = ["# GPU check", "", f"- device: {device}; faiss GPUs visible: {report['faiss_gpus']}",
             f"- data: {report['settings']['data']}; command: `{report.get('command') or 'benchmarks.gpu_check.run'}`",
             *[f"- target: {note}" for note in report["targets"]],
             *[f"- skipped: {note}" for note in report["skipped"]], ""]
    for name, stage in report["stages"].items():
        parts += [f"## {name} ({stage['seconds']:.0f} s)", ""]
        if stage.get("error"):
            parts += [f"failed: {stage['error']}", ""]
        if stage.get("rows"):
            parts += [markdown_table(stage["rows"], COLUMNS[name]), ""]
    env = report["environment"]
    parts += [f"<sub>{env['created_at']} · git {env['git_sha']} · {env['cpu_count']} CPUs · "
              f"load {env['load_avg_1m']} · "
              + ", ".join(f"{k} {v}" for k, v in env["packages"].items()) + "</sub>", ""]
    paths["md"].write_text("\n".join(parts))
    paths["png"] = out / "gpu.png"
    _chart(report["stages"], paths["png"])
    return paths


# one bar chart per finished stage: what it measures, from which row fields
CHART_PANELS = {"train": ("towers N@10", lambda r: f"{r['split']}", "ndcg@10"),
                "encode": ("item encoding (items/s)", lambda r: r["precision"], "items_per_s"),
                "ann": ("batched search (queries/s)", lambda r: f"{r['index']} ({r['device']})", "qps_batch"),
                "latency": ("API req/s", lambda r: f"{r['endpoint']} ×{r['concurrency']}", "rps")}


def _chart(stages: dict, path: Path) -> None:
    """gpu.png: a panel for each stage that has rows (a placeholder text while none has)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, stage["rows"]) for name, stage in stages.items() if stage.get("rows") and name in CHART_PANELS]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.5 * max(len(panels), 1), 4), squeeze=False)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no stage finished yet", ha="center", va="center")
        axes[0][0].set_axis_off()
    for ax, (name, rows) in zip(axes[0], panels):
        title, label, key = CHART_PANELS[name]
        ax.barh([label(r) for r in rows], [r.get(key) or 0 for r in rows])
        ax.set_title(title, fontsize=10)
        ax.tick_params(labelsize=7)
        ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(settings: GpuCheckSettings, out: str | Path, command: str | None = None) -> dict[str, Path]:
    """Run the stages in order within the time budget; a failing stage is reported and the next one runs."""
    from recsys.retrieval import gpu_count

    unknown = set(settings.stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; choose from {STAGES}")
    out = Path(out)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "environment": environment(("torch", "transformers", "peft", "faiss-cpu", "faiss-gpu-cu12", "numpy")),
        "cuda_device": cuda_device(), "faiss_gpus": gpu_count(), "command": command,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.__dict__.items()},
        "reference": reference_rows(), "stages": {}, "skipped": []}
    paths = write(out, report)
    for name in STAGES:
        if name not in settings.stages:
            continue
        elapsed = (time.perf_counter() - started) / 60
        if elapsed > settings.budget_minutes:
            report["skipped"].append(f"{name}: the {settings.budget_minutes:g}-minute budget was spent "
                                     f"({elapsed:.1f} min) before it started")
            continue
        print(f"[gpu check {elapsed:5.1f} min] {name}", flush=True)
        stage_started = time.perf_counter()
        stage: dict[str, Any] = {}
        try:
            stage["rows"] = RUNNERS[name](settings, out, report)
        except Exception as exc:  # noqa: BLE001 - report it and go on with the next stage
            stage["error"] = f"{type(exc).__name__}: {exc}"
        stage["seconds"] = time.perf_counter() - stage_started
        report["stages"][name] = stage
        report["minutes"] = (time.perf_counter() - started) / 60
        paths = write(out, report)
    return paths


__all__ = ["GpuCheckSettings", "run", "STAGES"]
