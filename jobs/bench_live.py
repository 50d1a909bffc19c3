"""`recsys bench live`: convergence across workers and worker memory over reloads (benchmarks/live.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jobs.bench import bench_app
from jobs.output import invocation
from jobs.paths import writable_out


@bench_app.command("live")
def live(
    bundle: Annotated[Path, typer.Option(help="bundle directory (or a model directory: newest version)")],
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="output directory")] = Path("results/live"),
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 2,
    trials: Annotated[int, typer.Option(min=0, help="writes of each kind (0: no convergence runs)")] = 10,
    window: Annotated[float, typer.Option(min=0.1, help="seconds of fresh reads after each write")] = 1.5,
    reloads: Annotated[int, typer.Option(min=0, help="reloads, each followed by free-text queries (0: none)")] = 20,
    feed: Annotated[int, typer.Option(min=0, max=10_000, help="a catalogue feed of this many new items, one request "
                                      "per item and then in one POST /v1/admin/items (0: none)")] = 0,
) -> None:
    """How fast every worker sees an upsert, a deactivation and an event; worker RSS over reloads; a catalogue feed
    sent item by item and in one request."""
    from benchmarks.live import run

    result = run(bundle, out, workers, trials, window, reloads, command=invocation(), feed_items=feed)
    typer.echo(Path(result["paths"]["md"]).read_text())
