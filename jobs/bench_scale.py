"""`recsys bench encoder` and `recsys bench scale`: the encoder backends side by side, and the whole path at
growing shop sizes (JSON + MD + PNG).

Registered by the one import line in jobs/cli.py; the benchmarks are benchmarks/encoder.py and
benchmarks/scale.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from jobs.bench import bench_app


@bench_app.command("encoder")
def bench_encoder(
    out: Annotated[Path, typer.Option(help="output directory")] = Path("results/encoder"),
    texts: Annotated[int, typer.Option(min=100, help="synthetic shop item texts to encode")] = 10_000,
    threads: Annotated[int, typer.Option(min=1, help="torch / ONNX Runtime threads")] = 2,
    data: Annotated[Optional[Path], typer.Option(help="also evaluate each backend zero-shot on this dataset's "
                                                      "test step")] = None,
    seed: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """torch fp32 vs ONNX Runtime fp32 vs int8: items/s, cosine to fp32, zero-shot quality."""
    from benchmarks.encoder import run

    paths = run(out, texts, threads, data, seed, command="recsys " + " ".join(sys.argv[1:]))
    typer.echo(paths["md"].read_text())
