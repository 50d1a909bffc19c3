"""`recsys bench engine`: in-process cost per query of the served pipeline (JSON + MD + PNG).

Registered when jobs/cli.py imports this module; the benchmark itself is benchmarks/engine.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jobs.bench import bench_app
from jobs.output import invocation
from jobs.paths import writable_out


@bench_app.command("engine")
def bench_engine(
    bundle: Annotated[Path, typer.Option(help="bundle directory (or a model directory: newest version)")],
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="output directory")] = Path("results/engine"),
    queries: Annotated[int, typer.Option(min=40, help="queries per kind")] = 300,
    batch: Annotated[int, typer.Option(min=2, help="queries per batched call")] = 32,
    seed: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """Cost of one query in process (one thread), re-ranker on and off, alone and batched, by stage."""
    from benchmarks.engine import run

    paths = run(bundle, out, queries, batch, seed, command=invocation())
    typer.echo(paths["md"].read_text())
