"""Bounded memory: the batch job's peak memory does not grow with the number of users scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from jobs.batch import BatchOptions, run_job
from recsys.config import BuildConfig
from recsys.popularity import Popularity
from recsys.pipeline import Recommender

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def generated_recommender(n_users: int, n_items: int = 200, dim: int = 16, seed: int = 0) -> Recommender:
    """A small catalogue and `n_users` short random histories (3–6 items), built without BERT."""
    rng = np.random.default_rng(seed)
    item_ids = [f"i{j:04d}" for j in range(n_items)]
    vectors = rng.standard_normal((n_items, dim)).astype(np.float32)
    lengths = rng.integers(3, 7, n_users)
    flat = np.asarray(item_ids, dtype=object)[rng.integers(0, n_items, int(lengths.sum()))].tolist()
    ends = np.cumsum(lengths).tolist()
    histories = {f"u{u:07d}": flat[end - n:end] for u, (n, end) in enumerate(zip(lengths.tolist(), ends))}
    config = BuildConfig()
    items = pl.DataFrame({"item_id": item_ids, "text": item_ids})
    counts = np.bincount(rng.integers(0, n_items, 1000), minlength=n_items)
    return Recommender.from_parts(config, items, vectors, Popularity(item_ids, counts), histories)


def rss_mb() -> tuple[float, float]:
    """(current, peak since the last reset) resident memory of this process, MB (Linux)."""
    fields = dict(line.split(":", 1) for line in STATUS.read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def peak_growth_mb(options: BatchOptions, recommender: Recommender) -> float:
    """Peak RSS above the starting RSS while the job runs (the peak is reset first)."""
    CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
    start, _ = rss_mb()
    manifest = run_job(options, recommender=recommender)
    assert manifest["n_users"] == manifest["n_rows"] // options.k
    return rss_mb()[1] - start


@pytest.mark.skipif(not CLEAR_REFS.exists(), reason="needs Linux /proc peak-RSS reset")
def test_peak_memory_does_not_grow_with_user_count(tmp_path):
    n_large = 60_000
    recommender = generated_recommender(n_large)
    bundle = recommender.save(tmp_path / "bundle" / "v1")
    users = sorted(recommender.histories)
    (tmp_path / "small.txt").write_text("\n".join(users[:10_000]))
    common = {"bundle": bundle, "k": 20, "chunk_size": 2_000, "progress": False}
    peak_growth_mb(BatchOptions(out=tmp_path / "warm", users=str(tmp_path / "small.txt"), **common), recommender)
    small = peak_growth_mb(BatchOptions(out=tmp_path / "small", users=str(tmp_path / "small.txt"), **common),
                           recommender)
    large = peak_growth_mb(BatchOptions(out=tmp_path / "large", **common), recommender)
    # 6× the users (1.2M output rows, ~120 MB as Python objects if they were held): the peak is one
    # chunk's working set either way; the id list itself is Arrow-backed (~20 bytes per user)
    assert large < small + 25, f"peak grew from {small:.1f} MB (10k users) to {large:.1f} MB ({n_large:,} users)"
