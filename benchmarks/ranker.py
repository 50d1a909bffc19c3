"""Re-ranker benchmark: the same bundle retrieval-only vs re-ranked on the test step (full ranking: items
outside the candidate list are misses), candidate recall@N, training time, feature importance.
Writes ranker.json, ranker.md and ranker.png (metrics + feature importance) via benchmarks/common.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import Column, environment, write_report

METRICS = ("recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20", "mrr@20", "recall@50", "ndcg@50", "mrr@50")


def _chart(importance: Mapping[str, float]):
    def draw(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.1, 1]})
        width = 0.38
        xs = range(len(METRICS))
        for offset, row in zip((-width / 2, width / 2), rows):
            left.bar([x + offset for x in xs], [row[m] for m in METRICS], width, label=row["model"])
        left.set_xticks(list(xs), METRICS, rotation=45, ha="right")
        left.set_title("test step: retrieval-only vs re-ranked")
        left.legend()
        names = list(importance)[::-1]
        total = sum(importance.values()) or 1.0
        right.barh(names, [100 * importance[n] / total for n in names])
        right.set_xlabel("share of total gain (%)")
        right.set_title("LightGBM feature importance (gain)")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return draw


def run(bundle: Path, data: Path, out: Path, candidates: int = 200, n_jobs: int = 1, seed: int = 0,
        command: str = "", save_bundle: Path | None = None, log=print) -> dict[str, Path]:
    """Train the re-ranker on the bundle's valid step, evaluate both stages on test, write the report."""
    from jobs.ranker_cmd import evaluation_rows, train_on_bundle
    from recsys.ranker import RankerConfig

    config = RankerConfig(candidates=candidates, n_jobs=n_jobs, seed=seed)
    recommender, report, evaluation, path, manifest = train_on_bundle(bundle, data, config, log=log)
    if save_bundle is not None:
        recommender.save(save_bundle, {"name": manifest.get("name"), "dataset": manifest.get("dataset"),
                                       "ranker": {"training": report, "test": evaluation_rows(evaluation)}})
    rows = evaluation_rows(evaluation)
    recall_key = f"candidate_recall@{candidates}"
    base, ranked = rows[0]["ndcg@10"], rows[1]["ndcg@10"]
    seconds = report["seconds"]
    notes = [
        f"command: `{command}`" if command else "command: (library call)",
        f"bundle: `{path}` ({(manifest.get('encoder') or {}).get('kind', 'encoder')}); dataset `{data}`; "
        f"{int(rows[0]['n_examples']):,} test examples, full ranking over the catalogue",
        f"candidate stage recall@{candidates}: **{evaluation[recall_key]:.4f}** (the re-ranker's ceiling)",
        f"NDCG@10 {base:.4f} → {ranked:.4f} (**{100 * (ranked / base - 1) if base else float('nan'):+.1f}%**)",
        f"ranker training (valid step, {report['training_queries']:,} queries with the target among the candidates, "
        f"{report['rows']:,} rows, {report['trees']} trees): features {seconds['features']:.1f}s + "
        f"fit {seconds['fit']:.1f}s = **{seconds['features'] + seconds['fit']:.1f}s**; with candidate retrieval and "
        f"statistics {seconds['total']:.1f}s (LightGBM threads: {n_jobs})",
        "top features by gain: " + ", ".join(list(report["importance_gain"])[:6]),
    ]
    meta = {"environment": environment(("numpy", "polars", "lightgbm", "faiss-cpu", "torch")),
            "bundle": str(path), "data": str(data), "command": command, "config": config.model_dump(mode="json"),
            recall_key: evaluation[recall_key], "training": report}
    columns = [Column("model"), Column("split"), Column("n_examples", "n", ",.0f"),
               *(Column(m, m, ".4f") for m in METRICS)]
    return write_report(out, "ranker", rows, columns, title="LightGBM re-ranker: retrieval-only vs re-ranked",
                        meta=meta, notes=notes, chart=_chart(report["importance_gain"]))
