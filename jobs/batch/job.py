"""Plan, run (local or Ray engine) and finish a batch scoring job.

A job's identity (job.json) is: bundle version + manifest digest, k, exclude_seen, chunk size, the
fingerprint of the scored users (and histories in evaluation mode), the split and dataset
fingerprint in evaluation mode, the event-store snapshot (its location and sequence numbers) and the
history limit. Same identity → resume (completed shards skipped; a resumed job keeps its store snapshot); a
different one in the same directory → refused. The engine is not part of the identity: both write the same
shards.
"""

from __future__ import annotations

import resource
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import polars as pl
from tqdm.auto import tqdm

from jobs.batch.layout import FORMAT, FORMAT_VERSION, JOB_DIR, MANIFEST, SHARD_GLOB, UNKNOWN_FILE, BatchError, \
    JobDir, atomic_write, prepare, refuse_foreign, shard_name, write_json
from jobs.batch.scoring import OUTPUT_SCHEMA, ChunkResult
from jobs.batch.store import CHANGES_FILE, Snapshot, StoreSource, take_snapshot, with_events, write_changes
from jobs.batch.users import ALL, SAMPLE, UserSelection, parse_sample, select_users
from recsys.artifacts import MANIFEST as BUNDLE_MANIFEST
from recsys.artifacts import read_manifest, resolve_bundle, sha256_file
from recsys.errors import BundleError, UnknownIdError
from recsys.pipeline import Recommender
from recsys.stats import saved_config
from recsys.store import HISTORY_LIMIT
from recsys.text_format import counted, plural

Engine = Literal["local", "ray"]


@dataclass(frozen=True)
class BatchOptions:
    """Everything a batch job needs. `data` + `split` switch to evaluation mode: the users are that
    split's examples and each is scored from the example's history (the items before its target),
    not from the bundle's stored history (which includes the held-out items), at the example's time (the
    re-ranker's statistics count the events before it, as `recsys evaluate` does). `store`: the API's event store
    (events extend the bundle's histories, catalogue changes are applied), None to score the bundle alone;
    `history_limit`: the most recent items of a history that are read (the API's RECSYS_HISTORY_LIMIT)."""

    bundle: Path
    out: Path
    users: str = ALL
    k: int = 100
    chunk_size: int = 2048
    exclude_seen: bool = True
    reasons: bool = False  # the ranker's per-item explanations: SHAP contributions, ~8× slower
    data: Path | None = None
    split: str | None = None
    engine: Engine = "local"
    workers: int | None = None
    threads: int = 1
    ray_address: str | None = None
    overwrite: bool = False
    strict: bool = False
    progress: bool = True
    store: StoreSource | None = None
    history_limit: int = HISTORY_LIMIT

    def __post_init__(self) -> None:
        if self.k < 1 or self.chunk_size < 1 or self.threads < 1 or self.history_limit < 1:
            raise ValueError("k, chunk_size, threads and history_limit must be positive")
        if (self.data is None) != (self.split is None):
            raise ValueError("evaluation mode needs both data and split")
        if self.split not in (None, "valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {self.split!r}")
        if self.engine not in ("local", "ray"):
            raise ValueError(f"engine must be 'local' or 'ray', got {self.engine!r}")


def _candidates(bundle: Path, options: BatchOptions) -> tuple[pl.DataFrame, str | None]:
    """(user_id [+ history and timestamp] of everybody who can be scored, dataset fingerprint in evaluation
    mode)."""
    if options.data is None:
        name = "stats/histories.parquet"
        try:
            return pl.read_parquet(bundle / name, columns=["user_id"]), None
        except (OSError, pl.exceptions.PolarsError) as exc:  # the engines verify every part once they load
            missing = not (bundle / name).is_file()
            problem = "listed in the manifest is missing" if missing else f"cannot be read ({exc})"
            raise BundleError(f"{bundle}: file {name} {problem}") from None
    from jobs.workflows import load_dataset
    from recsys.splits import split_dataset
    dataset = load_dataset(options.data)
    split = split_dataset(dataset)
    split.require_examples([options.split or "test"], "batch scoring in evaluation mode (--split)")
    examples = split.examples(options.split or "test")
    if examples["user_id"].n_unique() != examples.height:
        raise BatchError(f"{options.data}: the {options.split} split has several examples per user; "
                         "batch output keeps one list per user")
    return examples.select("user_id", "history", "timestamp"), dataset.fingerprint()


@dataclass(frozen=True)
class Plan:
    """What `plan` decided: the bundle, the job identity, the users, and the store snapshot (if any)."""

    bundle: Path
    identity: dict
    selection: UserSelection
    snapshot: Snapshot | None = None
    warnings: tuple[str, ...] = ()
    bundle_dataset: str | None = None  # the dataset fingerprint the bundle's manifest names (None: none)


def plan(options: BatchOptions) -> Plan:
    """Resolve the bundle, select the users and (with a store) take the store snapshot; reads only the bundle's
    manifest and ids, and the store's events of the selected users."""
    bundle = resolve_bundle(options.bundle)
    manifest = read_manifest(bundle, verify=False)  # fail early on a non-bundle; the engines verify on load
    if options.split is not None:
        stats = saved_config(bundle / "stats")
        if stats is not None:
            stats.check_unseen(options.split)
    candidates, dataset_fingerprint = _candidates(bundle, options)
    store, snapshot = None, None
    if options.store is not None and options.data is None:  # evaluation mode scores the split's own histories
        store = options.store.open()
        snapshot = take_snapshot(store, options.store, options.out, fresh=options.overwrite)
        stored = pl.DataFrame({"user_id": store.event_users(until=snapshot.events_seq)}, schema={"user_id": pl.Utf8})
        candidates = pl.concat([candidates, stored]).unique("user_id", keep="first", maintain_order=True)
    try:
        selection = select_users(options.users, candidates)
        if options.strict and len(selection.unknown):
            raise UnknownIdError("user", selection.unknown.to_list())
        if store is not None:
            selection = replace(selection, frame=with_events(selection.frame, store, snapshot, options.history_limit))
    finally:
        if store is not None:
            store.close()
    identity = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "bundle_version": bundle.name, "bundle_digest": sha256_file(bundle / BUNDLE_MANIFEST),
        "k": options.k, "exclude_seen": options.exclude_seen, "reasons": options.reasons,
        "chunk_size": options.chunk_size,
        "n_users": selection.n_users, "n_chunks": -(-selection.n_users // options.chunk_size),
        "input_fingerprint": selection.fingerprint(),
        "split": options.split, "dataset_fingerprint": dataset_fingerprint,
        "store": snapshot.identity() if snapshot is not None else None, "history_limit": options.history_limit,
    }
    warnings: tuple[str, ...] = ()
    from jobs.workflows import built_on_other_fingerprint, bundle_fingerprint
    if dataset_fingerprint is not None and built_on_other_fingerprint(manifest, dataset_fingerprint):  # evaluation
        warnings = (f"the bundle was built on another dataset (fingerprint differs from {options.data}'s): its "
                    "catalogue and statistics are not this dataset's; a history of items it does not hold gets "
                    "popular items (strategy popular_fallback)",)
    warnings += k_above_catalogue(options.k, bundle)
    if options.reasons and not (bundle / "ranker").is_dir():  # (was: silently a null `reason` on every row)
        warnings += ("--reasons: the bundle has no re-ranker, whose feature contributions the reasons are, so "
                     "`reason` stays empty (null); add one with `recsys train-ranker`",)
    return Plan(bundle, identity, selection, snapshot, warnings, bundle_fingerprint(manifest))


def k_above_catalogue(k: int, bundle: Path) -> tuple[str, ...]:
    """A warning when k exceeds the bundle's catalogue: the lists are shorter than k (was: silently, a manifest
    whose n_rows fell short of users × k)."""
    import pyarrow.parquet as pq

    n_items = pq.ParquetFile(bundle / "embeddings" / "items.parquet").metadata.num_rows
    if k <= n_items:
        return ()
    return (f"k {k:,} is above the bundle's catalogue of {counted(n_items, 'item')}: each list holds at most "
            f"{n_items:,} (fewer with --exclude-seen, the default, which leaves out the user's history)",)


def _store_changes(options: BatchOptions, job: JobDir, snapshot: Snapshot | None) -> int:
    """Write the snapshot's catalogue changes into the job directory (once); returns how many there are."""
    if snapshot is None or options.store is None:
        return 0
    path = job.out / JOB_DIR / CHANGES_FILE
    if not path.is_file():
        store = options.store.open()
        try:
            write_changes(path, store.changes(until=snapshot.changes_seq))
        finally:
            store.close()
    return pl.read_parquet(path, columns=["seq"]).height


def _engine(options: BatchOptions, bundle: Path, job: JobDir, chunks: list[int], recommender: Recommender | None):
    if options.engine == "ray":
        from jobs.batch.ray_engine import run_ray
        return run_ray(bundle, job, chunks, workers=options.workers, address=options.ray_address,
                       threads=options.threads)
    from jobs.batch.local_engine import run_local
    return run_local(bundle, job, chunks, recommender, options.threads)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def collect(results: Iterable[ChunkResult], done: dict[int, int], bar: tqdm,
            on_chunk: Callable[[ChunkResult], None] | None = None) -> int:
    """Consume an engine's results as their shards land: record each chunk's rows in `done` and advance
    `bar`; returns the inputs processed. The engine is closed afterwards, also on Ctrl-C (Ray shuts down)."""
    processed = 0
    try:
        for result in results:
            done[result.chunk] = result.rows
            processed += result.inputs
            bar.update(result.inputs)
            if on_chunk is not None:
                on_chunk(result)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
    return processed


def run_job(options: BatchOptions, on_chunk: Callable[[ChunkResult], None] | None = None,
            recommender: Recommender | None = None) -> dict:
    """Score every selected user; returns the manifest (also written to OUT/manifest.json).

    `on_chunk` is called after each shard lands (tests use it to interrupt a run); `recommender`
    lets the local engine reuse an already loaded pipeline. A run that fails before its first shard leaves no
    output directory behind when it created it (there is nothing to resume)."""
    if options.engine == "ray":
        from jobs.batch.ray_engine import import_ray
        import_ray()  # a missing extra fails here, before anything is written
    out = Path(options.out)
    refuse_foreign(out, FORMAT)  # before the store snapshot and the bundle: another command's output is not ours
    fresh = not out.exists()
    try:
        return _score(options, on_chunk, recommender)
    except BaseException:
        if fresh and out.is_dir() and not any(out.glob(SHARD_GLOB)):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _score(options: BatchOptions, on_chunk: Callable[[ChunkResult], None] | None,
           recommender: Recommender | None) -> dict:
    started = time.perf_counter()
    planned = plan(options)
    bundle, identity, selection = planned.bundle, planned.identity, planned.selection
    job, resumed = prepare(options.out, identity, selection.frame, options.chunk_size, options.overwrite)
    n_changes = _store_changes(options, job, planned.snapshot)
    warnings = list(planned.warnings)
    if len(selection.unknown):
        unknown_path = job.out / UNKNOWN_FILE
        unknown_text = "\n".join(selection.unknown.to_list()) + "\n"
        atomic_write(unknown_path, lambda tmp: tmp.write_text(unknown_text))
        shown = ", ".join(repr(u) for u in selection.unknown.head(5).to_list())
        warnings.append(f"{len(selection.unknown):,} of {counted(selection.n_requested, 'requested user')} "
                        f"{plural(len(selection.unknown), 'is', 'are')} unknown to "
                        f"the bundle and were not scored (e.g. {shown}); all listed in {unknown_path}")
    if selection.n_duplicates:
        warnings.append(f"{counted(selection.n_duplicates, 'duplicate user id')} in the input "
                        f"{plural(selection.n_duplicates, 'was', 'were')} scored once")
    if selection.source.startswith(SAMPLE) and parse_sample(selection.source)[0] > selection.n_users:
        warnings.append(f"{selection.source} asks for more users than the bundle knows: all {selection.n_users:,} "
                        "of them were scored")
    n_users = selection.n_users
    source = {"source": selection.source, "n_requested": selection.n_requested,
              "n_duplicates": selection.n_duplicates, "n_unknown": len(selection.unknown),
              "unknown_file": UNKNOWN_FILE if len(selection.unknown) else None}
    bundle_dataset = planned.bundle_dataset
    store = None if planned.snapshot is None else {
        **planned.snapshot.identity(), "catalogue_changes": n_changes,
        "users_with_events": int((selection.frame["events"].list.len() > 0).sum())}
    del selection, planned  # the ids now live in OUT/_job/users.parquet; keep the driver small

    done = job.completed()
    pending = [c for c in range(job.n_chunks) if c not in done]
    done_users = sum(min(options.chunk_size, n_users - c * options.chunk_size) for c in done)
    # the local engine loads the bundle here, before the bar starts, so the bar's users/s is the scoring's alone
    results = _engine(options, bundle, job, pending, recommender) if pending else iter(())
    with tqdm(total=n_users, initial=done_users, unit="user", unit_scale=True, desc=f"scoring ({options.engine})",
              disable=not options.progress, smoothing=0.1) as bar:
        scored_users = collect(results, done, bar, on_chunk)
    job.check_complete(done)

    seconds = time.perf_counter() - started
    manifest = {
        **identity,
        "bundle": str(bundle), "bundle_name": bundle.parent.name, "has_ranker": (bundle / "ranker").is_dir(),
        "bundle_dataset_fingerprint": bundle_dataset,  # with has_ranker: are valid rows in-sample (evaluate)
        "columns": OUTPUT_SCHEMA.names, "rank_base": 1,
        "input": source,
        "store": store,
        "n_rows": sum(done.values()),
        "shards": [{"file": shard_name(c), "chunk": c, "rows": done[c]} for c in range(job.n_chunks)],
        "warnings": warnings,
        "run": {"engine": options.engine, "threads_per_worker": options.threads, "resumed": resumed,
                "chunks_scored": len(pending),
                "chunks_skipped": job.n_chunks - len(pending), "users_scored": scored_users,
                "seconds": round(seconds, 3), "users_per_second": round(scored_users / seconds, 1) if seconds else None,
                "driver_peak_rss_mb": round(peak_rss_mb(), 1),
                "finished_at": datetime.now(timezone.utc).isoformat()},
    }
    write_json(job.out / MANIFEST, manifest)
    return manifest
