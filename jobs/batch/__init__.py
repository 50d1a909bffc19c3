"""Offline batch scoring: every selected user's top-k, written as Parquet shards.

The engine-independent core (user selection, chunking, the output layout, scoring one chunk through
`Recommender.recommend_batch`, the manifest) lives here; engines only decide where chunks run:
`local_engine` (this process) or `ray_engine` (a Ray Data actor pool, imported only on demand).
`encode` runs catalogue encoding (`recsys encode`) on the same layout and engines.

    manifest = run_job(BatchOptions(bundle="artifacts/shop", out=Path("out/recs"), k=100))
"""

from jobs.batch.job import BatchOptions, run_job
from jobs.batch.layout import BatchError, read_batch_manifest, read_shards

__all__ = ["BatchOptions", "BatchError", "run_job", "read_batch_manifest", "read_shards"]
