"""`recsys bench batch`: batch-scoring throughput (users/s) and peak memory, local vs Ray engine.

Registered when jobs/cli.py imports this module; the benchmark itself is benchmarks/batch.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from jobs.bench import bench_app
from jobs.options import OneOf, comma_list
from jobs.paths import writable_out

ENGINES = OneOf(("local", "ray"), "engine")


@bench_app.command("batch")
def bench_batch(
    bundle: Annotated[Optional[list[Path]], typer.Option(help="real bundle scored for all its users (repeatable)")]
    = None,
    synthetic_users: Annotated[int, typer.Option(min=0, help="users of the generated history set (0: skip it)")]
    = 1_000_000,
    synthetic_subset: Annotated[int, typer.Option(min=0, help="also score only this many generated users "
                                                              "(memory check)")] = 100_000,
    synthetic_items: Annotated[int, typer.Option(min=2, help="catalogue size of the generated set")] = 5_000,
    engines: Annotated[str, typer.Option(help="engines for the real bundles: local,ray")] = "local,ray",
    synthetic_engines: Annotated[str, typer.Option(help="engines for the generated set")] = "local,ray",
    k: Annotated[int, typer.Option(min=1, help="items per user")] = 100,
    chunk_size: Annotated[int, typer.Option(min=1, help="users per chunk")] = 2048,
    workers: Annotated[int, typer.Option(min=1, help="Ray actors")] = 2,
    work: Annotated[Path, typer.Option(help="scratch directory (generated bundle, shards)")]
    = Path("/tmp/recsys-bench-batch"),
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="results directory (batch.json, batch.md, batch.png)")]
    = Path("results/bench"),
) -> None:
    """Time `recsys batch-score` in a fresh subprocess per run; peak PSS of its whole process tree."""
    from benchmarks.batch import BenchSettings, run_benchmark
    from jobs.output import console, invocation

    if not bundle and not synthetic_users:
        raise typer.BadParameter("nothing to measure: give a --bundle, or --synthetic-users above 0",
                                 param_hint="--synthetic-users")
    settings = BenchSettings(bundles=tuple(bundle or ()), synthetic_users=synthetic_users,
                             synthetic_subset=synthetic_subset, synthetic_items=synthetic_items,
                             engines=tuple(comma_list(engines, "--engines", ENGINES)),
                             synthetic_engines=tuple(comma_list(synthetic_engines, "--synthetic-engines", ENGINES)),
                             k=k, chunk_size=chunk_size, workers=workers, work=work, command=invocation())
    paths = run_benchmark(settings, out)
    console.print(paths["md"].read_text())
    console.print(f"results → {', '.join(str(p) for p in paths.values())}")
