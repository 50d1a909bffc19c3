"""Diversification benchmark: what near-duplicate collapsing and MMR cost in accuracy and give in intra-list
diversity, for one bundle, on validation (to choose the default) and test. Writes diversify.json, .md and .png.

    recsys bench diversify --bundle artifacts/scientific-cpu --data ../shared/data/amazon-scientific

Validation is every user's valid step. With a re-ranker it is cross-fitted: the users are split into 5 folds and
each fold's lists are re-ranked by a ranker fitted (with the bundle's own RankerConfig) on the other folds' users
only, so no list comes from a model that saw its user's valid target. Every list is the one the bundle shows
(`Recommender.recommend_batch`, re-ranked when it has a re-ranker), with the diversification setting under test
(test: the bundle's own re-ranker, all users). ILD@10 and coverage are measured on the frozen
BERT's text vectors (the same reference for every setting, not the vectors MMR reads)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.common import Column, environment, write_report

COLUMNS = [Column("setting"), Column("split"), Column("n_examples", "n", ",.0f"), Column("ndcg@10", "N@10", ".4f"),
           Column("recall@10", "R@10", ".4f"), Column("ndcg_change", "N@10 vs off", "+.1%"),
           Column("ild@10", "ILD@10", ".3f"), Column("coverage@10", "cov@10", ".3f")]


def settings_grid(weights: Sequence[float], thresholds: Sequence[float | None], depth: int) -> list:
    """Every (weight, threshold) DiversifyConfig, the 'off' one first."""
    from recsys.config import DiversifyConfig
    from recsys.diversify import OFF

    grid = [DiversifyConfig(weight=w, duplicate_threshold=t, depth=depth) for t in thresholds for w in weights]
    off = OFF.model_copy(update={"depth": depth})
    return [off] + [c for c in grid if c != off]


def label(config) -> str:
    from recsys.diversify import active

    if not active(config):
        return "off (ranked order)"
    return f"MMR w={config.weight:g}, near-dup ≥ {config.duplicate_threshold}" if config.duplicate_threshold \
        else f"MMR w={config.weight:g}, no near-dup"


VALID_CROSS_FITTED = "valid (cross-fitted, all users)"
VALID_ALL = "valid (all users)"
TEST = "test"
SIMILAR = "test: similar items of the last item"


def cross_fitted_lists(recommender, split, settings: Sequence, k: int = 10, outer: int = 5, seed: int = 0,
                       log=print) -> tuple[pl.DataFrame, list[list[list[str]]]]:
    """(the valid examples, per setting the list shown to each): every valid user's list re-ranked by a ranker
    fitted with the bundle's RankerConfig on the other `outer` − 1 folds' users only, then diversified by the
    setting. The recommender's re-ranker and config are restored afterwards."""
    from recsys.ranker import Reranker
    from recsys.ranker_training import fit_frame, prepare_training, shown_lists, user_folds

    saved_reranker, saved_config = recommender.reranker, recommender.config
    config = saved_reranker.config
    training = prepare_training(recommender, split, config, log)
    users = sorted(set(training.users))
    fold_of = user_folds(users, outer, (seed, 13))
    examples = split.valid.filter(pl.col("user_id").is_in(users))
    example_fold = np.array([fold_of[u] for u in examples["user_id"].to_list()])
    frame_fold = pl.Series([fold_of[u] for u in training.frame["user_id"].to_list()])
    lists: list[list[list[str]]] = [[[] for _ in range(examples.height)] for _ in settings]
    try:
        for fold in range(outer):
            ranker = fit_frame(training.frame.filter(frame_fold != fold), training.builder.names, config)
            recommender.reranker = Reranker(ranker, training.builder, config)
            rows = np.flatnonzero(example_fold == fold)
            part = examples[rows]
            for n, setting in enumerate(settings):
                recommender.config = saved_config.model_copy(update={"diversify": setting})
                for row, shown in zip(rows, shown_lists(recommender, part, k)):
                    lists[n][row] = shown
            log(f"cross-fitted fold {fold + 1}/{outer}: {len(rows):,} valid users, {ranker.n_trees} trees")
    finally:
        recommender.reranker, recommender.config = saved_reranker, saved_config
    return examples, lists


def chosen_weight(rows: Sequence[dict], split_name: str, budget: float) -> float | None:
    """The largest MMR weight (no near-duplicate threshold) whose N@10 on `split_name` is within `budget` (a
    fraction) of the plain order; None when no MMR row is."""
    inside = [r["config"]["weight"] for r in rows if r["split"] == split_name and r["config"]["weight"] > 0
              and r["config"]["duplicate_threshold"] is None and r["ndcg_change"] >= -budget]
    return max(inside) if inside else None


def run(bundle: str | Path, data: str | Path, out: str | Path, weights: Sequence[float] = (0.0, 0.1, 0.2, 0.3),
        thresholds: Sequence[float | None] = (None, 0.95, 0.9), depth: int = 50, command: str = "",
        budget: float = 0.01, log=print) -> dict[str, Path]:
    """Valid (cross-fitted with a re-ranker) and test N@10 / R@10 / ILD@10 / coverage@10 of each diversification
    setting; the note names the largest MMR weight within `budget` of the plain order on validation."""
    from benchmarks.quality import SimilarToLast, list_reference
    from encoders.loading import load_recommender
    from jobs.workflows import built_on_other_dataset, load_dataset
    from recsys.artifacts import read_manifest, resolve_bundle
    from recsys.config import EvalConfig
    from recsys.errors import DataError
    from recsys.evaluation import evaluate, list_scores
    from recsys.ranker_training import reranked_metrics
    from recsys.splits import split_dataset

    path = resolve_bundle(bundle)
    dataset = load_dataset(data)
    if built_on_other_dataset(read_manifest(path), dataset):  # (was an IndexError deep in the re-ranker's fit)
        raise DataError(f"the bundle {path} was built on another dataset (fingerprint differs)", source=str(data))
    recommender = load_recommender(path)
    ranked = recommender.reranker is not None
    if ranked:  # before the catalogue is encoded for the diversity reference (minutes on a large one)
        recommender.reranker.stats.config.check_unseen("test")
    split = split_dataset(dataset)
    reference = list_reference(dataset, {}, recommender.config.encoder, progress=True)
    settings = settings_grid(weights, thresholds, depth)
    valid_name = VALID_CROSS_FITTED if ranked else VALID_ALL
    valid_metrics = []
    if ranked:
        examples, lists = cross_fitted_lists(recommender, split, settings, log=log)
        valid_metrics = [list_scores(shown, examples["target"].to_list(), (10,), reference) for shown in lists]
    saved = recommender.config
    rows: list[dict] = []
    base: dict[str, float] = {}
    try:
        for n, config in enumerate(settings):
            recommender.config = saved.model_copy(update={"diversify": config})
            for split_name in (valid_name, TEST, SIMILAR):
                if split_name == SIMILAR:
                    metrics = evaluate(SimilarToLast(recommender), split.test, EvalConfig(ks=(10,), splits=("test",)),
                                       reference)
                elif split_name == VALID_CROSS_FITTED:
                    metrics = valid_metrics[n]
                else:
                    metrics = reranked_metrics(recommender, split.valid if split_name == VALID_ALL else split.test,
                                               (10,), reference=reference)
                base.setdefault(split_name, metrics["ndcg@10"])
                rows.append({"setting": label(config), "split": split_name, **metrics,
                             "ndcg_change": metrics["ndcg@10"] / base[split_name] - 1 if base[split_name] else 0.0,
                             "config": config.model_dump(mode="json")})
                log(f"{rows[-1]['setting']:36s} {split_name:24s} N@10 {metrics['ndcg@10']:.4f} "
                    f"R@10 {metrics['recall@10']:.4f} ILD@10 {metrics['ild@10']:.3f}")
    finally:
        recommender.config = saved
    for row in rows:
        row["table"] = row["split"]
    chosen = chosen_weight(rows, valid_name, budget)
    manifest = read_manifest(path, verify=False)
    notes = [f"command: `{command}`" if command else "command: (library call)",
             f"bundle `{path}` ({manifest.get('name', path.parent.name)}; re-ranker: "
             f"{'yes' if ranked else 'no'}), dataset `{data}`, full ranking, history not masked",
             f"MMR picks k=10 from the top {depth} ranked items; near-dup: an item whose cosine (the "
             "bundle's item vectors) to one already picked reaches the threshold goes behind the rest",
             "similar items of the last item: the product-page list of each test user's last history item, scored "
             "as a next-item prediction (what the issue's 'eight pack-size variants' list is)",
             "valid: " + ("every valid user, cross-fitted: 5 folds of the users, each fold's lists re-ranked by a "
                          "ranker fitted with the bundle's re-ranker settings on the other folds' users only"
                          if ranked else "all users' valid step") + "; test: the bundle's own re-ranker",
             "ILD@10: mean pairwise cosine distance within each top-10 list, on the frozen BERT's text vectors; "
             "cov@10: share of the catalogue in at least one top-10 list",
             f"largest MMR weight within {budget:.0%} of the plain order's valid N@10: "
             + (f"{chosen:g}" if chosen is not None else "none of those tried")]
    meta = {"environment": environment(("numpy", "polars", "lightgbm", "faiss-cpu")), "bundle": str(path),
            "data": str(data), "command": command, "current_config": saved.diversify.model_dump(mode="json"),
            "budget": budget, "chosen_weight": chosen}
    return write_report(out, "diversify", rows, COLUMNS, title="Diversification: accuracy cost and diversity",
                        meta=meta, notes=notes, group_by="table", chart=_chart)


def _chart(rows, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for split_name, marker in ((VALID_CROSS_FITTED, "o"), (VALID_ALL, "o"), (TEST, "s"), (SIMILAR, "^")):
        chosen = [r for r in rows if r["split"] == split_name]
        if not chosen:
            continue
        ax.scatter([r["ild@10"] for r in chosen], [r["ndcg@10"] for r in chosen], marker=marker, label=split_name)
        for r in chosen:
            ax.annotate(r["setting"].replace("MMR ", "").replace("near-dup", "nd"), (r["ild@10"], r["ndcg@10"]),
                        fontsize=6)
    ax.set_xlabel("ILD@10 (frozen-BERT text vectors)")
    ax.set_ylabel("NDCG@10")
    ax.set_title("Diversification: accuracy vs intra-list diversity")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
