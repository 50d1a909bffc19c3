"""Train → evaluate (valid, test, cold-start slice) → bundle: the job body behind `recsys train` and the
quality benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from encoders.backbone import DEFAULT_MODEL_NAME
from encoders.distributed import WorkerGroup
from encoders.training import TrainResult, train_towers
from recsys.artifacts import new_version
from recsys.config import BuildConfig, EvalConfig, TrainConfig
from recsys.data.dataset import Dataset
from recsys.evaluation import ListReference, evaluate
from recsys.pipeline import Recommender
from recsys.retrieval.choice import index_summary
from recsys.splits import SplitData


def cold_start_examples(split: SplitData, examples: pl.DataFrame) -> pl.DataFrame:
    """Examples whose target item never occurs in the training interactions."""
    seen = split.train["item_id"].unique()
    return examples.filter(~pl.col("target").is_in(seen.implode()))


def evaluate_slices(models: dict[str, object], split: SplitData, config: EvalConfig,
                    progress: bool = False, reference: ListReference | None = None) -> list[dict]:
    """One row per (model, split, slice) with slice ∈ {all, cold-start}; with `reference`, also the lists'
    intra-list diversity and catalogue coverage."""
    rows = []
    for split_name in config.splits:
        examples = split.examples(split_name)
        for slice_name, frame in (("all", examples), ("cold-start", cold_start_examples(split, examples))):
            if frame.height == 0:
                continue
            for name, model in models.items():
                metrics = evaluate(model, frame, config, reference, progress=progress,
                                   desc=f"{name}/{split_name}/{slice_name}")
                rows.append({"model": name, "split": split_name, "slice": slice_name, **metrics})
    return rows


@dataclass
class TrainedBundle:
    """A trained model, its Recommender, its metrics and where it was written."""

    result: TrainResult
    recommender: Recommender
    rows: list[dict]
    path: Path | None
    blend: dict | None = None  # the zero-shot blend weight chosen on validation, with each weight's NDCG@10
    index: dict | None = None  # the index built (kind, recall against exact search: `choice.index_summary`)


def train_and_evaluate(dataset: Dataset, split: SplitData, config: TrainConfig, *, name: str = "peft-bert",
                       out_root: str | Path | None = None, run_dir: str | Path | None = None, resume: bool = False,
                       init_bundle: str | Path | None = None, eval_config: EvalConfig | None = None,
                       progress: bool = True, reference: ListReference | None = None, version: str | None = None,
                       device=None, workers: WorkerGroup | None = None) -> TrainedBundle:
    """Train the towers, evaluate them with the full-ranking evaluator and, with `out_root`, write the bundle
    `out_root/name/<version>` (manifest metrics: valid + test, all users and the cold-start slice).

    Data-parallel: rank 0 of `workers` calls this while the others call `train_towers` with the same
    arguments (see jobs/ray_train.py)."""
    eval_config = eval_config or EvalConfig()
    version = version or new_version()
    if run_dir is None and out_root is not None:
        run_dir = Path(out_root) / name / "runs" / "latest"
    run_dir = Path(run_dir) if run_dir is not None else None
    result = train_towers(dataset, split, config, run_dir, resume, Path(init_bundle) if init_bundle else None,
                          progress, device, workers)
    model_name = DEFAULT_MODEL_NAME if config.encoder.model == "default" else config.encoder.model
    info = {**result.encoder_info(model_name), "text_template": dataset.text_template}
    tower = result.user_tower
    tower.extra = {"train_seconds": round(result.seconds, 1), "best_epoch": result.best_epoch,
                   "device": result.device}
    if run_dir is not None:
        tower.report_files = [run_dir / "metrics.csv", run_dir / "training_curve.png"]
    build_config = BuildConfig(encoder=config.encoder, index=config.index, eval=eval_config, seed=config.seed)
    recommender = Recommender.build(dataset, split, result.item_vectors, build_config, info, tower)
    blend = None
    if config.zero_shot_blend:
        recommender, blend = _blend_zero_shot(dataset, split, recommender, build_config, config.zero_shot_blend,
                                              config.zero_shot_dims, eval_config, progress)
    index = index_summary(recommender, config.index.kind, config.seed)
    rows = evaluate_slices({name: recommender}, split, eval_config, progress, reference)
    path = None
    if out_root is not None:
        manifest = {"name": name, "dataset": {**dataset.summary(), "fingerprint": dataset.fingerprint()},
                    "metrics": rows, "index": index, "train": {"config": config.model_dump(mode="json"), "history": result.history,
                                               "best_epoch": result.best_epoch, "seconds": round(result.seconds, 1),
                                               "zero_shot_blend": blend,
                                               "parameters": result.parameters, "device": result.device,
                                               "workers": workers.world_size if workers else 1,
                                               "run_dir": str(run_dir) if run_dir else None}}
        path = recommender.save(Path(out_root) / name / version, manifest)
    return TrainedBundle(result, recommender, rows, path, blend, index)


def _blend_zero_shot(dataset: Dataset, split: SplitData, recommender: Recommender, build_config: BuildConfig,
                     weights: tuple[float, ...], dims: int | None, eval_config: EvalConfig,
                     progress: bool) -> tuple[Recommender, dict]:
    """The trained recommender blended with the frozen BERT's zero-shot score (`encoders.blend`; its vectors
    projected to `dims`) at the weight among `weights` with the best validation NDCG@10; the plain one when
    that weight is 0."""
    from encoders.blend import (BLEND_KEY, BlendedHistoryEncoder, blend_info, fit_blend_weight, principal_projection,
                                project)
    from encoders.text_encoder import load_text_encoder
    from recsys.config import UserTowerConfig
    from recsys.user_tower import PooledHistoryEncoder

    encoder = load_text_encoder(build_config.encoder)
    zero_shot = encoder.encode(dataset.items["text"].to_list(), progress=progress, desc="zero-shot item vectors")
    projection = principal_projection(zero_shot, dims) if dims is not None and dims < zero_shot.shape[1] else None
    if projection is not None:
        zero_shot = project(zero_shot, projection)
    trained, trained_dim = recommender.user_tower, recommender.user_tower.dim

    def blended_tower(catalogue):  # both parts read the blended catalogue: the trained block, then the zero-shot one
        return BlendedHistoryEncoder(trained.over(catalogue, slice(0, trained_dim)),
                                     PooledHistoryEncoder(catalogue, UserTowerConfig(), slice(trained_dim, None)),
                                     0.0, lambda: encoder, projection)

    blended = Recommender.build(dataset, split, np.hstack([recommender.item_vectors, zero_shot]), build_config,
                                recommender.encoder_info, blended_tower, like=recommender)
    tower = blended.user_tower
    blended.encoder_info = {**recommender.encoder_info, "dim": tower.dim}
    weight, scores = fit_blend_weight(blended, tower, split.examples("valid"), weights, eval_config)
    report = {"weight": weight, "dims": int(zero_shot.shape[1]),
              "valid_ndcg": {str(w): round(v, 5) for w, v in scores.items()}}
    if weight == 0:
        return recommender, report
    blended.encoder_info[BLEND_KEY] = blend_info(tower)
    return blended, report
