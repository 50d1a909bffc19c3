"""LightGBM lambdarank re-ranker: reorders retrieved candidates with features the towers cannot see.

Saved in the bundle as LightGBM text (`ranker/model.txt`) plus a feature spec (`ranker/features.json`),
with its statistics under `stats/`; a bundle whose spec does not match what this code computes is refused.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightgbm as lgb
import numpy as np
import polars as pl
from pydantic import Field, field_validator

from recsys.candidates import CandidateSources
from recsys.catalogue import CandidateRows, Catalogue
from recsys.compiled_trees import CompiledTrees, load_compiled
from recsys.config import FrozenModel
from recsys.ease import EaseConfig
from recsys.errors import BundleError, DataError
from recsys.feature_config import FEATURE_VERSION, FeatureConfig
from recsys.features import FeatureBuilder
from recsys.stats import InteractionStats

MODEL_FILE = "model.txt"
SPEC_FILE = "features.json"


class RankerConfig(FrozenModel):
    """Candidate depth, feature depths and LightGBM settings (saved in the feature spec)."""

    candidates: int = Field(200, ge=1, description="retrieved items re-ranked per query")
    features: FeatureConfig = FeatureConfig()
    time_mode: Literal["auto", "absolute", "sequence"] = Field(
        "auto", description="auto: 'sequence' when every user's timestamps are 0..n-1, else 'absolute'")
    pair_window: int = Field(3, ge=1, description="co-occurrence window in steps")
    # off: valid N@10 cross-fitted over every valid user −0.0001 ± 0.0006 on amazon-scientific, +0.0068 ± 0.0051 on
    # movielens-100k (benchmarks/EXPERIMENTS.md "EASE scores in the re-ranker"): not a win on both
    ease: EaseConfig | None = Field(None, description="EASE item–item weights fitted with the statistics and the "
                                    "candidate's EASE score as a feature (`recsys.ease`; `{}` for the defaults; "
                                    "skipped above `ease.max_items` items); None: none")
    objective: Literal["lambdarank", "rank_xendcg"] = Field(
        "lambdarank", description="LightGBM ranking loss: lambdarank (pairwise, NDCG-weighted) or rank_xendcg "
        "(listwise cross-entropy over each query's candidates)")
    n_estimators: int = Field(400, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(15, ge=2)
    min_child_samples: int = Field(100, ge=1)
    colsample_bytree: float = Field(0.9, gt=0, le=1)
    early_stopping_rounds: int = Field(30, ge=1)
    holdout_users: float = Field(0.2, gt=0, lt=1, description="share of users held out for early stopping")
    train_examples: int | None = Field(50_000, ge=1, description="valid-step examples the re-ranker learns from: a "
                                       "seeded sample when there are more (None: all), so its cost stops growing "
                                       "with the number of users")
    cv_folds: int = Field(5, ge=0, description="0: one fit, early-stopped on the held-out users; K ≥ 2: K folds "
                          "of the other users, each fit early-stopped on its fold's valid step, then the fold models "
                          "summed (`fold_ensemble`) or one fit on all of them with their mean number of trees; the "
                          "held-out users untouched")

    @field_validator("cv_folds")
    @classmethod
    def _not_one_fold(cls, value: int) -> int:
        """One fold is no cross-fitting (it was taken, and fit as 0 does)."""
        if value == 1:
            raise ValueError("1 fold is no cross-fitting: 0 (one fit, early-stopped on held-out users) or K ≥ 2")
        return value

    fold_ensemble: bool = Field(True, description="with cv_folds ≥ 2: the ranker is the sum of the K fold models "
                                "(each early-stopped on its own fold's valid step) instead of one refit with their "
                                "mean tree count; the fold-to-fold variance of early stopping averages out")
    transition_candidates: int = Field(0, ge=0, description="extra candidates: the items most often bought right "
                                       "after the history's last item (train split, before the query time)")
    popular_candidates: int = Field(0, ge=0, description="extra candidates: the most popular items before the "
                                    "query time")
    train_positions: int = Field(0, ge=0, description="also train on the last N positions of each train-split "
                                 "sequence (features from events before each query's time only); 0: the valid step "
                                 "alone")
    eval_at: int = Field(10, ge=1, description="early stopping metric: NDCG at this depth")
    n_jobs: int = Field(1, ge=1, description="LightGBM threads (1 is fastest on a busy shared CPU)")
    explain_features: int = Field(3, ge=1, description="top contributing features per explained item")
    seed: int = 0


def _with_older_defaults(saved: dict) -> dict:
    """A saved RankerConfig with the settings its code did not have yet set to what that code did: rankers saved
    before `features.normalized_pairs` existed were trained without those features, and before `ease` without
    EASE weights."""
    features = saved.get("features")
    if isinstance(features, dict) and "normalized_pairs" not in features:
        saved = {**saved, "features": {**features, "normalized_pairs": False}}
    if "ease" not in saved:
        saved = {**saved, "ease": None}
    return saved


def candidate_sources(builder: FeatureBuilder, config: RankerConfig) -> CandidateSources | None:
    """The extra candidate sources `config` asks for (None: the towers' candidates alone)."""
    if not (config.transition_candidates or config.popular_candidates):
        return None
    return CandidateSources(builder, config.transition_candidates, config.popular_candidates)


class Ranker:
    """A LightGBM booster with the feature names it was trained on."""

    def __init__(self, booster: lgb.Booster, compiled: CompiledTrees | None = None) -> None:
        self.booster = booster
        self.names: list[str] = list(booster.feature_name())
        self.compiled = compiled  # the same trees as native code (`recsys.compiled_trees`), when available

    @classmethod
    def fit(cls, train: tuple[np.ndarray, np.ndarray, np.ndarray],
            valid: tuple[np.ndarray, np.ndarray, np.ndarray] | None, names: Sequence[str], config: RankerConfig,
            trees: int | None = None, progress: bool = False, desc: str = "fitting the re-ranker") -> "Ranker":
        """Fit on (features, labels, group sizes) with early stopping on `valid`'s NDCG@eval_at, or, without
        `valid`, exactly `trees` trees; with `progress`, a trees bar (`desc`) with the held-out NDCG."""
        from tqdm.auto import tqdm

        model = lgb.LGBMRanker(
            objective=config.objective, n_estimators=trees or config.n_estimators, learning_rate=config.learning_rate,
            num_leaves=config.num_leaves, min_child_samples=config.min_child_samples,
            colsample_bytree=config.colsample_bytree, random_state=config.seed, n_jobs=config.n_jobs,
            deterministic=True, force_col_wise=True, verbose=-1)
        x, y, groups = train
        if len(groups) < 2 or not np.any(y > 0):
            raise DataError(f"the re-ranker needs at least 2 training queries whose target is among the retrieved "
                            f"candidates, with at least one hit; got {len(groups)} queries and {int(np.sum(y > 0))} "
                            "hits (retrieve more candidates, or give the shop more interactions)")
        if valid is not None and len(valid[2]) == 0:
            raise DataError("no held-out query has its target among the retrieved candidates, so early stopping "
                            "has nothing to measure (retrieve more candidates, or give the shop more interactions)")
        bar = tqdm(total=trees or config.n_estimators, desc=desc, unit="tree", disable=not progress)

        def advance(env) -> None:
            if env.evaluation_result_list:
                bar.set_postfix({f"holdout ndcg@{config.eval_at}": f"{env.evaluation_result_list[0][2]:.4f}"},
                                refresh=False)  # shown when the bar next redraws, not once per tree
            bar.update(1)

        if valid is None:
            with bar:
                model.fit(x, y, group=groups, feature_name=list(names), callbacks=[advance])
            return cls(model.booster_)
        vx, vy, vgroups = valid
        with bar, warnings.catch_warnings():  # eval_set is deprecated in LightGBM 4.7 but the only spelling in 4.3
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*eval_set.*")
            model.fit(x, y, group=groups, feature_name=list(names), eval_set=[(vx, vy)], eval_group=[vgroups],
                      eval_at=[config.eval_at],
                      callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False), advance])
        booster = model.booster_
        # keep only the best iteration, so the in-memory model equals the saved one
        return cls(lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration or None)))

    @classmethod
    def summed(cls, rankers: Sequence["Ranker"]) -> "Ranker":
        """One booster whose score is the sum of `rankers`' scores (their trees one after another; the same
        feature names): it saves, loads, compiles and explains like any single model."""
        texts = [r.booster.model_to_string() for r in rankers]
        if len({tuple(r.names) for r in rankers}) != 1:
            raise ValueError("only rankers over the same features can be summed")
        trees = [f"Tree={block}" for text in texts
                 for block in text[text.index("\nTree=") + 1:text.index("end of trees")].split("Tree=")[1:]]
        trees = [re.sub(r"\ATree=\d+", f"Tree={i}", tree) for i, tree in enumerate(trees)]
        head = texts[0][:texts[0].index("\nTree=") + 1]
        head = re.sub(r"tree_sizes=[^\n]*", "tree_sizes=" + " ".join(str(len(t.encode())) for t in trees), head)
        tail = texts[0][texts[0].index("end of trees"):]
        return cls(lgb.Booster(model_str=head + "".join(trees) + tail))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores for feature rows, on the calling thread (one OpenMP thread: a request's few hundred rows
        cost less than waking a thread team, and serving workers already use every core)."""
        if not len(x):
            return np.zeros(0)
        return self.compiled.predict(x) if self.compiled is not None else self.booster.predict(x, num_threads=1)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """SHAP-style contributions [n, features + 1] (last column: the bias)."""
        return self.booster.predict(x, pred_contrib=True, num_threads=1) if len(x) \
            else np.zeros((0, len(self.names) + 1))

    def importance(self, kind: Literal["gain", "split"] = "gain") -> dict[str, float]:
        values = self.booster.feature_importance(importance_type=kind)
        return {name: float(v) for name, v in sorted(zip(self.names, values), key=lambda p: -p[1])}

    @property
    def n_trees(self) -> int:
        return self.booster.num_trees()

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / MODEL_FILE))

    @classmethod
    def load(cls, directory: Path, compile_trees: bool = True) -> "Ranker":
        """The saved booster; with `compile_trees`, also compiled to native code when lleaves is installed."""
        booster = lgb.Booster(model_file=str(directory / MODEL_FILE))
        return cls(booster, load_compiled(directory / MODEL_FILE, booster) if compile_trees else None)


def feature_matrix(frame: pl.DataFrame, names: Sequence[str]) -> np.ndarray:
    """float64 [rows, features], nulls as NaN (LightGBM's missing value)."""
    return frame.select([pl.col(n).cast(pl.Float64).fill_null(float("nan")) for n in names]).to_numpy()


class Reranker:
    """Feature builder + ranker: candidate lists in, re-ranked top-k (+ explanations) out."""

    def __init__(self, ranker: Ranker, builder: FeatureBuilder, config: RankerConfig) -> None:
        if ranker.names != builder.names:
            raise BundleError(f"ranker features {ranker.names} do not match the feature builder's {builder.names}")
        self.ranker = ranker
        self.builder = builder
        self.config = config.model_copy(update={"features": builder.config})  # as computed (block width resolved)
        self.sources = candidate_sources(builder, config)

    @property
    def stats(self) -> InteractionStats:
        return self.builder.stats

    def score(self, frame: pl.DataFrame) -> np.ndarray:
        return self.ranker.predict(feature_matrix(frame, self.builder.names))

    def rerank(self, histories: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]],
               scores: Sequence[Sequence[float]], k: int, as_of: Sequence[int | None] | None = None,
               explain: bool = False, rows: CandidateRows | None = None
               ) -> list[tuple[list[str], list[float], list[dict] | None]]:
        """Per query: the top-k candidates by ranker score (ties: retrieval order), their scores, and
        per-item explanations (feature contributions + the closest history item) when `explain`.
        `rows`: the candidates' catalogue rows, when the caller has them.

        One feature matrix and one predict for the whole batch."""
        x = self.builder.matrix(histories, candidates, scores, as_of, rows)
        predicted = self.ranker.predict(x)
        lengths = np.fromiter(map(len, candidates), np.int64, len(candidates))
        query = np.repeat(np.arange(len(candidates)), lengths)
        order = np.lexsort((np.arange(len(predicted)), -predicted, query))  # by query, score desc, retrieval
        starts = np.cumsum(lengths) - lengths
        rows = order[(np.arange(len(order)) - starts[query[order]]) < k]
        taken = np.minimum(lengths, k)
        flat = [i for c in candidates for i in c]
        ids, values = [flat[r] for r in rows.tolist()], predicted[rows].tolist()
        out: list[tuple[list[str], list[float], list[dict] | None]] = []
        start = 0
        for m in taken.tolist():
            out.append((ids[start:start + m], values[start:start + m], None))
            start += m
        if explain and len(rows):
            contrib = self.ranker.contributions(x[rows])
            explanations = [self._explain(c, v) for c, v in zip(contrib, x[rows])]
            start = 0
            for q, (items, item_scores, _) in enumerate(out):
                chunk = explanations[start:start + len(items)]
                start += len(items)
                for explanation, (near, sim) in zip(chunk, self.builder.closest_history(histories[q], items)):
                    explanation["because_item_id"] = near
                    explanation["because_similarity"] = None if math.isnan(sim) else round(sim, 4)
                out[q] = (items, item_scores, chunk)
        elif explain:
            out = [(items, item_scores, []) for items, item_scores, _ in out]
        return out

    def _explain(self, contrib: np.ndarray, values: np.ndarray) -> dict:
        top = np.argsort(-contrib[:-1], kind="stable")[: self.config.explain_features]
        return {"top_features": [{"name": self.builder.names[i], "contribution": round(float(contrib[i]), 4),
                                  "value": None if math.isnan(values[i]) else round(float(values[i]), 4)}
                                 for i in top]}

    # ---- persistence --------------------------------------------------------------------------
    def spec(self) -> dict:
        return {"feature_version": FEATURE_VERSION, "features": self.builder.names,
                "attributes": self.builder.attributes, "ranker": self.config.model_dump(mode="json"),
                "stats": self.stats.config.model_dump(mode="json"), "lightgbm": lgb.__version__}

    def save(self, bundle_dir: Path) -> None:
        """`ranker/model.txt` + `ranker/features.json`, statistics under `stats/`."""
        self.ranker.save(bundle_dir / "ranker")
        (bundle_dir / "ranker" / SPEC_FILE).write_text(json.dumps(self.spec(), indent=2))
        self.stats.save(bundle_dir / "stats")

    @classmethod
    def load(cls, bundle_dir: Path, catalogue: Catalogue) -> "Reranker":
        """Refuses (BundleError) a spec that does not match this code, this catalogue or the model file."""
        try:
            spec = json.loads((bundle_dir / "ranker" / SPEC_FILE).read_text())
            config = RankerConfig.model_validate(_with_older_defaults(spec["ranker"]))
            stats = InteractionStats.load(bundle_dir / "stats")
            ranker = Ranker.load(bundle_dir / "ranker")
        except (OSError, ValueError, KeyError, lgb.basic.LightGBMError) as exc:
            raise BundleError(f"{bundle_dir}: cannot load the ranker ({exc})") from exc
        if spec.get("feature_version") != FEATURE_VERSION:
            raise BundleError(f"{bundle_dir}: ranker feature version {spec.get('feature_version')!r} does not match "
                              f"this code's {FEATURE_VERSION}; retrain it with `recsys train-ranker`")
        try:
            builder = FeatureBuilder(catalogue, stats, config.features)
        except ValueError as exc:
            raise BundleError(f"{bundle_dir}: the ranker's features do not fit this catalogue ({exc})") from exc
        if spec.get("features") != builder.names or ranker.names != builder.names:
            raise BundleError(f"{bundle_dir}: ranker feature spec {spec.get('features')} (model: {ranker.names}) does "
                              f"not match the features computed for this catalogue {builder.names}")
        return cls(ranker, builder, config)
