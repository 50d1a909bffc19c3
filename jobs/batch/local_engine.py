"""The local engine: chunks scored one after another in this process (bundle loaded once).

Memory is one chunk's histories, query vectors, candidate lists and output table at a time, so it
does not grow with the number of users (beyond the bundle's own history store and the id list)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from jobs.batch.layout import JobDir
from jobs.batch.scoring import ChunkResult, ChunkScorer
from recsys.pipeline import Recommender


def run_local(bundle: str | Path, job: JobDir, chunks: Sequence[int],
              recommender: Recommender | None = None, threads: int = 1) -> Iterator[ChunkResult]:
    """Score `chunks` in order, yielding each as its shard lands on disk. The bundle is loaded when this is called,
    not when the first chunk is asked for, so a caller's progress bar started afterwards times the scoring alone."""
    scorer = ChunkScorer(bundle, job, recommender, threads)
    return (scorer.run_chunk(chunk) for chunk in chunks)
