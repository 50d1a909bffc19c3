"""`recsys bench diversify`: the accuracy cost and diversity gain of near-duplicate collapsing + MMR on one bundle
(JSON + MD + PNG). Registered when jobs/cli.py imports this module; the benchmark is benchmarks/diversify.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jobs.bench import bench_app


def _floats(text: str, option: str, allow_none: bool = False) -> list:
    values = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if allow_none and part.lower() == "none":
            values.append(None)
            continue
        try:
            value = float(part)
        except ValueError:
            raise typer.BadParameter(f"{option} takes comma-separated numbers, got {part!r}") from None
        if not 0.0 <= value <= 1.0 or (allow_none and value == 0.0):
            raise typer.BadParameter(f"{option}: {value} is outside {'(0, 1]' if allow_none else '[0, 1]'}")
        values.append(value)
    if not values:
        raise typer.BadParameter(f"{option} needs at least one value")
    return values


@bench_app.command("diversify")
def bench_diversify(
    bundle: Annotated[Path, typer.Option(help="bundle directory (or a model directory: newest version)")],
    data: Annotated[Path, typer.Option(help="the dataset the bundle was built on")],
    out: Annotated[Path, typer.Option(file_okay=False, help="results directory")] = Path("results/diversify"),
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

    command = invocation()
    paths = run(bundle, data, out, _floats(weights, "--weights"), _floats(thresholds, "--thresholds", True), depth,
                command, budget, log=console.print)
    for path in paths.values():
        typer.echo(path)
