"""`recsys bench diversify`: the accuracy cost and diversity gain of near-duplicate collapsing + MMR on one bundle
(JSON + MD + PNG). Registered when jobs/cli.py imports this module; the benchmark is benchmarks/diversify.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jobs.bench import bench_app
from jobs.options import Number, OrNone, comma_list
from jobs.paths import writable_out


@bench_app.command("diversify")
def bench_diversify(
    bundle: Annotated[Path, typer.Option(help="bundle directory (or a model directory: newest version)")],
    data: Annotated[Path, typer.Option(help="the dataset the bundle was built on")],
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="results directory")] = Path("results/diversify"),
    weights: Annotated[str, typer.Option(help="comma-separated MMR weights in [0, 1]")] = "0,0.1,0.2,0.3",
    thresholds: Annotated[str, typer.Option(help="comma-separated near-duplicate cosines in (0, 1], or none")]
    = "none,0.95,0.9",
    depth: Annotated[int, typer.Option(min=10, max=1000, help="ranked items each list of 10 is picked from")] = 50,
    budget: Annotated[float, typer.Option(min=0.0, max=1.0, help="accuracy budget (fraction of valid N@10) for the "
                                          "largest MMR weight the report names")] = 0.01,
) -> None:
    """Accuracy (valid + test) and intra-list diversity of every diversification setting on one bundle."""
    from benchmarks.diversify import run
    from jobs.output import console, invocation

    chosen_weights = comma_list(weights, "--weights", Number(0.0, 1.0, low_open=False))
    chosen_thresholds = comma_list(thresholds, "--thresholds", OrNone(Number(0.0, 1.0)))
    command = invocation()
    paths = run(bundle, data, out, chosen_weights, chosen_thresholds, depth, command, budget, log=console.print)
    for path in paths.values():
        typer.echo(path)
