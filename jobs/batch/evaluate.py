"""Score a batch output with the evaluator's metrics (`recsys evaluate --from-batch DIR`).

Valid only for a job run in evaluation mode (`batch-score --data D --split test`): each user was
scored from the example's history, with k ≥ max(K) and exclude_seen equal to the protocol's
history masking. Ranks come from `recsys.metrics.target_ranks` and metrics from `summarize`, exactly
as `recsys.evaluation.evaluate` computes them.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from jobs.batch.layout import BatchError, read_batch_manifest, read_shards
from recsys.config import EvalConfig
from recsys.data.dataset import Dataset
from recsys.metrics import summarize, target_ranks
from recsys.splits import SplitData


def check_protocol(manifest: dict, out: Path, dataset: Dataset, config: EvalConfig) -> str:
    """The split the batch was scored for, after checking it can be evaluated under `config`."""
    split = manifest.get("split")
    if split is None:
        raise BatchError(f"{out} was scored from the bundle's stored histories, which contain the held-out items; "
                         "score the test users with `recsys batch-score --data D --split test --keep-seen --k 50`")
    if manifest.get("dataset_fingerprint") != dataset.fingerprint():
        raise BatchError(f"{out} was scored on a different dataset than {dataset.name} (fingerprints differ)")
    if manifest["k"] < max(config.ks):
        raise BatchError(f"{out} holds top-{manifest['k']} lists; metrics @{max(config.ks)} need k ≥ {max(config.ks)}")
    if manifest["exclude_seen"] != config.mask_history:
        want = "--exclude-seen" if config.mask_history else "--keep-seen"
        raise BatchError(f"{out} was scored with exclude_seen={manifest['exclude_seen']} but the protocol has "
                         f"mask_history={config.mask_history}; rerun batch-score with {want}"
                         f"{'' if config.mask_history else ' (the published protocol does not mask history)'}")
    return split


def evaluate_batch(out: str | Path, dataset: Dataset, split: SplitData, config: EvalConfig) -> list[dict]:
    """One metrics row (model `batch:<dir>`) for the split the batch output was scored for."""
    out = Path(out)
    manifest = read_batch_manifest(out)
    split_name = check_protocol(manifest, out, dataset, config)
    examples = split.examples(split_name)
    depth = max(config.ks)
    lists = (read_shards(out, ["user_id", "rank", "item_id"]).filter(pl.col("rank") <= depth)
             .group_by("user_id", maintain_order=True).agg(pl.col("item_id")))
    recommended = dict(zip(lists["user_id"].to_list(), lists["item_id"].to_list()))
    users = examples["user_id"].to_list()
    missing = [u for u in users if u not in recommended]
    if missing:
        raise BatchError(f"{out} has no list for {len(missing):,} of the {len(users):,} {split_name} users "
                         f"(e.g. {missing[:3]}); score them all (--users all)")
    ranks = target_ranks([recommended[u] for u in users], examples["target"].to_list())
    return [{"model": f"batch:{out.name}", "split": split_name, "n_examples": float(len(ranks)),
             **summarize(ranks, tuple(config.ks))}]
