"""`recsys batch-score`: every selected user's top-k as Parquet shards (local or Ray engine).

Registered on the app (jobs/app.py) when jobs/cli.py imports this module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from jobs.app import EventStoreOpt, RedisTimeoutOpt, RedisUrlOpt, StateDirOpt, app, check_ray_only
from jobs.output import console, err_console
from jobs.paths import writable_out
from recsys.store import HISTORY_LIMIT, REDIS_TIMEOUT_S
from recsys.text_format import counted, plural


@app.command("batch-score")
def batch_score(
    bundle: Annotated[Path, typer.Option(help="bundle directory (or a model directory: newest version)")],
    out: Annotated[Path, typer.Option("--out", file_okay=False, callback=writable_out,
                                      help="output directory (shards, manifest.json)")],
    users: Annotated[str, typer.Option(help="'all', 'sample:N' / 'sample:N:SEED' (a seeded random sample of the "
                                            "known users) or a file of user ids (.txt, .csv, .parquet)")] = "all",
    k: Annotated[int, typer.Option(min=1, help="items per user")] = 100,
    chunk_size: Annotated[int, typer.Option(min=1, help="users per chunk = per shard = "
                                                        "per encode/search batch")] = 2048,
    exclude_seen: Annotated[bool, typer.Option("--exclude-seen/--keep-seen",
                                               help="drop each user's history items (the API's default)")] = True,
    reasons: Annotated[bool, typer.Option(help="with a ranker: per-item explanations (JSON) in `reason`; "
                                               "LightGBM feature contributions, ~8× slower")] = False,
    data: Annotated[Optional[Path], typer.Option(help="evaluation mode: score this dataset's --split examples "
                                                      "from their histories (for `evaluate --from-batch`)")] = None,
    split: Annotated[Optional[str], typer.Option(help="evaluation mode: valid or test")] = None,
    engine: Annotated[str, typer.Option(help="local, or ray (needs the distributed extra: pip install "
                                               "'bert-recsys\\[distributed]')")] = "local",
    workers: Annotated[Optional[int], typer.Option(min=1, help="ray: actors (default: all CPUs; the local engine "
                                                            "is one process)")] = None,
    threads: Annotated[int, typer.Option(min=1, help="FAISS and torch threads per worker; shards are "
                                                    "byte-identical across runs and engines at the same value")] = 1,
    ray_address: Annotated[Optional[str], typer.Option(help="ray: cluster address (default: "
                                                            "start a local Ray)")] = None,
    overwrite: Annotated[bool, typer.Option(help="discard a previous job with different inputs in --out")] = False,
    strict: Annotated[bool, typer.Option(help="fail when any requested user is unknown "
                                              "(default: report them)")] = False,
    progress: Annotated[bool, typer.Option(help="show the users/s progress bar")] = True,
    store: Annotated[Optional[bool], typer.Option(
        "--store/--no-store", help="read the API's event store: events extend the histories, catalogue edits are "
                                   "applied (default: when the store exists; reported in the manifest)")] = None,
    state_dir: StateDirOpt = Path("recsys-state"),
    event_store: EventStoreOpt = "sqlite",
    redis_url: RedisUrlOpt = None,
    redis_timeout_s: RedisTimeoutOpt = REDIS_TIMEOUT_S,
    history_limit: Annotated[int, typer.Option(min=1, envvar="RECSYS_HISTORY_LIMIT",
                                               help="most recent history items read "
                                                    "(the API's limit)")] = HISTORY_LIMIT,
) -> None:
    """Score users in chunks through the API's pipeline and write Parquet shards
    (user_id, rank, item_id, score, retrieval_score, reason, strategy) plus manifest.json.

    Resumable: rerun the same command after a crash or Ctrl-C and completed shards are skipped."""
    from jobs.batch import BatchOptions, run_job

    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"--engine must be local or ray, got {engine!r}")
    check_ray_only(engine, ray_address, workers)
    if (data is None) != (split is None):
        raise typer.BadParameter("evaluation mode needs both --data and --split")
    if split not in (None, "valid", "test"):
        raise typer.BadParameter(f"--split must be valid or test, got {split!r}")
    options = BatchOptions(bundle=bundle, out=out, users=users, k=k, chunk_size=chunk_size, exclude_seen=exclude_seen,
                           reasons=reasons, data=data, split=split, engine=engine,  # type: ignore[arg-type]
                           workers=workers, threads=threads, ray_address=ray_address, overwrite=overwrite,
                           strict=strict, progress=progress,
                           store=store_source(store, state_dir, event_store, redis_url, redis_timeout_s),
                           history_limit=history_limit)
    if data is not None and exclude_seen:  # said before the work: the evaluator refuses such an output by default
        err_console.print("[yellow]note:[/] evaluation mode with --exclude-seen (the default): `recsys evaluate "
                          "--from-batch` reads this output only with --mask-history; pass --keep-seen for the "
                          "published protocol (history not masked)")
    try:
        manifest = run_job(options)
    except KeyboardInterrupt:
        from jobs.batch.layout import interrupted_line
        err_console.print(f"[yellow]interrupted[/]: {escape(interrupted_line(out))}")
        raise typer.Exit(130) from None
    for warning in manifest["warnings"]:
        err_console.print(f"[yellow]warning:[/] {warning}")
    run = manifest["run"]
    if run["chunks_skipped"] and run["chunks_skipped"] == len(manifest["shards"]):  # (was: "scored … 0.0 users/s")
        console.print(f"nothing to score: all {counted(len(manifest['shards']), 'shard')} of "
                      f"{counted(manifest['n_users'], 'user')} were written by a previous run → {out}")
        return
    skipped = f", {counted(run['chunks_skipped'], 'shard')} kept from a previous run" if run["chunks_skipped"] else ""
    if manifest["store"]:
        snapshot = manifest["store"]
        console.print(f"event store {snapshot['source']}: events up to #{snapshot['events_seq']} "
                      f"({counted(snapshot['users_with_events'], 'scored user')} "
                      f"{plural(snapshot['users_with_events'], 'has', 'have')} some), catalogue changes up to "
                      f"#{snapshot['changes_seq']}")
    console.print(f"[green]scored[/] {counted(manifest['n_users'], 'user')} → {counted(manifest['n_rows'], 'row')} "
                  f"in "
                  f"{counted(len(manifest['shards']), 'shard')}{skipped}; {run['seconds']:.1f} s "
                  f"({rate(run['users_per_second'] or 0)} users/s, {run['engine']}), "
                  f"bundle {manifest['bundle_version']}{' with ranker' if manifest['has_ranker'] else ''} → {out}")


def rate(per_second: float) -> str:
    """A throughput for the summary line: whole numbers, one decimal below 10 (a handful of users read "0 users/s")."""
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.1f}"


def store_source(use: bool | None, state_dir: Path, kind: str, redis_url: str | None,
                 redis_timeout_s: float = REDIS_TIMEOUT_S):
    """The event store to read: None with --no-store, or when none exists and --store was not asked for."""
    from jobs.batch.store import StoreSource

    if kind not in ("sqlite", "redis"):
        raise typer.BadParameter(f"--event-store must be sqlite or redis, got {kind!r}")
    if use is False:
        return None
    source = StoreSource(redis_url=redis_url or "redis://127.0.0.1:6379/0", redis_timeout_s=redis_timeout_s) \
        if kind == "redis" else StoreSource(state_dir=state_dir)
    if not source.exists():
        if use:
            raise typer.BadParameter(f"no event store at {source.label}",
                                     param_hint="--redis-url" if kind == "redis" else "--state-dir")
        return None
    return source
