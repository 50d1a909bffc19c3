"""The Ray engine writes exactly the local engine's shards (needs the `distributed` extra; CI installs it)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from jobs.batch import BatchOptions, read_shards, run_job
from recsys.config import BuildConfig
from recsys.data.synthetic import generate_shop
from recsys.pipeline import Recommender
from recsys.splits import split_dataset

pytest.importorskip("ray", reason="the Ray engine needs the distributed extra: pip install '.[distributed]'")


def test_ray_engine_output_equals_local_engine(tmp_path, local_ray):
    dataset = generate_shop(n_users=150, n_items=120, seed=9)
    vectors = np.random.default_rng(1).standard_normal((dataset.items.height, 16)).astype(np.float32)
    bundle = Recommender.build(dataset, split_dataset(dataset), vectors, BuildConfig()).save(tmp_path / "b" / "v1")
    common = {"bundle": bundle, "k": 20, "chunk_size": 40, "progress": False}

    def interrupt(result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # a local run dies after its first shard …
        run_job(BatchOptions(out=tmp_path / "ray", **common), on_chunk=interrupt)
    manifest = run_job(BatchOptions(out=tmp_path / "ray", engine="ray", workers=2, **common))  # … Ray resumes it
    assert manifest["run"]["chunks_skipped"] == 1 and manifest["run"]["chunks_scored"] == 3
    run_job(BatchOptions(out=tmp_path / "local", **common))
    ray_frame = read_shards(tmp_path / "ray")
    local_frame = read_shards(tmp_path / "local")
    assert ray_frame.height == 150 * 20
    assert ray_frame.sort("user_id", "rank").equals(local_frame.sort("user_id", "rank"))
    for shard in manifest["shards"]:  # same shard layout, byte for byte
        assert (tmp_path / "ray" / shard["file"]).read_bytes() == (tmp_path / "local" / shard["file"]).read_bytes()
    assert pl.read_parquet(tmp_path / "ray" / "part-00003.parquet")["user_id"].n_unique() == 30
