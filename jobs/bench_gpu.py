"""`recsys bench gpu`: the GPU check (benchmarks/gpu_check.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from jobs.app import read_json_object
from jobs.bench import bench_app
from jobs.options import OneOf, WholeNumber, comma_list
from jobs.output import invocation
from jobs.paths import writable_out


@bench_app.command("gpu")
def gpu(
    data: Annotated[Path, typer.Option(help="dataset for the train / encode stages (e.g. amazon-scientific)")],
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="output directory (gpu.json, gpu.md, bundles/, ann/, "
                                           "latency/)")] = Path("results/gpu"),
    model: Annotated[str, typer.Option(help="BERT: local HF directory or 'default' (MiniLM)")] = "default",
    train_minutes: Annotated[float, typer.Option(min=0.1, help="cap on the `gpu` preset's training time")] = 2.5,
    config: Annotated[Optional[Path], typer.Option("--config", help="JSON merged over the `gpu` preset")] = None,
    encode_items: Annotated[int, typer.Option(min=1, help="texts per encoding-throughput row")] = 100_000,
    encode_batch: Annotated[int, typer.Option(min=1, help="encoding batch size")] = 512,
    ann_size: Annotated[int, typer.Option(min=100, help="synthetic 384-d vectors for the faiss rows")] = 1_000_000,
    ann_queries: Annotated[int, typer.Option(min=1)] = 1_000,
    concurrency: Annotated[str, typer.Option(help="latency: comma-separated client counts")] = "1,32",
    latency_requests: Annotated[int, typer.Option(min=1, help="latency: requests per level (upper bound)")] = 3_000,
    latency_seconds: Annotated[float, typer.Option(min=0.5, help="latency: seconds per level (upper bound)")] = 6.0,
    budget_minutes: Annotated[float, typer.Option(min=0.0, help="stages that would start after this are "
                                                  "skipped")] = 8.0,
    stages: Annotated[str, typer.Option(help="comma-separated: train,encode,ann,latency")] = "train,encode,ann,latency",
) -> None:
    """One command for a GPU machine (≤ 8 min on one large GPU): the `gpu` preset to a bundle with its test
    N@10/R@10, fp32/bf16/fp16 encoding throughput, faiss-gpu vs faiss-cpu at 1M vectors, and the API latency
    table serving the bundle from the GPU. Without a GPU it runs what it can on the CPU and lists what it skipped."""
    from benchmarks.gpu_check import STAGES, GpuCheckSettings, run
    from jobs.workflows import check_dataset

    chosen = comma_list(stages, "--stages", OneOf(STAGES))
    levels = comma_list(concurrency, "--concurrency", WholeNumber(1), repeats=True)  # a level again: one more run
    if {"train", "encode"} & set(chosen):  # before the stages, which go on after a failed one (ann: 1M vectors)
        check_dataset(data)
    settings = GpuCheckSettings(
        data=data, model=model, train_minutes=train_minutes,
        train_overrides=read_json_object(config, "TrainConfig overrides merged over the `gpu` preset"),
        encode_items=encode_items, encode_batch=encode_batch, ann_size=ann_size, ann_queries=ann_queries,
        latency_concurrency=tuple(levels),
        latency_requests=latency_requests, latency_seconds=latency_seconds, budget_minutes=budget_minutes,
        stages=tuple(chosen))
    paths = run(settings, out, command=invocation())
    typer.echo(paths["md"].read_text())
