"""`recsys bench ranker`: retrieval-only vs re-ranked on one bundle (JSON + MD + PNG).

Registered when jobs/cli.py imports this module; the benchmark itself is benchmarks/ranker.py."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from jobs.bench import bench_app


@bench_app.command("ranker")
def bench_ranker(
    bundle: Annotated[Path, typer.Option(help="bundle directory (or a model directory: newest version)")],
    data: Annotated[Path, typer.Option(help="the dataset the bundle was built on")],
    out: Annotated[Path, typer.Option(help="results directory (ranker.json, ranker.md, ranker.png)")] = Path(
        "results/ranker"),
    candidates: Annotated[int, typer.Option(min=1, help="retrieved items re-ranked per query")] = 200,
    n_jobs: Annotated[int, typer.Option(min=1, help="LightGBM threads")] = 1,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    save_bundle: Annotated[Optional[Path], typer.Option(help="also write the bundle with its ranker here")] = None,
) -> None:
    """Train the re-ranker on the valid step and compare it with retrieval alone on the test step."""
    from benchmarks.ranker import run
    from jobs.output import console

    command = "recsys " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    paths = run(bundle, data, out, candidates, n_jobs, seed, command, save_bundle, log=console.print)
    for path in paths.values():
        typer.echo(path)
