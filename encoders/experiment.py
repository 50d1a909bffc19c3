"""Train → evaluate (valid, test, cold-start slice) → bundle: the job body behind `recsys train` and the
quality benchmark."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from encoders.backbone import DEFAULT_MODEL_NAME
from encoders.distributed import WorkerGroup
from encoders.ensemble import member_dir
from encoders.training import TrainResult, train_towers
from recsys.artifacts import new_version
from recsys.config import BuildConfig, EvalConfig, TrainConfig
from recsys.data.dataset import Dataset
from recsys.evaluation import ListReference, evaluate
from recsys.pipeline import Recommender
from recsys.retrieval.choice import index_summary, resolve_index
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
    ensemble: dict | None = None  # seed ensembles: each member's seed and fit, and the first k members' metrics


def member_runs(config: TrainConfig, run_dir: Path | None) -> list[tuple[TrainConfig, Path | None]]:
    """Each tower's config and run directory: the run's own, or one per seed-ensemble member (seed + k)."""
    if config.ensemble == 1:
        return [(config, run_dir)]
    return [(config.model_copy(update={"seed": config.seed + k, "ensemble": 1}),
             run_dir / member_dir(k) if run_dir is not None else None) for k in range(config.ensemble)]


def check_resume(config: TrainConfig, run_dir: Path) -> None:
    """RecsysError when a checkpoint in `run_dir` (each member's, for an ensemble) was trained with other settings
    than `config` (`encoders.checkpoint.check_resume_config`): said before BERT and the item texts load."""
    from encoders.checkpoint import check_resume_config

    for member_config, member_run in member_runs(config, run_dir):
        check_resume_config(member_run / "checkpoint", member_config)


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
    if config.ensemble > 1 and workers is not None and workers.world_size > 1:
        raise ValueError("a seed ensemble trains its members one after another in one process: use --engine local")
    members = []
    for member_config, member_run in member_runs(config, run_dir):
        result = train_towers(dataset, split, member_config, member_run, resume,
                              Path(init_bundle) if init_bundle else None, progress, device, workers)
        tower = result.user_tower
        tower.extra = {"train_seconds": round(result.seconds, 1), "best_epoch": result.best_epoch,
                       "device": result.device, "seed": member_config.seed}
        if member_run is not None:
            tower.report_files = [member_run / "metrics.csv", member_run / "training_curve.png"]
        members.append(result)
    model_name = DEFAULT_MODEL_NAME if config.encoder.model == "default" else config.encoder.model
    info = {**members[0].encoder_info(model_name), "text_template": dataset.text_template}
    result, tower = members[0], members[0].user_tower
    build_config = BuildConfig(encoder=config.encoder, index=config.index, eval=eval_config, seed=config.seed)
    ensemble = None
    # with the blend, the plain towers are a step on the way: on the exact index (a copy of the vectors, where an
    # approximate one is trained for tens of seconds at 50,000+ items); `_blend_zero_shot` builds the one asked for
    plain_config = exact_index(build_config) if config.zero_shot_blend else build_config
    if len(members) > 1:
        recommender, result, ensemble = _ensemble(members, config, info, dataset, split, plain_config, eval_config)
    else:
        _say_index(plain_config, dataset.items.height, progress)
        recommender = Recommender.build(dataset, split, result.item_vectors, plain_config, info, tower)
    blend = None
    if config.zero_shot_blend:
        recommender, blend = _blend_zero_shot(dataset, split, recommender, build_config, config.zero_shot_blend,
                                              config.zero_shot_dims, eval_config, progress)
    index = index_summary(recommender, config.index.kind, config.seed)
    rows = evaluate_slices({name: recommender}, split, eval_config, progress, reference)
    path = None
    if out_root is not None:
        manifest = {"name": name, "dataset": {**dataset.summary(), "fingerprint": dataset.fingerprint()},
                    "metrics": rows, "index": index,
                    "train": train_record(config, result, blend, ensemble, workers.world_size if workers else 1,
                                          run_dir)}
        path = recommender.save(Path(out_root) / name / version, manifest)
    return TrainedBundle(result, recommender, rows, path, blend, index, ensemble)


def train_record(config: TrainConfig, result: TrainResult, blend: dict | None = None, ensemble: dict | None = None,
                 workers: int = 1, run_dir: Path | None = None) -> dict:
    """What a bundle's manifest records of the run that trained its towers (`manifest["train"]`; `recsys refit`
    repeats the run from it)."""
    return {"config": config.model_dump(mode="json"), "history": result.history, "best_epoch": result.best_epoch,
            "stopped": result.stopped, "seconds": round(result.seconds, 1), "zero_shot_blend": blend,
            "ensemble": ensemble, "parameters": result.parameters, "device": result.device, "workers": workers,
            "run_dir": str(run_dir) if run_dir else None}


def _ensemble(members: list[TrainResult], config: TrainConfig, info: dict, dataset: Dataset, split: SplitData,
              build_config: BuildConfig, eval_config: EvalConfig) -> tuple[Recommender, TrainResult, dict]:
    """The members served as one (`encoders.ensemble`): its Recommender, the members as one `TrainResult` (item
    vectors side by side, summed time and parameters, member 0's curve) and the report: each member's seed, best
    epoch and validation NDCG@10, and the ensemble of the first k members on valid and test (full ranking,
    before any zero-shot blend) for every k, so what each member adds is on record. `info` gains the
    `ensemble` entry and the full width."""
    from encoders.ensemble import ENSEMBLE_KEY, EnsembleUserTower, ensemble_info

    towers = [m.user_tower for m in members]
    vectors = np.hstack([m.item_vectors for m in members]).astype(np.float32)
    info.update({"dim": int(vectors.shape[1]), "parameters": {key: sum(int(m.parameters.get(key, 0)) for m in members)
                                                               for key in members[0].parameters}})
    recommender = None
    k10, prefixes = min(eval_config.ks), []
    for k in range(1, len(members) + 1):
        width = sum(int(t.dim) for t in towers[:k])
        first = Recommender.build(dataset, split, vectors[:, :width], build_config, info,
                                  lambda c, k=k: EnsembleUserTower.over_blocks(towers[:k], c, 0, config),
                                  like=recommender)
        recommender = recommender or first  # popularity and histories built once
        row = {"members": k}
        for name in ("valid", "test"):
            metrics = evaluate(first, split.examples(name), eval_config)
            row.update({f"{name}_ndcg@{k10}": round(metrics[f"ndcg@{k10}"], 5),
                        f"{name}_recall@{k10}": round(metrics[f"recall@{k10}"], 5)})
        prefixes.append(row)
    info[ENSEMBLE_KEY] = ensemble_info(first.user_tower)  # `info` is `first.encoder_info`
    cut_short = any(m.stopped == "time budget" for m in members)
    merged = replace(members[0], config=config, item_vectors=vectors, user_tower=first.user_tower,
                     stopped="time budget" if cut_short else members[0].stopped,
                     seconds=sum(m.seconds for m in members), parameters=info["parameters"],
                     best_valid_ndcg=prefixes[-1][f"valid_ndcg@{k10}"])
    report = {"members": [{"seed": s, "best_epoch": m.best_epoch, "best_valid_ndcg": round(m.best_valid_ndcg, 5),
                           "stopped": m.stopped, "seconds": round(m.seconds, 1)}
                          for s, m in zip(info[ENSEMBLE_KEY]["seeds"], members)],
              "first_k": prefixes}
    return first, merged, report


def _blend_zero_shot(dataset: Dataset, split: SplitData, recommender: Recommender, build_config: BuildConfig,
                     weights: tuple[float, ...], dims: int | None, eval_config: EvalConfig,
                     progress: bool) -> tuple[Recommender, dict]:
    """The trained recommender blended with the frozen BERT's zero-shot score (`encoders.blend`; its vectors
    projected to `dims`) at the weight among `weights` with the best validation NDCG@10 (by exact search, as each
    epoch is validated); the plain one when that weight is 0. The one returned is on `build_config`'s index."""
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

    vectors = np.hstack([recommender.item_vectors, zero_shot])
    blended = Recommender.build(dataset, split, vectors, exact_index(build_config), recommender.encoder_info,
                                blended_tower, like=recommender)
    weight, scores = fit_blend_weight(blended, blended.user_tower, split.examples("valid"), weights, eval_config,
                                      progress)
    report = {"weight": weight, "dims": int(zero_shot.shape[1]),
              "valid_ndcg": {str(w): round(v, 5) for w, v in scores.items()}}
    if weight == 0:
        return _on_index(recommender, build_config, dataset, split, recommender.user_tower, progress), report
    blended = _on_index(blended, build_config, dataset, split, blended_tower, progress)
    tower = blended.user_tower
    tower.weight = weight
    blended.encoder_info = {**recommender.encoder_info, "dim": tower.dim, BLEND_KEY: blend_info(tower)}
    return blended, report


def exact_index(config: BuildConfig) -> BuildConfig:
    """`config` with the exact (flat) index."""
    return config.model_copy(update={"index": config.index.model_copy(update={"kind": "flat"})})


def _on_index(recommender: Recommender, config: BuildConfig, dataset: Dataset, split: SplitData, user_tower,
              progress: bool) -> Recommender:
    """`recommender` (built on the exact index) on `config`'s index: itself when that is exact too, else rebuilt
    with `user_tower` (a tower, or a factory bound to the new catalogue)."""
    if resolve_index(config.index, dataset.items.height).kind == "flat":
        return recommender
    _say_index(config, dataset.items.height, progress)
    return Recommender.build(dataset, split, recommender.item_vectors, config, recommender.encoder_info, user_tower,
                             like=recommender)


def _say_index(config: BuildConfig, n_items: int, progress: bool) -> None:
    """A line before an approximate index is trained (tens of seconds at 50,000+ items, with no bar of its own);
    nothing when `config`'s index is exact."""
    kind = resolve_index(config.index, n_items).kind
    if progress and kind != "flat":
        tqdm.write(f"training the {kind} index over {n_items:,} items …")
