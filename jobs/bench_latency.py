"""`recsys bench latency`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from jobs.bench import bench_app
from jobs.options import OneOf, WholeNumber, comma_list
from jobs.output import invocation
from jobs.paths import writable_out


@bench_app.command("latency")
def latency(
    bundle: Annotated[Path, typer.Option(help="bundle directory (or a model directory: newest version)")],
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="output directory")] = Path("results/latency"),
    concurrency: Annotated[str, typer.Option(help="comma-separated client counts")] = "1,8,32,64",
    endpoints: Annotated[str, typer.Option(help="user,similar,similar_user,session")] = \
        "user,similar,similar_user,session",
    requests: Annotated[int, typer.Option(min=1, help="requests per level (upper bound)")] = 2000,
    seconds: Annotated[float, typer.Option(min=0.1, help="seconds per level (upper bound)")] = 20.0,
    reload_test: Annotated[bool, typer.Option(help="also reload the bundle in the middle of a run")] = True,
    loadgen: Annotated[Literal["auto", "wrk", "httpx"], typer.Option(
        help="auto (wrk when installed, else httpx), wrk or httpx")] = "auto",
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
    towers_only: Annotated[bool, typer.Option(help="also measure the same bundle with its re-ranker off")] = True,
) -> None:
    """Start the API on loopback and measure p50/p95/p99, req/s and errors under load."""
    from benchmarks.latency import ENDPOINTS, run
    from benchmarks.loadgen import available_tool

    levels = comma_list(concurrency, "--concurrency", WholeNumber(1), repeats=True)  # a level again: one more run
    chosen = comma_list(endpoints, "--endpoints", OneOf(ENDPOINTS))
    try:
        available_tool(loadgen)  # wrk asked for but not installed: refused before the server starts
    except RuntimeError as error:
        raise typer.BadParameter(str(error), param_hint="--loadgen") from None
    result = run(bundle, out, levels, chosen, requests, seconds, reload_test, loadgen=loadgen, workers=workers,
                 towers_only=towers_only, command=invocation())
    typer.echo(Path(result["paths"]["md"]).read_text())
