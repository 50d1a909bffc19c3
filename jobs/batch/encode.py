"""Catalogue encoding (`recsys encode`, `recsys build --engine ray`): every item text through the item tower,
written as resumable shards by the local engine or a Ray Data actor pool.

    DIR/
      part-00000.parquet …  item_id + vector (fixed-size list of float32), one shard per chunk of items,
                            rows in the dataset's item order
      manifest.json         written last: job identity, dim, shards, the model's path, timings
      _job/job.json         the job's identity (encoder config, precision, chunk size, items fingerprint)
      _job/items.parquet    item_id + text, one row group per chunk; every engine reads its chunks here

The layout, the resume rules (same identity → complete shards skipped; another job in the same directory
→ refused unless --overwrite) and the engines are batch scoring's (jobs/batch/layout.py, ray_engine.py).
`read_vectors(DIR)` returns (item ids, float32 [n, dim]) in item order.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from jobs.batch.job import Engine, collect, peak_rss_mb
from jobs.batch.layout import ITEMS_FILE, MANIFEST, VECTORS_FORMAT, BatchError, JobDir, prepare, read_batch_manifest, \
    refuse_foreign, shard_name, write_json, write_table
from jobs.batch.scoring import ChunkResult, torch_threads
from recsys.config import EncoderConfig
from recsys.errors import DataError

FORMAT = VECTORS_FORMAT
FORMAT_VERSION = 1
HASH_BLOCK = 100_000


@dataclass(frozen=True)
class EncodeOptions:
    """Where and how to encode. `precision`: auto (bf16 autocast on CUDA, fp32 on CPU), fp32, or fp16 (CUDA)."""

    out: Path
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    precision: str = "auto"
    chunk_size: int = 4096
    engine: Engine = "local"
    workers: int | None = None
    threads: int = 1
    ray_address: str | None = None
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.threads < 1:
            raise ValueError("chunk_size and threads must be positive")
        if self.engine not in ("local", "ray"):
            raise ValueError(f"engine must be 'local' or 'ray', got {self.engine!r}")
        if self.precision not in ("auto", "fp32", "fp16"):
            raise ValueError(f"precision must be auto, fp32 or fp16, got {self.precision!r}")


def items_fingerprint(items: pl.DataFrame) -> str:
    """sha256 over the item ids and texts, in order: what the vectors depend on."""
    digest = hashlib.sha256()
    for start in range(0, items.height, HASH_BLOCK):
        block = items.slice(start, HASH_BLOCK)
        for column in ("item_id", "text"):
            digest.update("\x1f".join(block[column].to_list()).encode())
            digest.update(b"\x1d")
    return digest.hexdigest()


def identity(items: pl.DataFrame, options: EncodeOptions) -> dict:
    """The job's identity (job.json): a resume must match it exactly."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "encoder": options.encoder.model_dump(mode="json"),
            "precision": options.precision, "chunk_size": options.chunk_size, "n_items": items.height,
            "n_chunks": -(-items.height // options.chunk_size), "input_fingerprint": items_fingerprint(items)}


class ChunkEncoder:
    """Loads the item tower once; encodes chunks of a prepared job and writes their shards.

    Both engines use it: the local engine holds one, each Ray actor holds its own."""

    def __init__(self, job: JobDir, threads: int = 1, encoder: Any = None) -> None:
        from encoders.text_encoder import load_text_encoder

        self.job = job
        self.threads = threads
        with torch_threads(threads):
            self.encoder = encoder or load_text_encoder(EncoderConfig.model_validate(job.identity["encoder"]),
                                                        precision=job.identity["precision"])

    def run_chunk(self, chunk: int) -> ChunkResult:
        """Read, encode and write one chunk (atomically: its shard is complete or absent)."""
        started = time.perf_counter()
        inputs = self.job.read_inputs(chunk)
        with torch_threads(self.threads):
            vectors = self.encoder.encode(inputs.column("text").to_pylist())
        dim = vectors.shape[1]
        table = pa.table({"item_id": inputs.column("item_id"),
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim)})
        write_table(self.job.shard_path(chunk), table)
        return ChunkResult(chunk, table.num_rows, table.num_rows, time.perf_counter() - started)


class EncodeChunks:
    """Ray Data callable class: item tower loaded in `__init__`, one chunk per call."""

    def __init__(self, out: str, identity: dict, threads: int = 1) -> None:
        self.encoder = ChunkEncoder(JobDir(Path(out), identity, ITEMS_FILE), threads)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from jobs.batch.ray_engine import result_columns

        return result_columns([self.encoder.run_chunk(int(chunk)) for chunk in batch["chunk"]])


def _engine(options: EncodeOptions, job: JobDir, chunks: list[int], encoder: Any) -> Iterator[ChunkResult]:
    if options.engine == "ray":
        from jobs.batch.ray_engine import map_chunks
        return map_chunks(EncodeChunks, {"out": str(job.out.resolve()), "identity": job.identity,
                                         "threads": options.threads},
                          chunks, options.workers, options.ray_address, options.threads)
    if not chunks:  # all shards kept from a previous run: no model to load
        return iter(())
    local = ChunkEncoder(job, options.threads, encoder)
    return (local.run_chunk(chunk) for chunk in chunks)


def check_can_run(options: EncodeOptions) -> None:
    """RecsysError for a job that would fail when its engine loads the model: a local model directory that is not
    a Hugging Face model, fp16 with the local engine on a machine without CUDA (Ray's workers may have GPUs)."""
    import torch

    from encoders.backbone import check_model_directory

    check_model_directory(options.encoder.model)
    if options.precision == "fp16" and options.engine == "local" and not torch.cuda.is_available():
        raise BatchError("fp16 encoding needs a CUDA device and this machine has none: use --precision auto (fp32 on "
                         "a CPU) or fp32")


def run_encode(items: pl.DataFrame, options: EncodeOptions, encoder: Any = None,
               on_chunk: Callable[[ChunkResult], None] | None = None) -> dict:
    """Encode `items` (item_id, text) into `options.out`; returns the manifest (also OUT/manifest.json).

    `encoder` lets the local engine reuse a loaded TextEncoder; `on_chunk` is called after each shard lands."""
    missing = {"item_id", "text"} - set(items.columns)
    if missing:
        raise DataError(f"items need the columns item_id and text (missing: {', '.join(sorted(missing))})")
    refuse_foreign(options.out, FORMAT)  # before the model loads: another command's output is never ours to replace
    if encoder is None:  # what cannot run fails here, before OUT becomes a job that a corrected rerun is refused
        check_can_run(options)
    started = time.perf_counter()
    items = items.select("item_id", "text")
    job_identity = identity(items, options)
    job, resumed = prepare(options.out, job_identity, items, options.chunk_size, options.overwrite, ITEMS_FILE)
    n_items = items.height
    del items
    done = job.completed()
    pending = [c for c in range(job.n_chunks) if c not in done]
    with tqdm(total=n_items, initial=sum(done.values()), unit="item", unit_scale=True,
              desc=f"encoding ({options.engine})", disable=not options.progress, smoothing=0.1) as bar:
        encoded = collect(_engine(options, job, pending, encoder), done, bar, on_chunk)
    job.check_complete(done)
    seconds = time.perf_counter() - started
    dim = pq.read_schema(job.shard_path(0)).field("vector").type.list_size if job.n_chunks else 0
    from encoders.backbone import resolve_model_path

    manifest = {
        **job_identity, "dim": dim, "n_rows": sum(done.values()),
        "model_path": resolve_model_path(options.encoder.model),
        "shards": [{"file": shard_name(c), "chunk": c, "rows": done[c]} for c in range(job.n_chunks)],
        "run": {"engine": options.engine, "threads_per_worker": options.threads, "resumed": resumed,
                "chunks_encoded": len(pending), "chunks_skipped": job.n_chunks - len(pending),
                "items_encoded": encoded, "seconds": round(seconds, 3),
                "items_per_second": round(encoded / seconds, 1) if seconds else None,
                "driver_peak_rss_mb": round(peak_rss_mb(), 1),
                "finished_at": datetime.now(timezone.utc).isoformat()},
    }
    write_json(job.out / MANIFEST, manifest)
    return manifest


def read_vectors(out: str | Path) -> tuple[list[str], np.ndarray]:
    """(item ids, float32 [n_items, dim]) of a finished encode job, in item order."""
    manifest = read_batch_manifest(out, FORMAT)
    dim = int(manifest["dim"])
    ids: list[str] = []
    blocks = []
    for shard in manifest["shards"]:
        table = pq.read_table(Path(out) / shard["file"])
        ids += table.column("item_id").to_pylist()
        flat = table.column("vector").combine_chunks().flatten()
        blocks.append(flat.to_numpy(zero_copy_only=False).reshape(-1, dim))
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, dim), dtype=np.float32)
    return ids, vectors.astype(np.float32, copy=False)
