"""The on-disk layout of a batch output directory, and how a run resumes in it.

    DIR/
      part-00000.parquet …  one shard per chunk of users (chunk index in the name), rows ordered
                            by the input order of users, then rank
      manifest.json         written last: job identity, counts, shards, bundle version, timings
      unknown_users.txt     requested ids the bundle does not know (only when there are some)
      _job/job.json         the job's identity; a resume must match it exactly
      _job/users.parquet    the users in output order, one row group per chunk (+ `history` and
                            `timestamp` in evaluation mode, + `events` from the event store); every engine reads its
                            chunks from here
      _job/catalogue_changes.parquet  the event store's catalogue changes the job applies (with a store)

`recsys encode` uses the same layout with items: `_job/items.parquet` (item_id, text) as its inputs
and item vectors in the shards (jobs/batch/encode.py).

Every file is written to a temporary name in the same directory and renamed into place, so a shard
is either complete or absent: after a crash or Ctrl-C, completed shards are kept and skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.artifacts import JOB_OUTPUTS
from recsys.errors import RecsysError
from recsys.text_format import counted

JOB_DIR = "_job"
JOB_FILE = "job.json"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
MANIFEST = "manifest.json"
UNKNOWN_FILE = "unknown_users.txt"
SHARD_GLOB = "part-*.parquet"
FORMAT = "recsys-batch-scores"
FORMAT_VERSION = 1
VECTORS_FORMAT = "recsys-item-vectors"  # `recsys encode`'s (jobs/batch/encode.py)
JOB_NOUNS = {FORMAT: "a batch-score job", VECTORS_FORMAT: "an encode job"}
"""format → a job of it, in words (its command and contents: recsys.artifacts.JOB_OUTPUTS)."""


class BatchError(RecsysError):
    """A batch job cannot start or resume (mismatched inputs, not a batch directory, missing output)."""


def shard_name(chunk: int) -> str:
    return f"part-{chunk:05d}.parquet"


def interrupted_line(out: Path) -> str:
    """What a batch or encode job stopped by Ctrl-C kept in `out`, and how to go on (was: "completed shards are kept
    in OUT" also when none was written, and for a directory a fresh job had already removed)."""
    shards = len(list(out.glob(SHARD_GLOB))) if out.is_dir() else 0
    if shards:
        return f"{counted(shards, 'completed shard')} kept in {out}; rerun the same command to resume"
    return f"before the first shard was written: nothing kept in {out}; rerun the same command to start again"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary sibling of `path`, then rename it into place."""
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str)))


def write_table(path: Path, table: pa.Table, row_group_size: int | None = None) -> None:
    """Parquet (zstd) through a temporary name; same table → byte-identical file."""
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size))



@dataclass(frozen=True)
class Chunk:
    """A chunk's inputs: user ids; in evaluation mode each example's history and time (`as_of`), else the
    users' stored events (or None without a store)."""

    user_ids: list[str]
    histories: list[list[str]] | None
    events: list[list[str]] | None
    as_of: list[int] | None

@dataclass(frozen=True)
class JobDir:
    """A prepared output directory: its identity (job.json), its inputs file and the number of chunks."""

    out: Path
    identity: dict
    inputs_file: str = USERS_FILE

    @property
    def n_chunks(self) -> int:
        return int(self.identity["n_chunks"])

    @property
    def inputs_path(self) -> Path:
        return self.out / JOB_DIR / self.inputs_file

    def shard_path(self, chunk: int) -> Path:
        return self.out / shard_name(chunk)

    def completed(self) -> dict[int, int]:
        """chunk → rows for every shard whose Parquet footer reads back (complete shards only)."""
        done: dict[int, int] = {}
        for chunk in range(self.n_chunks):
            path = self.shard_path(chunk)
            if path.is_file():
                try:
                    done[chunk] = pq.read_metadata(path).num_rows
                except (OSError, pa.ArrowException):
                    path.unlink()  # unreadable: score the chunk again
        return done

    def read_inputs(self, chunk: int) -> pa.Table:
        """One chunk's inputs (its row group of the inputs file)."""
        return pq.ParquetFile(self.inputs_path).read_row_group(chunk)

    def read_chunk(self, chunk: int) -> Chunk:
        """One chunk of users: ids, and histories and query times (evaluation mode) or stored events."""
        table = self.read_inputs(chunk)
        column = lambda name: table.column(name).to_pylist() if name in table.column_names else None  # noqa: E731
        return Chunk(table.column("user_id").to_pylist(), column("history"), column("events"), column("timestamp"))

    def check_complete(self, done: dict[int, int]) -> None:
        """BatchError unless every chunk has its shard (`done`: chunk → rows)."""
        missing = [c for c in range(self.n_chunks) if c not in done]
        if missing:
            raise BatchError(f"{counted(len(missing), 'chunk')} produced no shard (e.g. {missing[:5]}); "
                             "rerun to resume")


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{key}: {old.get(key)!r} → {new.get(key)!r}" if "fingerprint" not in key and "digest" not in key
            else f"{key} differs" for key in keys if old.get(key) != new.get(key)]


def held_format(out: Path) -> str | None:
    """The format of the job or finished output in `out`: its job.json's, else its manifest.json's; None when
    neither names one (no job here, a damaged file, or a job written before job files named their format)."""
    for path in (out / JOB_DIR / JOB_FILE, out / MANIFEST):
        held = _read_identity(path) if path.is_file() else None
        if held is not None and isinstance(held.get("format"), str):
            return held["format"]
    return None


def describe_output(out: Path, fmt: str) -> str:
    """What a directory holding a job of format `fmt` holds, for a message: "`recsys encode` output (item
    vectors)", "an unfinished `recsys encode` job (item vectors)", or "output of format 'x'" for one this tool
    does not write."""
    if fmt not in JOB_OUTPUTS:
        return f"output of format {fmt!r}"
    command, contents = JOB_OUTPUTS[fmt]
    return f"`{command}` output ({contents})" if (out / MANIFEST).is_file() \
        else f"an unfinished `{command}` job ({contents})"


def refuse_foreign(out: str | Path, fmt: str) -> None:
    """BatchError when `out` holds another command's job or output (a format other than `fmt`): --overwrite replaces
    a command's own earlier output only, never another's."""
    out = Path(out)
    held = held_format(out) if out.is_dir() else None
    if held is not None and held != fmt:
        job = JOB_NOUNS.get(fmt, f"a {fmt} job")
        raise BatchError(f"{out} holds {describe_output(out, held)}, not {job}: choose another --out "
                         "(--overwrite replaces only this command's own earlier output)")


def _clear(out: Path) -> None:
    for path in out.glob(SHARD_GLOB):
        path.unlink()
    for name in (MANIFEST, UNKNOWN_FILE):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / JOB_DIR, ignore_errors=True)


def _read_identity(job_file: Path) -> dict | None:
    """A job.json's identity; None when the file is damaged (not JSON, not an object)."""
    try:
        identity = json.loads(job_file.read_text())
    except (OSError, ValueError):
        return None
    return identity if isinstance(identity, dict) else None


def _row_groups(path: Path) -> int | None:
    """The row groups of a job's inputs file; None when it is missing or unreadable."""
    try:
        return pq.ParquetFile(path).num_row_groups
    except (OSError, pa.ArrowException):
        return None


def _unstarted(out: Path) -> bool:
    """Whether `out` holds only what a run killed before its job.json landed leaves behind: `_job/` with the inputs
    file or temporary files (a job of this tool, to start afresh; anything else in `out` is not ours)."""
    entries = list(out.iterdir())
    if [p.name for p in entries] != [JOB_DIR] or not entries[0].is_dir():
        return False
    return all(p.is_file() and (p.name in (USERS_FILE, ITEMS_FILE) or p.name.startswith(".") and ".tmp-" in p.name)
               for p in entries[0].iterdir())


def prepare(out: str | Path, identity: dict, inputs: pl.DataFrame, chunk_size: int,
            overwrite: bool = False, inputs_file: str = USERS_FILE) -> tuple[JobDir, bool]:
    """Create or re-open `out` for the job `identity` over `inputs` (one row group per chunk, written
    to `_job/<inputs_file>`); returns (job dir, resumed).

    A directory holding a different job is refused (or cleared with `overwrite`); one holding another command's
    job or output (another format) is refused, with `overwrite` too; a directory with other files and no job is
    refused, except the `_job/` a run killed before its job.json landed leaves (it starts afresh). Stale temporary
    files from a killed run are removed."""
    out = Path(out)
    refuse_foreign(out, identity["format"])
    job_file = out / JOB_DIR / JOB_FILE
    resumed = False
    if job_file.is_file():
        old = _read_identity(job_file)
        if old is None and not overwrite:
            raise BatchError(f"{job_file} is damaged (not a job file); use a new --out, or --overwrite to discard "
                             "the job")
        if old != identity and not overwrite:
            kind = "an encode job" if inputs_file == ITEMS_FILE else "a batch job"  # `recsys encode` is one too
            raise BatchError(f"{out} holds {kind} with different inputs "
                             f"({'; '.join(_differences(old, identity))}); "
                             "use a new --out, or --overwrite to discard it")
        if old != identity or overwrite:
            _clear(out)
        else:
            resumed = True
    elif out.is_dir() and any(out.iterdir()) and not _unstarted(out):  # never clear a directory no job wrote
        raise BatchError(f"{out} is not empty and holds no {'encode' if inputs_file == ITEMS_FILE else 'batch'} job; "
                         "choose a new or empty directory")
    (out / JOB_DIR).mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp-*"):
        stale.unlink()
    for stale in (out / JOB_DIR).glob(".*.tmp-*"):
        stale.unlink()
    job = JobDir(out, identity, inputs_file)
    groups = _row_groups(job.inputs_path) if resumed else None
    if groups is None:  # a new job, or its inputs absent or damaged: the same inputs, written again
        write_table(job.inputs_path, inputs.to_arrow(), row_group_size=chunk_size)
        write_json(job_file, identity)
        groups = _row_groups(job.inputs_path)
    if groups != job.n_chunks:
        raise BatchError(f"{job.inputs_path}: {groups} row groups for {job.n_chunks} chunks (corrupted job directory)")
    return job, resumed


def read_batch_manifest(out: str | Path, fmt: str = FORMAT) -> dict:
    """The manifest of a finished job of format `fmt` (clear error when the job never finished)."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        hint = " (the job did not finish: rerun the same command to resume it)" \
            if (Path(out) / JOB_DIR / JOB_FILE).is_file() else ""
        raise BatchError(f"{out}: no {MANIFEST}, not a finished job output{hint}")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != fmt:
        raise BatchError(f"{path}: not a {fmt} manifest")
    return manifest


def read_shards(out: str | Path, columns: list[str] | None = None) -> pl.DataFrame:
    """All shards of a finished job as one frame, in output order (user order, then rank)."""
    manifest = read_batch_manifest(out)
    files = [Path(out) / shard["file"] for shard in manifest["shards"]]
    return pl.concat([pl.read_parquet(f, columns=columns) for f in files]) if files else pl.DataFrame()
