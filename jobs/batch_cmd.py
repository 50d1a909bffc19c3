"""`recsys batch-score`: every selected user's top-k as Parquet shards (local or Ray engine).

Registered on the main app by the one import line in jobs/cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from jobs.cli import app, friendly_errors
from jobs.output import console, err_console


@app.command("batch-score")
@friendly_errors
def batch_score(
    bundle: Annotated[Path, typer.Option(help="bundle directory (or a model directory: newest version)")],
    out: Annotated[Path, typer.Option("--out", help="output directory (shards, manifest.json)")],
    users: Annotated[str, typer.Option(help="'all' or a file of user ids (.txt, .csv, .parquet)")] = "all",
    k: Annotated[int, typer.Option(min=1, help="items per user")] = 100,
    chunk_size: Annotated[int, typer.Option(min=1, help="users per chunk = per shard = per encode/search batch")] = 2048,
    exclude_seen: Annotated[bool, typer.Option("--exclude-seen/--keep-seen",
                                               help="drop each user's history items (the API's default)")] = True,
    reasons: Annotated[bool, typer.Option(help="with a ranker: per-item explanations (JSON) in `reason`; "
                                               "LightGBM feature contributions, ~8× slower")] = False,
    data: Annotated[Optional[Path], typer.Option(help="evaluation mode: score this dataset's --split examples "
                                                      "from their histories (for `evaluate --from-batch`)")] = None,
    split: Annotated[Optional[str], typer.Option(help="evaluation mode: valid or test")] = None,
    engine: Annotated[str, typer.Option(help="local, or ray (needs the distributed extra: pip install "
                                               "'bert-recsys\\[distributed]')")] = "local",
    workers: Annotated[Optional[int], typer.Option(min=1, help="ray: actors / local CPUs (default: all CPUs)")] = None,
    threads: Annotated[int, typer.Option(min=1, help="FAISS threads per worker; shards are byte-identical "
                                                    "across runs and engines at the same value")] = 1,
    ray_address: Annotated[Optional[str], typer.Option(help="ray: cluster address (default: start a local Ray)")] = None,
    overwrite: Annotated[bool, typer.Option(help="discard a previous job with different inputs in --out")] = False,
    strict: Annotated[bool, typer.Option(help="fail when any requested user is unknown (default: report them)")] = False,
    progress: Annotated[bool, typer.Option(help="show the users/s progress bar")] = True,
) -> None:
    """Score users in chunks through the API's pipeline and write Parquet shards
    (user_id, rank, item_id, score, retrieval_score, reason, strategy) plus manifest.json.

    Resumable: rerun the same command after a crash or Ctrl-C and completed shards are skipped."""
    from jobs.batch import BatchOptions, run_job

    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"--engine must be local or ray, got {engine!r}")
    if (data is None) != (split is None):
        raise typer.BadParameter("evaluation mode needs both --data and --split")
    if split not in (None, "valid", "test"):
        raise typer.BadParameter(f"--split must be valid or test, got {split!r}")
    options = BatchOptions(bundle=bundle, out=out, users=users, k=k, chunk_size=chunk_size, exclude_seen=exclude_seen,
                           reasons=reasons, data=data, split=split, engine=engine,  # type: ignore[arg-type]
                           workers=workers, threads=threads, ray_address=ray_address, overwrite=overwrite, strict=strict,
                           progress=progress)
    try:
        manifest = run_job(options)
    except KeyboardInterrupt:
        err_console.print(f"[yellow]interrupted[/]: completed shards are kept in {out}; "
                          "rerun the same command to resume")
        raise typer.Exit(130) from None
    for warning in manifest["warnings"]:
        err_console.print(f"[yellow]warning:[/] {warning}")
    run = manifest["run"]
    skipped = f", {run['chunks_skipped']} shard(s) kept from a previous run" if run["chunks_skipped"] else ""
    console.print(f"[green]scored[/] {manifest['n_users']:,} users → {manifest['n_rows']:,} rows in "
                  f"{len(manifest['shards'])} shard(s){skipped}; {run['seconds']:.1f} s "
                  f"({run['users_per_second'] or 0:,.0f} users/s, {run['engine']}), bundle {manifest['bundle_version']}"
                  f"{' with ranker' if manifest['has_ranker'] else ''} → {out}")
