"""Score one chunk of users through the pipeline's one path (`Recommender.recommend_batch`, the same
call behind the API's user recommendations, with the same histories) and turn the lists into an Arrow table.

The re-ranker, when the bundle has one, runs inside `recommend_batch`; its optional per-item fields
(retrieval scores, explanations) are picked up here by name when the result carries them, and are
null otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa

from encoders.loading import open_recommender
from jobs.batch.layout import JOB_DIR, JobDir, write_table
from jobs.batch.store import CHANGES_FILE, read_changes
from recsys.bundle import Bundle
from recsys.changes import apply_changes
from recsys.pipeline import RecommendationList, Recommender
from recsys.store import HISTORY_LIMIT, merged_history

OUTPUT_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("rank", pa.int32()),            # 1 = best
    ("item_id", pa.string()),
    ("score", pa.float64()),         # final score (the ranker's when there is one)
    ("retrieval_score", pa.float64()),  # FAISS inner product before re-ranking; null without a ranker
    ("reason", pa.string()),         # the ranker's explanation; null without a ranker
    ("strategy", pa.string()),       # personalised | popular_fallback (as the API reports it)
])
# attribute names a RecommendationList may use for the optional per-item fields (first found wins)
RETRIEVAL_FIELDS = ("retrieval_scores",)
REASON_FIELDS = ("reasons", "explanations", "why")


def _optional(result: RecommendationList, names: Sequence[str]) -> list[Any] | None:
    for name in names:
        values = getattr(result, name, None)
        if values is not None:
            if len(values) != len(result.item_ids):
                raise ValueError(f"RecommendationList.{name} has {len(values)} values for {len(result.item_ids)} items")
            return list(values)
    return None


def _reason_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _optional_column(per_result: list[list[Any] | None], results: Sequence[RecommendationList], total: int,
                     kind: pa.DataType, convert: Callable[[Any], Any]) -> pa.Array:
    """Flatten one optional per-item field; all-null (cheap) when no result carries it."""
    if all(values is None for values in per_result):
        return pa.nulls(total, kind)
    flat: list[Any] = []
    for values, result in zip(per_result, results):
        flat.extend([None if v is None else convert(v) for v in values] if values is not None
                    else [None] * len(result.item_ids))
    return pa.array(flat, kind)


def results_table(user_ids: Sequence[str], results: Sequence[RecommendationList]) -> pa.Table:
    """One row per (user, rank): user order kept, ranks 1..len(list). Built column-wise."""
    lengths = np.fromiter((len(r.item_ids) for r in results), dtype=np.int64, count=len(results))
    total = int(lengths.sum())
    owner = pa.array(np.repeat(np.arange(len(results)), lengths))  # row → its user's position
    first_row = np.repeat(np.cumsum(lengths) - lengths, lengths)
    columns = [
        pa.array(list(user_ids), pa.string()).take(owner),
        pa.array((np.arange(total) - first_row + 1).astype(np.int32)),
        pa.array(list(chain.from_iterable(r.item_ids for r in results)), pa.string()),
        pa.array(np.fromiter(chain.from_iterable(r.scores for r in results), dtype=np.float64, count=total)),
        _optional_column([_optional(r, RETRIEVAL_FIELDS) for r in results], results, total, pa.float64(), float),
        _optional_column([_optional(r, REASON_FIELDS) for r in results], results, total, pa.string(), _reason_text),
        pa.array([r.strategy for r in results], pa.string()).take(owner),
    ]
    return pa.Table.from_arrays(columns, schema=OUTPUT_SCHEMA)


@contextmanager
def pinned_threads(get: Callable[[], int], set_: Callable[[int], None], n: int) -> Iterator[None]:
    """Run with a library's thread count (read by `get`, written by `set_`) at `n`, restored afterwards."""
    before = get()
    set_(n)
    try:
        yield
    finally:
        set_(before)


def faiss_threads(n: int) -> AbstractContextManager[None]:
    """Run FAISS with `n` OpenMP threads, restoring the previous setting afterwards.

    FAISS groups queries per thread, so float32 scores can change in the last bit with the thread
    count, and items whose scores tie (duplicate products) can swap. Pinning the count per worker
    makes the shards byte-identical across runs, machines and engines."""
    return pinned_threads(faiss.omp_get_max_threads, faiss.omp_set_num_threads, n)


def torch_threads(n: int) -> AbstractContextManager[None]:
    """Run torch with `n` intra-op threads, restoring the previous setting afterwards."""
    import torch

    return pinned_threads(torch.get_num_threads, torch.set_num_threads, n)


@contextmanager
def scoring_threads(n: int) -> Iterator[None]:
    """FAISS and, when a trained tower has loaded it, torch run with `n` threads each. torch's matrix products
    also change in the last bit with its thread count: a Ray actor's one thread and the local engine's every core
    gave other `retrieval_score`s (7,316 of 200,000 on the amazon-scientific engine bundle). A bundle without
    trained towers never imports torch for this."""
    with faiss_threads(n), (torch_threads(n) if "torch" in sys.modules else nullcontext()):
        yield


@dataclass(frozen=True)
class ChunkResult:
    """What an engine reports for one finished chunk: its inputs (users scored, or items encoded),
    output rows and seconds."""

    chunk: int
    inputs: int
    rows: int
    seconds: float


class ChunkScorer:
    """Loads the bundle once (and applies the job's catalogue changes from the event store to it); scores chunks
    of a prepared job and writes their shards.

    Both engines use it: the local engine holds one, each Ray actor holds its own."""

    def __init__(self, bundle: str | Path, job: JobDir, recommender: Recommender | None = None,
                 threads: int = 1) -> None:
        self.job = job
        self.threads = threads
        self.k = int(job.identity["k"])
        self.exclude_seen = bool(job.identity["exclude_seen"])
        self.reasons = bool(job.identity.get("reasons", False))
        self.history_limit = int(job.identity.get("history_limit") or HISTORY_LIMIT)
        opened = Bundle.open(bundle, verify=recommender is None)
        self.recommender = recommender if recommender is not None else open_recommender(opened)
        changes = read_changes(job.out / JOB_DIR / CHANGES_FILE)
        if changes:  # the same catalogue the API serves at the snapshot (an upsert from another item space is
            # encoded again with this bundle's item tower, as on an API reload)
            rec = self.recommender
            apply_changes(rec.catalogue, changes, opened.item_space,
                          lambda records: rec.item_tower().encode_items(records))

    def score(self, user_ids: Sequence[str], histories: Sequence[Sequence[str]] | None = None,
              events: Sequence[Sequence[str]] | None = None, as_of: Sequence[int] | None = None) -> pa.Table:
        """Top-k for `user_ids`, from `histories` when given (evaluation mode, each at its `as_of` time), else
        from the bundle's histories extended by the users' stored `events` (`merged_history`: what the API
        reads), now."""
        if histories is None:
            stored = self.recommender.histories
            events = events if events is not None else [()] * len(user_ids)
            histories = [merged_history(stored.get(u), e, self.history_limit) or [] for u, e in zip(user_ids, events)]
        with scoring_threads(self.threads):
            results = self.recommender.recommend_batch(histories, self.k, exclude_seen=self.exclude_seen,
                                                       explain=self.reasons, as_of=as_of)
        return results_table(user_ids, results)

    def run_chunk(self, chunk: int) -> ChunkResult:
        """Read, score and write one chunk (atomically: its shard is complete or absent)."""
        started = time.perf_counter()
        inputs = self.job.read_chunk(chunk)
        table = self.score(inputs.user_ids, inputs.histories, inputs.events, inputs.as_of)
        write_table(self.job.shard_path(chunk), table)
        return ChunkResult(chunk, len(inputs.user_ids), table.num_rows, time.perf_counter() - started)
