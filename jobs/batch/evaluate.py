"""Score a batch output with the evaluator's metrics (`recsys evaluate --from-batch DIR`).

Valid only for a job run in evaluation mode (`batch-score --data D --split test`): each user was
scored from the example's history, with k ≥ max(K) and exclude_seen equal to the protocol's
history masking. Ranks come from `recsys.metrics.target_ranks` and metrics from `summarize`, exactly
as `recsys.evaluation.evaluate` computes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from jobs.batch.layout import BatchError, read_batch_manifest, read_shards
from recsys.artifacts import MANIFEST as BUNDLE_MANIFEST
from recsys.artifacts import read_manifest, sha256_file
from recsys.config import EvalConfig
from recsys.data.dataset import Dataset
from recsys.metrics import summarize, target_ranks
from recsys.splits import SplitData


def batch_split(manifest: dict, out: Path, splits: Sequence[str]) -> str:
    """The split the batch was scored for (its manifest's `split`); BatchError when it was scored from the stored
    histories (no split) or when `splits` (--splits) does not name it."""
    split = manifest.get("split")
    if split is None:
        raise BatchError(f"{out} was scored from the bundle's stored histories, which contain the held-out items; "
                         "score the test users with `recsys batch-score --data D --split test --keep-seen --k 50`")
    if split not in splits:
        wanted = " or ".join(splits)
        raise BatchError(f"{out} was scored for the {split} split, not {wanted} (--splits {','.join(splits)}): "
                         f"pass --splits {split}, or score the {splits[0]} split into another directory with "
                         f"`recsys batch-score --data D --split {splits[0]} --keep-seen --k 50`")
    return split


def batch_notes(manifest: dict, out: Path, splits: Sequence[str]) -> list[str]:
    """The notes a reader of the batch's row must know: the --splits it does not cover (it holds one split), and
    that a valid row is in-sample when the bundle's re-ranker was fit on this dataset's valid step (as `evaluate
    --bundle` notes), or that the manifest cannot tell."""
    split = batch_split(manifest, out, splits)
    others = [name for name in splits if name != split]
    notes = [f"{out} was scored for the {split} split only: its row is the {split} split's, with none for "
             f"{' or '.join(others)} (--splits {','.join(splits)})"] if others else []
    fit_here = ranker_fit_on_batch_dataset(manifest) if split == "valid" else False
    if fit_here:
        notes.append(f"the re-ranker of the bundle that scored {out} was fit on this dataset's valid step, so the "
                     "batch's valid rows are in-sample (optimistic); a batch scored for the test split is held "
                     "out. `recsys bench ranker-folds` gives a cross-fitted valid figure.")
    elif fit_here is None:
        notes.append(f"{out} was scored by a bundle with a re-ranker, and neither the batch's manifest (written "
                     "before batch-score recorded the bundle's dataset) nor the bundle (no longer at "
                     f"{manifest.get('bundle')}) says which dataset it was fit on: if it was fit on this dataset's "
                     "valid step, the batch's valid rows are in-sample (optimistic)")
    return notes


def ranker_fit_on_batch_dataset(manifest: dict) -> bool | None:
    """Whether the batch's bundle has a re-ranker fit on the batch's dataset (the bundle names no other dataset,
    as `evaluate --bundle` decides); None when it has one and that cannot be known: a manifest written before
    `bundle_dataset_fingerprint` was recorded, whose bundle is gone or was replaced."""
    if not manifest.get("has_ranker"):
        return False
    if "bundle_dataset_fingerprint" in manifest:
        fingerprint = manifest["bundle_dataset_fingerprint"]
    else:
        bundle = Path(manifest.get("bundle") or "")
        if not (bundle / BUNDLE_MANIFEST).is_file() or sha256_file(bundle / BUNDLE_MANIFEST) != \
                manifest.get("bundle_digest"):
            return None
        from jobs.workflows import bundle_fingerprint
        fingerprint = bundle_fingerprint(read_manifest(bundle, verify=False))
    return not fingerprint or fingerprint == manifest.get("dataset_fingerprint")


def check_protocol(manifest: dict, out: Path, dataset: Dataset, config: EvalConfig) -> str:
    """The split the batch was scored for, after checking it can be evaluated under `config`."""
    split = batch_split(manifest, out, config.splits)
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
    """One metrics row (model `batch:<dir>`) for the split the batch output was scored for (BatchError when
    `config.splits` does not name it)."""
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
