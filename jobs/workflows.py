"""Job bodies shared by the CLI commands: load data, build a bundle, evaluate models."""

from __future__ import annotations

import time
from pathlib import Path

from recsys.artifacts import new_version
from recsys.config import BuildConfig, EvalConfig
from recsys.data.dataset import Dataset
from recsys.errors import DataError
from recsys.evaluation import evaluate
from recsys.pipeline import Recommender
from recsys.popularity import Popularity
from recsys.splits import SplitData, split_dataset


def load_dataset(path: str | Path) -> Dataset:
    """A dataset directory written by `recsys import`, or a raw RecBole / MovieLens directory."""
    from recsys.data.importers import import_recbole_movielens, import_recbole_sequential

    path = Path(path)
    if (path / "schema.json").is_file():
        return Dataset.load(path)
    if not path.is_dir():
        raise DataError("no such dataset directory", source=str(path))
    if any(path.glob("*.train.inter")) and any(path.glob("*.text")):
        return import_recbole_sequential(path)
    if (path / "ml-100k.inter").is_file():
        return import_recbole_movielens(path)
    raise DataError("not a dataset: expected schema.json (from `recsys import`), RecBole *.text + *.inter files, "
                    "or ml-100k.inter", source=str(path))


def build_recommender(dataset: Dataset, split: SplitData, config: BuildConfig,
                      progress: bool = True) -> tuple[Recommender, float]:
    """Encode the catalogue with the item tower and assemble the pipeline; returns (recommender, seconds)."""
    from encoders.backbone import DEFAULT_MODEL_NAME, resolve_model_path
    from encoders.text_encoder import TextEncoder

    started = time.perf_counter()
    encoder = TextEncoder.from_config(config.encoder)
    vectors = encoder.encode(dataset.items["text"].to_list(), progress=progress, desc="encoding items")
    info = {
        "kind": "frozen-bert",
        "model": config.encoder.model,
        "model_name": DEFAULT_MODEL_NAME if config.encoder.model == "default" else config.encoder.model,
        "resolved_path": resolve_model_path(config.encoder.model),
        "dim": encoder.dim,
        "pooling": config.encoder.pooling,
        "text_template": dataset.text_template,
    }
    recommender = Recommender.build(dataset, split, vectors, config, info)
    return recommender, time.perf_counter() - started


def evaluate_models(models: dict[str, object], split: SplitData, config: EvalConfig,
                    progress: bool = True) -> list[dict]:
    """One row per (model, split) with all metrics."""
    rows = []
    for split_name in config.splits:
        examples = split.examples(split_name)
        for name, model in models.items():
            metrics = evaluate(model, examples, config, progress=progress, desc=f"{name} / {split_name}")
            rows.append({"model": name, "split": split_name, **metrics})
    return rows


def build_bundle(dataset: Dataset, config: BuildConfig, out_root: str | Path, name: str,
                 progress: bool = True) -> tuple[Path, list[dict]]:
    """Encode, index, evaluate (popularity + this model) and write artifacts/<name>/<version>/."""
    split = split_dataset(dataset)
    recommender, seconds = build_recommender(dataset, split, config, progress)
    rows = evaluate_models({"popularity": recommender.popularity, "bundle": recommender}, split, config.eval,
                           progress)
    target = Path(out_root) / name / new_version()
    manifest = {
        "name": name,
        "dataset": {**dataset.summary(), "fingerprint": dataset.fingerprint()},
        "metrics": rows,
        "build_seconds": round(seconds, 2),
    }
    return recommender.save(target, manifest), rows


def baseline_models(dataset: Dataset, split: SplitData, config: BuildConfig,
                    progress: bool = True) -> dict[str, object]:
    """Popularity and zero-shot frozen BERT (recency-weighted history pool)."""
    recommender, _ = build_recommender(dataset, split, config, progress)
    popularity = Popularity.fit(split.train, dataset.items["item_id"].to_list())
    return {"popularity": popularity, "zero-shot-bert": recommender}
