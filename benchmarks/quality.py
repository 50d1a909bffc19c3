"""Quality benchmark: popularity, zero-shot frozen BERT and PEFT-BERT variants on one dataset, full ranking over
every catalogue item (published protocol: history not masked); valid, test and the cold-start slice. With the
re-ranker, each variant also gets a "+ ranker" row: the towers' top candidates re-ordered by the LightGBM ranker
fitted on the valid step (test rows only: the valid step is the ranker's training data), and a "+ ranker
(statistics through valid)" row: the same ranker with its statistics refit on the events before the test step, as
a serving shop has them (`recsys refresh-stats`; not the published protocol).

Writes quality.json, quality.md (one table per split/slice) and quality.png (N@10 / R@10 bars, test split)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

from benchmarks.common import Column, environment, write_report

METRICS = [f"{m}@{k}" for k in (10, 20, 50) for m in ("recall", "ndcg", "mrr")]


def metric_column(metric: str) -> Column:
    """A metric's table column: R@10, N@10, MRR@10, …, four decimals."""
    return Column(metric, metric.replace("recall", "R").replace("ndcg", "N").replace("mrr", "MRR"), ".4f")


COLUMNS = ([Column("model")] + [metric_column(m) for m in METRICS[:2]] + [Column("ndcg@10_se", "± s.e.", ".4f")]
           + [metric_column(m) for m in METRICS[2:]]
           + [Column("n_examples", "n", ",.0f"), Column("train_minutes", "train min", ".1f"),
              Column("trainable_params", "trainable params", ",.0f"), Column("total_params", "total params", ",.0f"),
              Column("blend_weight", "zero-shot blend w", ".2f"), Column("ild@10", "ILD@10", ".3f"),
              Column("coverage@10", "cov@10", ".3f")])
REFERENCE = {"Scientific": "published on the same files (VQ-Rec, WWW 2023): N@10 0.0643, R@10 0.1211, "
                           "N@50 0.0897, R@50 0.2369"}


def bar_chart(rows: Sequence[dict], path: Path) -> None:
    """N@10 and R@10 per model on the test split (all users)."""
    import matplotlib.pyplot as plt
    import numpy as np

    test = [r for r in rows if r["split"] == "test" and r["slice"] == "all"]
    names = [r["model"] for r in test]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4))
    for offset, key, colour in ((-0.2, "ndcg@10", "tab:blue"), (0.2, "recall@10", "tab:green")):
        bars = ax.bar(x + offset, [r[key] for r in test], 0.4, label=key, color=colour)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test, full ranking")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@contextmanager
def diversification_off(recommender) -> Iterator[None]:
    """`recommender` with its shown lists in plain ranked order for the duration (the accuracy cost of the
    default diversification is the difference)."""
    from recsys.diversify import OFF

    config = recommender.config
    recommender.config = config.model_copy(update={"diversify": OFF})
    try:
        yield
    finally:
        recommender.config = config


class SimilarToLast:
    """'Similar items' of each history's last item as a next-item recommender (the product-page list)."""

    def __init__(self, recommender) -> None:
        self.recommender = recommender

    def recommend_histories(self, histories, k: int, exclude_seen: bool = False, as_of=None) -> list[list[str]]:
        return [self.recommender.similar_items(h[-1], k, set(h) if exclude_seen else ()).item_ids if h else []
                for h in histories]


def list_reference(dataset, models: dict, encoder, progress: bool):
    """Beyond-accuracy metrics measure every model's lists against the frozen BERT's text vectors (`encoder`:
    an EncoderConfig; the zero-shot baseline's vectors when it ran)."""
    from recsys.evaluation import ListReference

    if "zero-shot-bert" in models:
        vectors = models["zero-shot-bert"].item_vectors
    else:
        from encoders.text_encoder import TextEncoder

        vectors = TextEncoder.from_config(encoder).encode(dataset.items["text"].to_list(), progress=progress,
                                                          desc="reference text vectors")
    return ListReference(dataset.items["item_id"].to_list(), vectors, k=10)


def shown_list_rows(recommender, split, eval_config, reference, name: str) -> list[dict]:
    """Test rows (all users) of the towers without the default diversification, and of the product-page
    'similar items' of the last history item with and without it."""
    from recsys.diversify import active
    from recsys.evaluation import evaluate

    rows = []
    on = active(recommender.config.diversify)
    for label, off in ((f"{name} similar items of the last item", False), (f"{name} (no diversification)", True),
                       (f"{name} similar items of the last item (no diversification)", True)):
        if off and not on:
            continue
        source = SimilarToLast(recommender) if "similar" in label else recommender
        with diversification_off(recommender) if off else nullcontext():
            rows.append({"model": label, "split": "test", "slice": "all",
                         **evaluate(source, split.test, eval_config, reference)})
    return rows


def ranked_rows(recommender, split, ks: Sequence[int], seed: int = 0, progress: bool = True,
                reference=None) -> list[dict]:
    """Fit the LightGBM re-ranker on the valid step of `split` over `recommender`'s candidates (statistics from
    the train split), then full-ranking metrics of the re-ranked lists on the test step: all users and the
    cold-start slice, all users with the same ranker's statistics refit through the valid step (`stats_through`
    rows: what a serving shop knows, not the published protocol), and, when the bundle diversifies its lists, all
    users without it (`no_diversification` rows). The recommender keeps its new re-ranker (train-split
    statistics)."""
    from encoders.experiment import cold_start_examples
    from recsys.diversify import active
    from recsys.ranker import RankerConfig
    from recsys.ranker_training import evaluate_reranker, train_reranker
    from recsys.stats_refresh import refreshed

    config = RankerConfig(seed=seed)
    started = time.perf_counter()
    recommender.reranker, report = train_reranker(recommender, split, config,
                                                  log=print if progress else (lambda message: None))
    extra = {"ranker_trees": report["trees"], "ranker_seconds": round(time.perf_counter() - started, 1),
             "ranker_candidates": config.candidates}
    rows = []
    for slice_name, frame in (("all", split.test), ("cold-start", cold_start_examples(split, split.test))):
        if frame.height:
            evaluation = evaluate_reranker(recommender, frame, tuple(ks), reference=reference)
            rows.append({"split": "test", "slice": slice_name, **evaluation["reranked"], **extra,
                         "candidate_recall": evaluation[f"candidate_recall@{config.candidates}"]})
    trained = recommender.reranker
    recommender.reranker = refreshed(trained, split, "valid")
    try:
        evaluation = evaluate_reranker(recommender, split.test, tuple(ks), reference=reference)
    finally:
        recommender.reranker = trained
    rows.append({"split": "test", "slice": "all", **evaluation["reranked"], **extra, "stats_through": "valid",
                 "candidate_recall": evaluation[f"candidate_recall@{config.candidates}"]})
    if active(recommender.config.diversify):
        with diversification_off(recommender):
            evaluation = evaluate_reranker(recommender, split.test, tuple(ks), reference=reference)
        rows.append({"split": "test", "slice": "all", **evaluation["reranked"], **extra, "no_diversification": True,
                     "candidate_recall": evaluation[f"candidate_recall@{config.candidates}"]})
    return rows


def ranked_suffix(row: dict) -> str:
    """How a `ranked_rows` row differs from the served engine: "" for the served list itself."""
    if row.get("no_diversification"):
        return " (no diversification)"
    return " (statistics through valid)" if row.get("stats_through") else ""


def ensemble_note(variant: str, report: dict) -> str:
    """One report note on a seed-ensemble variant: its seeds and the first k members' valid and test metrics."""
    seeds = ", ".join(str(m["seed"]) for m in report["members"])
    steps = "; ".join(f"{r['members']}: valid N@10 {r['valid_ndcg@10']:.4f} R@10 {r['valid_recall@10']:.4f}, test "
                      f"N@10 {r['test_ndcg@10']:.4f} R@10 {r['test_recall@10']:.4f}" for r in report["first_k"])
    return (f"`peft-bert:{variant}` is a seed ensemble of {len(report['members'])} towers (seeds {seeds}); the first "
            f"k members together, before the zero-shot blend, k = {steps}")


def run(data: str | Path, out_dir: str | Path, variants: Sequence[str] = ("cpu",), overrides: dict | None = None,
        baselines: bool = True, bundles: str | Path | None = None, command: str | None = None,
        progress: bool = True, name: str = "quality", ranker: bool = True, cold_items: float = 0.0) -> dict[str, Path]:
    """Train + evaluate each preset in `variants` (with `overrides` merged in) next to the baselines; with
    `ranker`, also each variant's towers + the LightGBM re-ranker (`ranked_rows`). `cold_items`: the share of the
    items held out of the train split (`recsys.splits.hold_out_items`, seed 0), a simulated flow of new items."""
    from encoders.experiment import evaluate_slices, train_and_evaluate
    from encoders.presets import preset
    from encoders.stopping import time_budget_message
    from jobs.workflows import baseline_models, load_dataset
    from recsys.config import BuildConfig, EvalConfig
    from recsys.splits import hold_out_items, split_dataset

    out_dir = Path(out_dir)
    dataset = load_dataset(data)
    split, held_out = hold_out_items(split_dataset(dataset), cold_items)
    eval_config = EvalConfig()
    rows: list[dict] = []
    models: dict = {}
    ensembles: dict[str, dict] = {}
    cut_short: list[str] = []  # report notes on variants the time budget stopped
    if baselines:
        started = time.perf_counter()
        models = baseline_models(dataset, split, BuildConfig(), progress)
        seconds = time.perf_counter() - started
    configs = {variant: preset(variant, **(overrides or {})) for variant in variants}
    encoder = next(iter(configs.values())).encoder if configs else BuildConfig().encoder
    reference = list_reference(dataset, models, encoder, progress)
    if baselines:
        for row in evaluate_slices(models, split, eval_config, reference=reference):
            rows.append({**row, "train_minutes": 0.0 if row["model"] == "popularity" else seconds / 60,
                         "trainable_params": 0})
    for variant, config in configs.items():
        trained = train_and_evaluate(dataset, split, config, name=f"{dataset.name}-{variant}", out_root=bundles,
                                     run_dir=out_dir / "runs" / variant, eval_config=eval_config, progress=progress,
                                     reference=reference)
        result = trained.result
        if trained.ensemble:
            ensembles[variant] = trained.ensemble
        if result.stopped == "time budget":
            cut_short.append(f"`peft-bert:{variant}`: "
                             + time_budget_message(config.max_minutes, len(result.history), config.epochs))
        common = {"trainable_params": result.parameters["trainable"], "total_params": result.parameters["total"],
                  "best_epoch": result.best_epoch, "stopped": result.stopped, "device": result.device,
                  "bundle": str(trained.path) if trained.path else None,
                  "blend_weight": trained.blend["weight"] if trained.blend else None,
                  "blend_valid_ndcg": trained.blend["valid_ndcg"] if trained.blend else None}
        towers = [{**row, "model": f"peft-bert:{variant}"} for row in trained.rows]
        for row in towers + shown_list_rows(trained.recommender, split, eval_config, reference, f"peft-bert:{variant}"):
            rows.append({**row, **common, "train_minutes": result.seconds / 60})
        if ranker:
            for row in ranked_rows(trained.recommender, split, eval_config.ks, config.seed, progress, reference):
                rows.append({**row, **common, "model": f"peft-bert:{variant} + ranker{ranked_suffix(row)}",
                             "train_minutes": (result.seconds + row["ranker_seconds"]) / 60})
    for row in rows:
        row["table"] = f"{row['split']} · {row['slice']} ({int(row['n_examples']):,} users)"
    notes = [f"dataset {dataset.name}: {dataset.items.height:,} items, full ranking over all of them, history not "
             "masked (the published protocol); metrics from recsys.evaluation.evaluate",
             "cold-start slice: users whose target item never occurs in the training interactions",
             "± s.e.: the standard error of N@10 over the table's users (a slice of a few dozen users moves by "
             "several hundredths between samples of them; compare models on the same users against it)",
             *([f"simulated new items (`--cold-items {cold_items:g}`): {len(held_out):,} of the train split's items "
                "(seeded) lost their train events, so nothing learns from them and every user whose target is one "
                "of them is in the cold-start slice; histories keep them"] if held_out else []),
             "ILD@10: mean pairwise cosine distance of each top-10 list (frozen-BERT text vectors, the same for "
             "every model); cov@10: share of the catalogue in at least one top-10 list; every list is shown as the "
             "bundle serves it (BuildConfig.diversify); `(no diversification)` rows: the same model in ranked order; "
             "`similar items of the last item`: the product-page list of the last history item as the prediction"]
    depths = {row["ranker_candidates"] for row in rows if "ranker_candidates" in row}
    if depths:
        notes.append(f"`+ ranker`: the towers' top {max(depths)} re-ordered by the LightGBM re-ranker fitted on the "
                     "valid step (statistics from the train split; test rows only); `train min` includes fitting it; "
                     "`(statistics through valid)`: the same ranker with its statistics refit on the train split + "
                     "every user's valid-step event (`recsys refresh-stats`), what a serving shop knows — not the "
                     "published protocol")
    notes += [ensemble_note(variant, report) for variant, report in ensembles.items()]
    notes += cut_short
    if dataset.name in REFERENCE:
        notes.append(REFERENCE[dataset.name])
    if command:
        notes.append(f"command: `{command}`")
    meta = {"environment": environment(), "dataset": dataset.summary(), "protocol": eval_config.model_dump(mode="json"),
            "configs": {v: c.model_dump(mode="json") for v, c in configs.items()}, "command": command,
            "ensembles": ensembles, "cold_items": {"share": cold_items, "held_out": held_out}}
    return write_report(out_dir, name, rows, COLUMNS, title=f"Quality: {dataset.name}", meta=meta, group_by="table",
                        notes=notes, chart=bar_chart)
