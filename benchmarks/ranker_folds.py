"""Re-ranker fitting schemes compared on the whole valid step by cross-fitting: the valid step's users are split
into `outer` folds; each fold's users are re-ranked by a ranker fitted (with the scheme under test) on the other
users alone, so every valid user is scored by a model that never saw them. NDCG@10 per valid user (0 when the
target is not among the candidates: full ranking), the mean per scheme and the paired difference to the first
scheme with its standard error. The held-out-user valid figures of `recsys bench ranker` rest on a fifth of the
users; this one on all of them. A scheme may also change the candidates, statistics or features (`FRAME_FIELDS`):
it then gets its own training frame, for the same users and folds. Writes folds.json, folds.md and folds.png via
benchmarks/common.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.common import Column, environment, write_report
from recsys.metrics import paired_difference
from recsys.text_format import counted

SCHEMES: dict[str, dict] = {
    "one fit, early-stopped on held-out users (cv_folds 0)": {"cv_folds": 0},
    "5 folds, one refit with their mean tree count": {"cv_folds": 5, "fold_ensemble": False},
    "5 folds summed (the default)": {"cv_folds": 5, "fold_ensemble": True},
}


FRAME_FIELDS = ("candidates", "features", "time_mode", "pair_window", "ease", "transition_candidates",
                "popular_candidates", "train_positions")
"""RankerConfig fields that shape the training frame (candidates, statistics, features): schemes that differ in
them get their own frame, prepared once per distinct value."""
FIXED_FIELDS = frozenset({"train_examples", "seed"})
"""Fields no scheme may change: every scheme scores the same valid users with the same folds."""


def load_schemes(path: Path) -> dict[str, dict]:
    """Schemes from a JSON file, `{"name": {RankerConfig field: value, …}, …}`; ValueError (with the reason) for
    anything else, for unknown or invalid fields, and for fields that would change which valid users are scored."""
    import json

    from pydantic import ValidationError

    from recsys.ranker import RankerConfig

    try:
        schemes = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read schemes from {path}: {error}") from None
    if not isinstance(schemes, dict) or not schemes or not all(isinstance(v, dict) for v in schemes.values()):
        raise ValueError(f"{path}: expected a JSON object of scheme name → object of RankerConfig overrides")
    for name, overrides in schemes.items():
        unknown = set(overrides) - set(RankerConfig.model_fields)
        fixed = set(overrides) & FIXED_FIELDS
        if unknown or fixed:
            raise ValueError(f"scheme {name!r}: " + (f"unknown RankerConfig fields {sorted(unknown)}" if unknown else
                             f"{sorted(fixed)} would change which valid users are scored (use --seed)"))
        try:
            RankerConfig().with_overrides(overrides)
        except ValidationError as error:
            raise ValueError(f"scheme {name!r}: {error.errors()[0]['loc'][0]}: {error.errors()[0]['msg']}") from None
    return schemes


def frame_key(config) -> str:
    """The settings that shape a scheme's training frame, as one comparable string."""
    import json

    dumped = config.model_dump(mode="json")
    return json.dumps({f: dumped[f] for f in FRAME_FIELDS}, sort_keys=True)


def _target_ranks(frame: pl.DataFrame, scores: np.ndarray) -> dict[str, int]:
    """Each query's user → the 0-based rank of its target among its candidates, ordered by `scores`."""
    ranked = frame.select("query", "user_id", "label").with_columns(score=pl.Series(scores)).sort(
        ["query", "score"], descending=[False, True], maintain_order=True)
    ranked = ranked.with_columns(pl.int_range(pl.len()).over("query").alias("rank")).filter(pl.col("label") == 1)
    return dict(zip(ranked["user_id"].to_list(), ranked["rank"].to_list()))


def cross_fitted_gains(frame: pl.DataFrame, names: Sequence[str], config, users: Sequence[str],
                       fold_of: Mapping[str, int]) -> tuple[np.ndarray, list[int]]:
    """NDCG@10 of each of `users`' valid step (0 when the target is not a candidate), every fold's users ranked by a
    ranker fitted with `config` on the other folds' rows of `frame` (features `names`); and each fold model's
    tree count."""
    from recsys.metrics import MISS, ndcg_gains
    from recsys.ranker import feature_matrix
    from recsys.ranker_training import fit_frame

    fold = np.array([fold_of[u] for u in frame["user_id"].to_list()])
    valid_step = frame["_valid_step"].to_numpy()
    ranks, trees = {}, []
    for k in sorted(set(fold_of.values())):
        ranker = fit_frame(frame.filter(pl.Series(fold != k)), names, config)
        scored = frame.filter(pl.Series((fold == k) & valid_step))
        ranks.update(_target_ranks(scored, ranker.predict(feature_matrix(scored, names))))
        trees.append(ranker.n_trees)
    return ndcg_gains(np.array([ranks.get(u, MISS) for u in users]), 10), trees


SCHEME_COLUMNS = (Column("scheme"), Column("n_users", "valid users", ",.0f"),
                  Column("ndcg@10", "valid N@10", ".4f"), Column("diff", "vs first", "+.4f"),
                  Column("diff_se", "± s.e.", ".4f"), Column("trees", "trees (mean)", ".0f"))
"""The report's columns for rows made by `scheme_row`."""


def scheme_row(name: str, per_user: np.ndarray, first: np.ndarray, trees: Sequence[int]) -> dict[str, Any]:
    """One report row: the scheme's mean per-user N@10, its paired difference to `first` (the first scheme's
    per-user N@10) with the difference's standard error, and the fold models' mean tree count."""
    diff, se = paired_difference(per_user, first)
    return {"scheme": name, "n_users": len(per_user), "ndcg@10": float(per_user.mean()), "diff": diff,
            "diff_se": se, "trees": float(np.mean(trees))}


class FeatureProbe:
    """The default re-ranker cross-fitted on every valid user of a prepared training set (`recsys.ranker_training.
    prepare_training`, valid step only), then again with extra feature columns, each a report row against the
    first: the shared core of the feature probes (benchmarks/ease.py, id_sequence.py, lexical.py)."""

    def __init__(self, training, config, outer: int, seed: int, log=print) -> None:
        from recsys.ranker_training import user_folds

        if not training.frame["_valid_step"].all():  # query_rows maps rows to examples by user id
            raise ValueError("a feature probe reads the valid step alone: prepare it without train_positions")
        self.frame, self.names, self.config, self.log = training.frame, list(training.builder.names), config, log
        self.users = sorted(set(training.users))
        self.fold_of = user_folds(self.users, outer, (seed, 11))
        self.first, trees = cross_fitted_gains(self.frame, self.names, config, self.users, self.fold_of)
        self.rows: list[dict[str, Any]] = [scheme_row("the default re-ranker", self.first, self.first, trees)]
        log(f"the default re-ranker: valid N@10 {self.first.mean():.4f}")

    def query_rows(self, valid: pl.DataFrame) -> np.ndarray:
        """Each frame row's example: its row in `valid` (the split's valid step)."""
        row_of = {u: k for k, u in enumerate(valid["user_id"].to_list())}
        return np.array([row_of[u] for u in self.frame["user_id"].to_list()], np.int64)

    def add(self, name: str, columns: Mapping[str, np.ndarray], detail: str = "") -> dict[str, Any]:
        """Cross-fit with `columns` (one value per frame row) as extra features; append and return the row."""
        scored = self.frame.with_columns([pl.Series(n, v) for n, v in columns.items()])
        per_user, trees = cross_fitted_gains(scored, self.names + list(columns), self.config, self.users,
                                             self.fold_of)
        row = scheme_row(name, per_user, self.first, trees)
        self.rows.append(row)
        self.log(f"{name}: valid N@10 {row['ndcg@10']:.4f} ({row['diff']:+.4f} ± {row['diff_se']:.4f})"
                 + (f"; {detail}" if detail else ""))
        return row


def scheme_chart(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.5))
    names = [r["scheme"] for r in rows][::-1]
    ax.barh(names, [r["ndcg@10"] for r in rows][::-1], xerr=[r["diff_se"] for r in rows][::-1])
    ax.set_xlabel("valid N@10 (cross-fitted over all valid users; bars: s.e. of the paired difference)")
    lo = min(r["ndcg@10"] for r in rows)
    ax.set_xlim(lo * 0.9, max(r["ndcg@10"] for r in rows) * 1.03)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(bundle: Path, data: Path, out: Path, seed: int = 0, outer: int = 5, command: str = "",
        schemes: Mapping[str, dict] | None = None, log=print) -> dict[str, Path]:
    """Cross-fitted valid NDCG@10 of each re-ranker fitting scheme (RankerConfig overrides) on one bundle."""
    from jobs.ranker_cmd import open_for_ranker
    from recsys.ranker import RankerConfig
    from recsys.ranker_training import prepare_training, user_folds

    schemes = dict(schemes or SCHEMES)
    base = RankerConfig(seed=seed)
    recommender, split, path, manifest = open_for_ranker(bundle, data)
    trainings: dict[str, Any] = {}  # one training frame per distinct candidates/statistics/features setting
    users: list[str] | None = None
    fold_of: dict[str, int] = {}
    rows, first = [], None
    for name, overrides in schemes.items():
        config = base.with_overrides(overrides)
        key = frame_key(config)
        if key not in trainings:
            trainings[key] = prepare_training(recommender, split, config, log)
        training = trainings[key]
        if users is None:  # every frame holds the same valid users (train_examples and seed are fixed)
            users = sorted(set(training.users))
            fold_of = user_folds(users, outer, (seed, 11))
        per_user, trees = cross_fitted_gains(training.frame, training.builder.names, config, users, fold_of)
        first = per_user if first is None else first
        rows.append(scheme_row(name, per_user, first, trees))
        log(f"{name}: valid N@10 {rows[-1]['ndcg@10']:.4f} ({rows[-1]['diff']:+.4f} ± {rows[-1]['diff_se']:.4f}), "
            f"trees {trees}")
    notes = [f"command: `{command}`" if command else "command: (library call)",
             f"bundle: `{path}`; dataset `{data}`; {len(users or []):,} valid users in {outer} cross-fitting folds "
             f"(seed {seed}); each scheme's rankers fitted on the other folds' users only",
             "N@10 per user over the full catalogue (0 when the target is not among the towers' candidates); "
             "diff: paired difference to the first row, ± its standard error",
             f"{counted(len(trainings), 'training frame')}: schemes that change the candidates, statistics or features "
             "get their own, prepared once"]
    meta = {"environment": environment(("numpy", "polars", "lightgbm")), "bundle": str(path), "data": str(data),
            "command": command, "seed": seed, "outer_folds": outer, "schemes": schemes, "frames": len(trainings)}
    return write_report(out, "folds", rows, SCHEME_COLUMNS,
                        title="Re-ranker fitting schemes, cross-fitted on the valid step",
                        meta=meta, notes=notes, chart=scheme_chart)
