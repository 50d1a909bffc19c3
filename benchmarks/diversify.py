"""Diversification benchmark: what near-duplicate collapsing and MMR cost in accuracy and give in intra-list
diversity, for one bundle, on validation (to choose the default) and test. Writes diversify.json, .md and .png.

    recsys bench diversify --bundle artifacts/scientific-cpu --data ../shared/data/amazon-scientific

Validation is the valid step of the users the bundle's re-ranker held out (never trained on; all users for a
bundle without one); every list is the one the bundle shows (`Recommender.recommend_batch`, re-ranked when it
has a re-ranker), with the diversification setting under test. ILD@10 and coverage are measured on the frozen
BERT's text vectors (the same reference for every setting, not the vectors MMR reads)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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


def run(bundle: str | Path, data: str | Path, out: str | Path, weights: Sequence[float] = (0.0, 0.1, 0.2, 0.3),
        thresholds: Sequence[float | None] = (None, 0.95, 0.9), depth: int = 50, command: str = "",
        log=print) -> dict[str, Path]:
    from benchmarks.quality import SimilarToLast, list_reference
    from encoders.loading import load_recommender
    from jobs.workflows import load_dataset
    from recsys.artifacts import read_manifest, resolve_bundle
    from recsys.config import EvalConfig
    from recsys.evaluation import evaluate
    from recsys.ranker_training import held_out_valid, reranked_metrics
    from recsys.splits import split_dataset

    path = resolve_bundle(bundle)
    recommender = load_recommender(path)
    dataset = load_dataset(data)
    split = split_dataset(dataset)
    valid = held_out_valid(split, recommender.reranker.config) if recommender.reranker is not None else split.valid
    reference = list_reference(dataset, {}, recommender.config.encoder, progress=True)
    saved = recommender.config
    rows: list[dict] = []
    base: dict[str, float] = {}
    try:
        for config in settings_grid(weights, thresholds, depth):
            recommender.config = saved.model_copy(update={"diversify": config})
            for split_name, examples in (("valid (held-out users)", valid), ("test", split.test),
                                         ("test: similar items of the last item", split.test)):
                metrics = evaluate(SimilarToLast(recommender), examples, EvalConfig(ks=(10,), splits=("test",)),
                                   reference) if split_name.startswith("test: similar") else \
                    reranked_metrics(recommender, examples, (10,), reference=reference)
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
    manifest = read_manifest(path, verify=False)
    notes = [f"command: `{command}`" if command else "command: (library call)",
             f"bundle `{path}` ({manifest.get('name', path.parent.name)}; re-ranker: "
             f"{'yes' if recommender.reranker is not None else 'no'}), dataset `{data}`, full ranking, history not "
             "masked", f"MMR picks k=10 from the top {depth} ranked items; near-dup: an item whose cosine (the "
             "bundle's item vectors) to one already picked reaches the threshold goes behind the rest",
             "similar items of the last item: the product-page list of each test user's last history item, scored "
             "as a next-item prediction (what the issue's 'eight pack-size variants' list is)",
             "valid: " + ("the valid step of the users the re-ranker held out (early stopping only)"
                          if recommender.reranker is not None else "all users' valid step"),
             "ILD@10: mean pairwise cosine distance within each top-10 list, on the frozen BERT's text vectors; "
             "cov@10: share of the catalogue in at least one top-10 list"]
    meta = {"environment": environment(("numpy", "polars", "lightgbm", "faiss-cpu")), "bundle": str(path),
            "data": str(data), "command": command, "current_config": saved.diversify.model_dump(mode="json")}
    return write_report(out, "diversify", rows, COLUMNS, title="Diversification: accuracy cost and diversity",
                        meta=meta, notes=notes, group_by="table", chart=_chart)


def _chart(rows, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for split_name, marker in (("valid (held-out users)", "o"), ("test", "s"), ("test: similar items of the last item", "^")):
        chosen = [r for r in rows if r["split"] == split_name]
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
