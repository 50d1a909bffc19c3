"""Does a global item–item regression add what the re-ranker's pair counts lack? EASE (Steck, "Embarrassingly
Shallow Autoencoders", WWW 2019) fits B = argmin ‖X − XB‖² + λ‖B‖² with diag(B) = 0 over the binary user × item
matrix X of the train split, in closed form: P = (XᵀX + λI)⁻¹, B = −P / diag(P). A history's score of item j is
Σ_{h ∈ history} B[h, j]. The default re-ranker is cross-fitted on every valid user (benchmarks/ranker_folds.py)
with and without that score as one more feature, for each λ.

Point in time, as the re-ranker's statistics: in sequence time (RecBole/UniSRec files) one fit on the train split
serves every query; with real timestamps the valid queries are cut by time into `buckets` groups, each scored by a
fit on the train events strictly before its earliest query (leak-free, a little stale). A probe, not a product
feature: nothing is saved into a bundle, and the dense n × n inverse limits it to catalogues of up to
`MAX_ITEMS` items. The product's EASE score (`recsys.ease`, `RankerConfig.ease`) came from it; the probe's re-ranker is
the one without it. Writes ease.json, ease.md and ease.png via benchmarks/common.py."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.common import environment, write_report
from recsys.ease import ease_weights
from recsys.errors import DataError

MAX_ITEMS = 20_000
"""Above this the n × n float64 inverse needs more than 3 GB: the probe refuses."""
MAX_HISTORY = 50
"""A query's score sums the rows of its last 50 history items."""


def check_size(n_items: int) -> None:
    """DataError above `MAX_ITEMS` items (the dense inverse)."""
    if n_items > MAX_ITEMS:
        raise DataError(f"{n_items:,} items: the EASE probe inverts a dense n × n matrix, at most {MAX_ITEMS:,} items")


def history_matrix(histories: Sequence[Sequence[str]], index: Mapping[str, int]) -> np.ndarray:
    """[len(histories), len(index)] 0/1: each history's last `MAX_HISTORY` known items."""
    out = np.zeros((len(histories), len(index)), np.float32)
    for row, history in enumerate(histories):
        out[row, [index[i] for i in history[-MAX_HISTORY:] if i in index]] = 1.0
    return out


def query_groups(times: np.ndarray, buckets: int, sequence_time: bool) -> list[np.ndarray]:
    """Query rows in groups that share one fit: all of them in sequence time, else `buckets` groups by time."""
    if sequence_time:
        return [np.arange(len(times))]
    return [g for g in np.array_split(np.argsort(times, kind="stable"), min(buckets, len(times))) if len(g)]


def point_in_time_scores(train: pl.DataFrame, histories: Sequence[Sequence[str]], times: np.ndarray,
                         index: Mapping[str, int], lam: float, buckets: int, sequence_time: bool) -> np.ndarray:
    """[queries, items] EASE scores, each query's from a fit on train events strictly before its group's earliest
    time (sequence time: every train event)."""
    users = train["user_id"].to_numpy()
    _, user_codes = np.unique(users, return_inverse=True)
    item_codes = np.array([index[i] for i in train["item_id"].to_list()])
    event_times = train["timestamp"].to_numpy()
    queries = history_matrix(histories, index)
    scores = np.zeros_like(queries)
    for group in query_groups(times, buckets, sequence_time):
        before = slice(None) if sequence_time else event_times < times[group].min()
        check_size(len(index))
        weights = ease_weights(user_codes[before], item_codes[before], len(index), lam)
        scores[group] = queries[group] @ weights
    return scores


def target_ndcg_recall(scores: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """N@10 and R@10 of the full-catalogue ranking by `scores` (history not masked)."""
    ranks = (scores > scores[np.arange(len(targets)), targets][:, None]).sum(axis=1)
    hit = ranks < 10
    return float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()), float(hit.mean())


def run(bundle: Path, data: Path, out: Path, lambdas: Sequence[float] = (100.0, 200.0, 500.0), buckets: int = 10,
        seed: int = 0, outer: int = 5, command: str = "", ranker_overrides: Mapping | None = None,
        log=print) -> dict[str, Path]:
    """Cross-fit the default re-ranker (or one with `ranker_overrides`) of `bundle`'s towers on `data`'s valid step
    with and without the EASE score of each λ; write the report."""
    from benchmarks.ranker_folds import SCHEME_COLUMNS, FeatureProbe, scheme_chart
    from jobs.ranker_cmd import open_for_ranker
    from recsys.ranker import RankerConfig
    from recsys.ranker_training import prepare_training

    recommender, split, path, _ = open_for_ranker(bundle, data)
    check_size(recommender.catalogue.state.ids.size)
    # the re-ranker before its own EASE score (RankerConfig.ease), which this probe's dense scores would repeat
    config = RankerConfig(seed=seed, ease=None).with_overrides(dict(ranker_overrides or {}))
    training = prepare_training(recommender, split, config, log)
    sequence_time = training.report["stats"]["time_mode"] == "sequence"
    valid = split.valid
    items = sorted(set(split.train["item_id"].to_list()) | set(valid["target"].to_list())
                   | {i for h in valid["history"].to_list() for i in h} | set(training.frame["item_id"].to_list()))
    index = {item: k for k, item in enumerate(items)}
    probe = FeatureProbe(training, config, outer, seed, log)
    query_rows = probe.query_rows(valid)
    candidate_codes = np.array([index[i] for i in probe.frame["item_id"].to_list()])
    targets = np.array([index[t] for t in valid["target"].to_list()])
    users = probe.users
    alone: dict[str, dict] = {}
    for lam in lambdas:
        started = time.perf_counter()
        scores = point_in_time_scores(split.train, valid["history"].to_list(), valid["timestamp"].to_numpy(), index,
                                      lam, buckets, sequence_time)
        fit_s = time.perf_counter() - started
        ndcg, recall = target_ndcg_recall(scores, targets)
        alone[f"{lam:g}"] = {"valid_ndcg@10": ndcg, "valid_recall@10": recall, "fit_seconds": round(fit_s, 1)}
        probe.add(f"+ EASE score, λ {lam:g}", {"ease_score": scores[query_rows, candidate_codes]},
                  f"EASE alone N@10 {ndcg:.4f} / R@10 {recall:.4f} ({fit_s:.0f} s)")
    when = ("sequence time: one fit on the train split" if sequence_time else
            f"absolute time: the valid queries in {buckets} groups by time, each scored by a fit on the train events "
            "strictly before its earliest query")
    notes = [f"command: `{command}`" if command else "command: (library call)",
             f"bundle: `{path}`; dataset `{data}`; {len(users):,} valid users in {outer} cross-fitting folds "
             f"(seed {seed}); each ranker fitted on the other folds' users only",
             f"EASE over {len(index):,} items, binary user × item matrix of the train split; {when}; a query's "
             f"score sums the rows of its last {MAX_HISTORY} history items",
             "EASE alone (full ranking, history not masked), valid N@10 / R@10: "
             + "; ".join(f"λ {k}: {v['valid_ndcg@10']:.4f} / {v['valid_recall@10']:.4f}" for k, v in alone.items()),
             "N@10 per user over the full catalogue (0 when the target is not among the towers' candidates); "
             "diff: paired difference to the first row, ± its standard error"]
    meta = {"environment": environment(("numpy", "polars", "lightgbm")), "bundle": str(path), "data": str(data),
            "command": command, "seed": seed, "outer_folds": outer, "time_mode": "sequence" if sequence_time
            else "absolute", "buckets": None if sequence_time else buckets, "ease_alone": alone}
    return write_report(out, "ease", probe.rows, SCHEME_COLUMNS, meta=meta, notes=notes, chart=scheme_chart,
                        title="EASE item–item scores in the re-ranker, cross-fitted on the valid step")
