"""`recsys bench store`: the cost of recording one event as a user's history grows (JSON + MD + PNG).

Registered by the one import line in jobs/cli.py; the benchmark itself is benchmarks/store.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from jobs.bench import bench_app
from jobs.options import WholeNumber, comma_list
from jobs.output import invocation
from jobs.paths import writable_out


@bench_app.command("store")
def bench_store(
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="results directory (store.json, store.md, store.png)")]
    = Path("results/store"),
    lengths: Annotated[str, typer.Option(help="comma-separated history lengths of one user")] = (
        "0,1000,10000,100000,1000000"),
    inserts: Annotated[int, typer.Option(min=10, help="timed inserts per history length")] = 300,
    redis_url: Annotated[Optional[str], typer.Option(help="also benchmark the Redis store at this URL")] = None,
) -> None:
    """Insert latency of the SQLite (and Redis) event store for a user with up to a million events, next to the
    previous implementation's (which counted the user's events on every insert)."""
    from benchmarks.store import run

    parsed = sorted(comma_list(  # ascending (a repeat is refused): one user's history grows through them
        lengths, "--lengths", WholeNumber(0, "history lengths")))
    command = invocation()
    paths = run(out, parsed, inserts, redis_url, command, log=typer.echo)
    typer.echo(Path(paths["md"]).read_text())
