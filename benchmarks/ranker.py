"""Re-ranker benchmark: the same bundle retrieval-only vs re-ranked on the test step (full ranking: items
outside the candidate list are misses), one fit per seed (valid on held-out users, test, the spread), candidate
recall@N, training time, feature importance.
Writes ranker.json, ranker.md and ranker.png (metrics + feature importance) via benchmarks/common.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Column, environment, write_report

METRICS = ("recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20", "mrr@20", "recall@50", "ndcg@50", "mrr@50")


def _chart(importance: Mapping[str, float], compared: Sequence[Mapping[str, Any]]):
    def draw(_rows: Sequence[Mapping[str, Any]], path: Path) -> None:
        rows = compared
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


def run(bundle: Path, data: Path, out: Path, config=None, seeds: Sequence[int] = (0,), command: str = "",
        save_bundle: Path | None = None, log=print) -> dict[str, Path]:
    """Train the re-ranker (`config`, a RankerConfig) on the bundle's training queries once per seed (candidates
    and features computed once; a seed draws the held-out users and LightGBM's sampling), evaluate each fit on
    the held-out users' valid step and on test (full ranking), report the spread over the seeds, and save the fit
    with the best valid NDCG@10 to `save_bundle`."""
    from jobs.ranker_cmd import open_for_ranker
    from recsys.ranker import RankerConfig
    from recsys.ranker_training import (candidate_metrics, fit_prepared, held_out_valid, prepare_training,
                                        reranked_metrics)

    config = config or RankerConfig()
    ks = (10, 20, 50)
    recommender, split, path, manifest = open_for_ranker(bundle, data)
    training = prepare_training(recommender, split, config, log)
    recall_key = f"candidate_recall@{config.candidates}"
    rows, fits = [], []
    for seed in seeds:
        seeded = config.model_copy(update={"seed": seed})
        reranker, report = fit_prepared(training, seeded, log)
        recommender.reranker = reranker
        if not rows:
            candidates = candidate_metrics(recommender, split.test, ks)
            rows.append({"model": "retrieval-only", "split": "test", **candidates["retrieval"]})
        valid = held_out_valid(split, seeded)
        valid_metrics = reranked_metrics(recommender, valid, ks)
        valid_recall = candidate_metrics(recommender, valid, ks)[recall_key]
        test_metrics = reranked_metrics(recommender, split.test, ks)
        log(f"seed {seed}: {report['trees']} trees; valid (held-out users) N@10 {valid_metrics['ndcg@10']:.4f}; "
            f"test N@10 {test_metrics['ndcg@10']:.4f} R@10 {test_metrics['recall@10']:.4f}")
        rows.append({"model": f"re-ranked, seed {seed}", "split": "valid (held-out users)", **valid_metrics,
                     "trees": report["trees"], "candidate_recall": valid_recall})
        rows.append({"model": f"re-ranked, seed {seed}", "split": "test", **test_metrics, "trees": report["trees"],
                     "candidate_recall": candidates[recall_key]})
        fits.append((valid_metrics["ndcg@10"], seed, reranker, report, test_metrics))
    best_valid, best_seed, best, report, best_test = max(fits, key=lambda f: f[0])
    if save_bundle is not None:
        recommender.reranker = best
        recommender.save(save_bundle, {"name": manifest.get("name"), "dataset": manifest.get("dataset"),
                                       "ranker": {"parent_bundle": str(path),
                                                  "config": best.config.model_dump(mode="json"), "training": report,
                                                  "test": [rows[0], {**best_test, "model": "re-ranked"}],
                                                  recall_key: candidates[recall_key], "seeds": list(seeds)}})
    spread = {m: max(f[4][m] for f in fits) - min(f[4][m] for f in fits) for m in ("ndcg@10", "recall@10")}
    mean = {m: float(np.mean([f[4][m] for f in fits])) for m in ("ndcg@10", "recall@10")}
    user_se = float(np.mean([f[4]["ndcg@10_se"] for f in fits]))  # the test users' sampling noise, for scale
    seconds = report["seconds"]
    notes = [
        f"command: `{command}`" if command else "command: (library call)",
        f"bundle: `{path}` ({(manifest.get('encoder') or {}).get('kind', 'encoder')}); dataset `{data}`; "
        f"{int(rows[0]['n_examples']):,} test examples, full ranking over the catalogue",
        f"ranker config: candidates {config.candidates}, train_positions {config.train_positions}, "
        f"transition_candidates {config.transition_candidates}, popular_candidates {config.popular_candidates}, "
        f"cv_folds {config.cv_folds}" + (" (fold models summed)" if config.fold_ensemble and config.cv_folds >= 2
                                         else ""),
        f"candidate stage recall@{config.candidates} (test): **{candidates[recall_key]:.4f}** (the re-ranker's "
        "ceiling)",
        f"test over seeds {list(seeds)}: N@10 mean {mean['ndcg@10']:.4f} (spread {spread['ndcg@10']:.4f}; standard "
        f"error over the test users {user_se:.4f}), R@10 mean {mean['recall@10']:.4f} (spread "
        f"{spread['recall@10']:.4f}); retrieval-only N@10 {rows[0]['ndcg@10']:.4f}",
        f"valid (held-out users): each seed's held-out {config.holdout_users:.0%} of the users' valid step, which "
        "its fit did not train on (used for early stopping only); best valid N@10: seed "
        f"{best_seed} ({best_valid:.4f})" + (f", saved to `{save_bundle}`" if save_bundle is not None else ""),
        f"ranker training ({report['training_queries']:,} queries with the target among the candidates, of which "
        f"{report['train_split_queries']:,} inside the train split; {report['rows']:,} rows): candidates "
        f"{seconds['retrieve']:.1f}s + features {seconds['features']:.1f}s, fit {seconds['fit']:.1f}s "
        f"(LightGBM threads: {config.n_jobs})",
        "top features by gain (best seed): " + ", ".join(list(report["importance_gain"])[:6]),
    ]
    meta = {"environment": environment(("numpy", "polars", "lightgbm", "faiss-cpu", "torch")),
            "bundle": str(path), "data": str(data), "command": command, "config": config.model_dump(mode="json"),
            recall_key: candidates[recall_key], "training": report, "seeds": list(seeds), "test_mean": mean,
            "test_spread": spread, "test_ndcg@10_se": user_se, "best_seed": best_seed}
    columns = [Column("model"), Column("split"), Column("n_examples", "n", ",.0f"), Column("trees", "trees", ",.0f"),
               Column("candidate_recall", f"cand. R@{config.candidates}", ".4f"),
               *(Column(m, m, ".4f") for m in METRICS)]
    return write_report(out, "ranker", rows, columns, title="LightGBM re-ranker: retrieval-only vs re-ranked",
                        meta=meta, notes=notes, chart=_chart(report["importance_gain"], [rows[0], rows[-1]]))
