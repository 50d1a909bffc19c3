"""`recsys bench ranker-folds`: re-ranker fitting schemes (one fit, K folds refit, K folds summed) compared on the
whole valid step by cross-fitting (JSON + MD + PNG). Registered when jobs/cli.py imports this module; the
benchmark is benchmarks/ranker_folds.py."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from jobs.app import BundleData, BundleDir
from jobs.bench import bench_app


@bench_app.command("ranker-folds")
def bench_ranker_folds(
    bundle: BundleDir,
    data: BundleData,
    out: Annotated[Path, typer.Option(help="results directory (folds.json, folds.md, folds.png)")] = Path(
        "results/ranker-folds"),
    outer: Annotated[int, typer.Option(min=2, max=20, help="cross-fitting folds over the valid users")] = 5,
    seed: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """Valid NDCG@10 of each re-ranker fitting scheme, every valid user scored by rankers that never saw them."""
    from benchmarks.ranker_folds import run
    from jobs.output import console

    command = "recsys " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    for path in run(bundle, data, out, seed=seed, outer=outer, command=command, log=console.print).values():
        typer.echo(path)
