"""`recsys bench batch`: batch-scoring throughput (users/s) and peak memory, local vs Ray engine.

Registered by the one import line in jobs/cli.py; the benchmark itself is benchmarks/batch.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from jobs.bench import bench_app


@bench_app.command("batch")
def bench_batch(
    bundle: Annotated[Optional[Path], typer.Option(help="real bundle to score (e.g. amazon-scientific); all users")] = None,
    synthetic_users: Annotated[int, typer.Option(help="users of the generated history set (0: skip)")] = 1_000_000,
    synthetic_items: Annotated[int, typer.Option(help="catalogue size of the generated set")] = 5_000,
    engines: Annotated[str, typer.Option(help="comma-separated: local,ray")] = "local,ray",
    synthetic_engines: Annotated[Optional[str], typer.Option(help="engines for the generated set "
                                                                   "(default: --engines)")] = None,
    k: int = 100,
    chunk_size: int = 2048,
    workers: Annotated[int, typer.Option(help="Ray actors")] = 2,
    work: Annotated[Path, typer.Option(help="scratch directory (generated bundle, shards)")] = Path("/tmp/recsys-bench-batch"),
    out: Annotated[Path, typer.Option(help="results directory (batch.json, batch.md, batch.png)")] = Path("results/bench"),
) -> None:
    """Time `batch-score` end to end in a subprocess per run (peak RSS of its whole process tree)."""
    from benchmarks.batch import BenchSettings, run_benchmark
    from jobs.output import console

    def split(value: str) -> tuple[str, ...]:
        names = tuple(e.strip() for e in value.split(",") if e.strip())
        if not names or set(names) - {"local", "ray"}:
            raise typer.BadParameter(f"engines must be local and/or ray, got {value!r}")
        return names

    settings = BenchSettings(bundle=bundle, synthetic_users=synthetic_users, synthetic_items=synthetic_items,
                             engines=split(engines), synthetic_engines=split(synthetic_engines or engines), k=k,
                             chunk_size=chunk_size, workers=workers, work=work)
    paths = run_benchmark(settings, out)
    console.print(paths["markdown"].read_text())
    console.print(f"results → {', '.join(str(p) for p in paths.values())}")
