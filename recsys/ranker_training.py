"""Train the re-ranker on the validation step: retrieved candidates of each valid example, labelled by the
second-to-last item; statistics from the train split only; the test step stays untouched."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import polars as pl

from recsys.catalogue import Catalogue
from recsys.evaluation import ListReference, list_scores, sample_examples
from recsys.features import FeatureBuilder
from recsys.metrics import summarize, target_ranks
from recsys.candidates import CandidateSources
from recsys.ranker import Ranker, RankerConfig, Reranker, candidate_sources, feature_matrix
from recsys.splits import EXAMPLE_SCHEMA, SplitData, ordered_interactions
from recsys.stats import InteractionStats, StatsConfig, default_config
from recsys.text_format import counted
from recsys.towers import innermost_tower


class CandidateRetriever(Protocol):
    """The Recommender's retrieval path (`recommend_batch(..., rerank=False)`)."""

    catalogue: Catalogue

    def recommend_batch(self, histories: Sequence[Sequence[str]], k: int, exclude_seen: bool = False,
                        *args, **kwargs) -> list: ...


def blended_trained_dim(recommender: CandidateRetriever) -> int | None:
    """The width of the trained block of a blended catalogue ([trained towers, zero-shot text]), under any serving
    wrappers (a query cache); None otherwise."""
    tower = getattr(recommender, "user_tower", None)
    trained_dim = getattr(innermost_tower(tower), "trained_dim", None) if tower is not None else None
    return int(trained_dim) if trained_dim is not None else None


def stats_config(train: pl.DataFrame, config: RankerConfig) -> StatsConfig:
    """Resolve `time_mode="auto"` from the training interactions."""
    auto = default_config(train, config.pair_window).model_copy(update={"ease": config.ease})
    if config.time_mode in ("auto", auto.time_mode):
        return auto
    window = 5 if config.time_mode == "sequence" else auto.recent_window
    return StatsConfig(time_mode=config.time_mode, recent_window=window, pair_window=config.pair_window,
                       ease=config.ease)


def fit_training_stats(split: SplitData, config: RankerConfig, progress: bool = False) -> InteractionStats:
    """Statistics for ranker training and serving: the train split only (no valid/test interaction); with
    `progress`, bars over the pair tables and the EASE fits."""
    return InteractionStats.fit(split.train, stats_config(split.train, config), progress)


def retrieve(recommender: CandidateRetriever, histories: list[list[str]], depth: int,
             batch_size: int = 1024, sources: CandidateSources | None = None,
             times: np.ndarray | None = None) -> tuple[list[list[str]], list[list[float]], list[bool]]:
    """Retrieval-only candidates per history (and whether the list is personalised, not the fallback); with
    `sources`, widened by the extra candidate sources at each query's time (`times`), as serving does."""
    ids, scores, personal = [], [], []
    for start in range(0, len(histories), batch_size):
        batch = histories[start:start + batch_size]
        results = recommender.recommend_batch(batch, depth, rerank=False, diversify=False)
        batch_ids, batch_scores = [r.item_ids for r in results], [r.scores for r in results]
        mine = [r.strategy != "popular_fallback" for r in results]
        if sources is not None:
            queries = recommender.user_tower.encode_histories(batch)
            batch_ids, batch_scores = sources.widen(batch, queries, batch_ids, batch_scores,
                                                    times[start:start + batch_size])
        ids += batch_ids
        scores += batch_scores
        personal += mine
    return ids, scores, personal


def train_position_examples(train: pl.DataFrame, positions: int, sequence_time: bool) -> pl.DataFrame:
    """Next-item examples inside the train split: the last `positions` items of each user's train sequence (not
    the first), each with the items before it as history. `timestamp` is the event's own time, or, for
    sequence-time data, its step offset before the user's last training event (-1 for the last), so features
    read only events before it (`InteractionStats.query_time`)."""
    ordered = ordered_interactions(train).with_columns(pl.int_range(pl.len()).over("user_id").alias("_pos"),
                                                       pl.len().over("user_id").alias("_n"))
    sequences = ordered.group_by("user_id", maintain_order=True).agg(pl.col("item_id").alias("_seq"))
    targets = ordered.filter((pl.col("_pos") >= pl.col("_n") - positions) & (pl.col("_pos") >= 1))
    time = (pl.col("_pos") - pl.col("_n")) if sequence_time else pl.col("timestamp")
    return targets.join(sequences, on="user_id", how="left").select(
        "user_id", pl.col("_seq").list.head(pl.col("_pos")).alias("history"), pl.col("item_id").alias("target"),
        time.cast(pl.Int64).alias("timestamp")).cast(EXAMPLE_SCHEMA)


def held_out_users(users: Sequence[str], share: float, seed: int) -> set[str]:
    """Seeded, per-user split: the users (of those in `users`, the valid step's) held out for early stopping;
    the same users for the same split, share and seed, so their valid step can be evaluated later."""
    unique = sorted(set(users))
    rng = np.random.default_rng(seed)
    return set(rng.choice(np.array(unique, dtype=object), max(1, int(round(share * len(unique)))),
                          replace=False).tolist()) if len(unique) > 1 else set()



def held_out_valid(split: SplitData, config: RankerConfig) -> pl.DataFrame:
    """The valid step of the users a fit with `config` held out (never trained on: early stopping only), so
    settings downstream of the ranker (diversification) can be chosen on validation."""
    held = held_out_users(split.valid["user_id"].to_list(), config.holdout_users, config.seed)
    return split.valid.filter(pl.col("user_id").is_in(sorted(held)))


def training_frame(builder: FeatureBuilder, examples: pl.DataFrame, candidates: list[list[str]],
                   scores: list[list[float]]) -> tuple[pl.DataFrame, np.ndarray]:
    """Features + 0/1 label for every example whose target is among its candidates (others teach nothing)."""
    targets = examples["target"].to_list()
    keep = [i for i, (c, t) in enumerate(zip(candidates, targets)) if t in c]
    histories = examples["history"].to_list()
    frame = builder.build([histories[i] for i in keep], [candidates[i] for i in keep], [scores[i] for i in keep],
                          [examples["timestamp"][i] for i in keep])
    label = (frame["item_id"] == pl.Series([targets[keep[q]] for q in frame["query"].to_list()])).cast(pl.Int32)
    return frame.with_columns(label=label, user_id=pl.Series([examples["user_id"][keep[q]]
                                                              for q in frame["query"].to_list()])), np.array(keep)


def _arrays(frame: pl.DataFrame, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    groups = frame.group_by("query", maintain_order=True).len()["len"].to_numpy()
    return feature_matrix(frame, names), frame["label"].to_numpy(), groups


@dataclass
class TrainingSet:
    """What a re-ranker fit reads, independent of its seed: the feature frame of every training query whose target
    is among its candidates (`_valid_step` marks the valid step's), the builder and the preparation's report."""

    builder: FeatureBuilder
    frame: pl.DataFrame
    report: dict
    users: list[str]  # the valid step's users, from which a seed draws the held-out ones (`held_out_users`)


def train_reranker(recommender: CandidateRetriever, split: SplitData, config: RankerConfig,
                   log=print, progress: bool = False) -> tuple[Reranker, dict]:
    """Fit statistics on the train split, build features for the training queries' candidates (the valid step,
    plus `train_positions` positions inside the train split), fit LGBMRanker with early stopping on a seeded
    held-out slice of users' valid step (a trees bar per fit with `progress`). Returns (reranker, training
    report)."""
    return fit_prepared(prepare_training(recommender, split, config, log, progress), config, log, progress)


def prepare_training(recommender: CandidateRetriever, split: SplitData, config: RankerConfig,
                     log=print, progress: bool = False) -> TrainingSet:
    """Statistics, candidates and features of the training queries (everything but the seeded fit); `progress`:
    bars over the statistics' pair tables and EASE fits."""
    started = time.perf_counter()
    valid = sample_examples(split.valid, config.train_examples, config.seed)
    # said before the silent part (statistics, every query's candidates: minutes at a million users)
    log(f"fitting the statistics on the train split and retrieving {config.candidates} candidates for "
        f"{valid.height:,} valid-step queries" + (f" + train-split positions (last {config.train_positions})"
                                                  if config.train_positions else "") + " …")
    stats_started = time.perf_counter()
    stats = fit_training_stats(split, config, progress)
    stats_s = time.perf_counter() - stats_started
    if stats.ease is not None:
        log(f"EASE: {counted(len(stats.ease.cuts), 'fit')} over {counted(len(stats.item_ids), 'item')}, with the "
            f"statistics in {stats_s:.1f} s")
    examples = valid.with_columns(pl.lit(True).alias("_valid_step"))
    if config.train_positions:
        inside = train_position_examples(split.train, config.train_positions, stats.config.time_mode == "sequence")
        examples = pl.concat([examples, inside.with_columns(pl.lit(False).alias("_valid_step"))])
    trained_dim = blended_trained_dim(recommender)
    if config.features.block_similarity and trained_dim is None:
        log("block_similarity: these towers have no zero-shot block (no blend), so no block similarity features")
    if config.ease is not None and stats.ease is None:
        log(f"EASE: {len(stats.item_ids):,} items with training events, more than ease.max_items "
            f"({config.ease.max_items:,}), so no EASE score")
    features = config.features.for_towers(trained_dim).model_copy(update={"ease": stats.ease is not None})
    builder = FeatureBuilder(recommender.catalogue, stats, features)
    sources = candidate_sources(builder, config)
    t0 = time.perf_counter()
    times = stats.query_times(examples["timestamp"].to_list(), examples.height)
    candidates, scores, _ = retrieve(recommender, examples["history"].to_list(), config.candidates, sources=sources,
                                     times=times)
    retrieve_s = time.perf_counter() - t0
    hits = np.array([t in c for t, c in zip(examples["target"].to_list(), candidates)])
    step = examples["_valid_step"].to_numpy()
    candidate_recall = float(hits[step].mean()) if step.any() else 0.0
    of = f" (a seeded sample of {split.valid.height:,})" if valid.height < split.valid.height else ""
    log(f"valid step: {valid.height:,} examples{of}, candidate recall@{config.candidates} {candidate_recall:.4f}"
        + (f"; + {int((~step).sum()):,} train-split examples (recall {hits[~step].mean():.4f})"
           if (~step).any() else ""))
    t0 = time.perf_counter()
    frame, kept = training_frame(builder, examples, candidates, scores)
    features_s = time.perf_counter() - t0
    frame = frame.with_columns(pl.Series("_valid_step", step[kept][frame["query"].to_numpy()]))
    report = {"examples": examples.height, "valid_examples": split.valid.height, "rows": frame.height,
              "features": builder.names,
              f"candidate_recall@{config.candidates}": candidate_recall, "stats": stats.config.model_dump(mode="json"),
              "seconds": {"statistics": round(stats_s, 2), "retrieve": round(retrieve_s, 2),
                          "features": round(features_s, 2), "prepare": round(time.perf_counter() - started, 2)}}
    return TrainingSet(builder, frame, report, valid["user_id"].to_list())


def fit_prepared(training: TrainingSet, config: RankerConfig, log=print,
                 progress: bool = False) -> tuple[Reranker, dict]:
    """The seeded part of a fit: hold out `holdout_users` of the users (seeded), fit on the others' queries,
    early-stop on the held-out users' valid step (a trees bar per fit with `progress`). Returns (reranker,
    training report)."""
    started = time.perf_counter()
    builder, frame = training.builder, training.frame
    held_users = held_out_users(training.users, config.holdout_users, config.seed)
    held = np.array([u in held_users for u in frame["user_id"].to_list()], dtype=bool)
    # early stopping on held-out users' valid step (what serving sees); their train-split queries are unused
    train_part = frame.filter(pl.Series(~held))
    valid_part = frame.filter(pl.Series(held) & pl.col("_valid_step"))
    log(f"features: {frame.height:,} rows × {len(builder.names)}; fitting on {train_part['query'].n_unique():,} "
        f"queries, early stopping on {valid_part['query'].n_unique():,} (seed {config.seed})")
    t0 = time.perf_counter()
    folds = _folds_fit(train_part, config.cv_folds)
    if config.cv_folds >= 2 and not folds:
        log(f"too few training users for {config.cv_folds} folds: one fit, early-stopped on the held-out users")
    if folds:
        ranker, fold_trees = _cross_fitted(train_part, builder.names, config, progress)
        users = len(set(train_part["user_id"]))
        log(f"folds' early-stopping points {fold_trees} → " + (
            f"the {len(fold_trees)} fold models summed ({ranker.n_trees} trees)" if config.fold_ensemble
            else f"{ranker.n_trees} trees on all {users} training users"))
    else:
        ranker, fold_trees = Ranker.fit(_arrays(train_part, builder.names), _arrays(valid_part, builder.names),
                                        builder.names, config, progress=progress), None
    fit_s = time.perf_counter() - t0
    reranker = Reranker(ranker, builder, config)
    prepared = training.report
    report = {
        **prepared, "training_queries": int(train_part["query"].n_unique()),
        "train_split_queries": int(train_part.filter(~pl.col("_valid_step"))["query"].n_unique()),
        "holdout_queries": int(valid_part["query"].n_unique()),
        "trees": ranker.n_trees, "fold_trees": fold_trees, "holdout": holdout_metrics(reranker, valid_part),
        "seconds": {**prepared["seconds"], "fit": round(fit_s, 2),
                    "total": round(prepared["seconds"]["prepare"] + time.perf_counter() - started, 2)},
        "importance_gain": ranker.importance("gain"),
    }
    return reranker, report


def fit_frame(frame: pl.DataFrame, names: Sequence[str], config: RankerConfig) -> Ranker:
    """A ranker fitted on a training frame as `fit_prepared` does with its users: K folds (`cv_folds` ≥ 2), or one
    fit early-stopped on a seeded `holdout_users` share of the frame's users' valid step."""
    if _folds_fit(frame, config.cv_folds):
        return _cross_fitted(frame, names, config)[0]
    held = held_out_users(frame.filter(pl.col("_valid_step"))["user_id"].to_list(), config.holdout_users, config.seed)
    is_held = frame["user_id"].is_in(sorted(held))
    return Ranker.fit(_arrays(frame.filter(~is_held), names),
                      _arrays(frame.filter(is_held & pl.col("_valid_step")), names), names, config)


def user_folds(users: Sequence[str], folds: int, seed: Sequence[int]) -> dict[str, int]:
    """Each distinct user → a fold in 0..folds-1: a seeded permutation of the sorted users dealt round-robin
    (fold sizes differ by at most one)."""
    distinct = sorted(set(users))
    order = np.random.default_rng(list(seed)).permutation(len(distinct))
    return {distinct[i]: n % folds for n, i in enumerate(order)}


def _folds_fit(frame: pl.DataFrame, folds: int) -> bool:
    """K-fold fitting needs K ≥ 2 and at least two users with a valid-step query per fold (small shops fall back to
    one fit)."""
    return folds >= 2 and frame.filter(pl.col("_valid_step"))["user_id"].n_unique() >= 2 * folds


def _cross_fitted(frame: pl.DataFrame, names: Sequence[str], config: RankerConfig,
                  progress: bool = False) -> tuple[Ranker, list[int]]:
    """K folds of the users (seeded): each fit early-stops on its fold's valid step; then either the K fold models
    summed (`fold_ensemble`) or one fit on every user's queries with the folds' mean number of trees. Returns
    (ranker, each fold's trees)."""
    fold_of = user_folds(frame["user_id"].to_list(), config.cv_folds, (config.seed, 7))
    fold = pl.Series([fold_of[u] for u in frame["user_id"].to_list()])
    models = []
    for k in range(config.cv_folds):
        inside, outside = frame.filter(fold != k), frame.filter((fold == k) & pl.col("_valid_step"))
        seeded = config.model_copy(update={"seed": config.seed * config.cv_folds + k}) if config.fold_ensemble \
            else config  # summed folds: each its own sampling
        models.append(Ranker.fit(_arrays(inside, names), _arrays(outside, names), names, seeded, progress=progress,
                                 desc=f"fitting the re-ranker: fold {k + 1}/{config.cv_folds}"))
    trees = [m.n_trees for m in models]
    if config.fold_ensemble:
        return Ranker.summed(models), trees
    return Ranker.fit(_arrays(frame, names), None, names, config, max(1, round(float(np.mean(trees)))),
                      progress=progress, desc="fitting the re-ranker: every fold's users"), trees


def holdout_metrics(reranker: Reranker, frame: pl.DataFrame, ks: tuple[int, ...] = (10,)) -> dict:
    """NDCG/Recall on the held-out users' candidate lists: retrieval order vs ranker order (targets present)."""
    scored = frame.select("query", "item_id", "label", "retrieval_rank").with_columns(score=reranker.score(frame))
    out = {}
    for name, order in (("retrieval", pl.col("retrieval_rank")), ("reranked", -pl.col("score"))):
        ranked = scored.with_columns(order.alias("_o")).sort(["query", "_o"], maintain_order=True)
        lists = ranked.group_by("query", maintain_order=True).agg(pl.col("item_id"), pl.col("item_id")
                                                                  .filter(pl.col("label") == 1).first().alias("t"))
        ranks = target_ranks(lists["item_id"].to_list(), lists["t"].to_list())
        out[name] = summarize(ranks, ks)
    return out


def evaluate_reranker(recommender, examples: pl.DataFrame, ks: tuple[int, ...] = (10, 20, 50),
                      batch_size: int = 1024, reference: ListReference | None = None, progress: bool = False) -> dict:
    """Full-ranking metrics of the same bundle, retrieval-only vs re-ranked (items outside the candidate
    list count as misses), plus the candidate stage's recall@N (the re-ranker's ceiling); with `reference`,
    the re-ranked lists' intra-list diversity and catalogue coverage too.

    Both go through `recommend_batch`; the re-ranked path gets each example's timestamp as `as_of`."""
    return {**candidate_metrics(recommender, examples, ks, batch_size),
            "reranked": reranked_metrics(recommender, examples, ks, batch_size, reference, progress)}


def candidate_metrics(recommender, examples: pl.DataFrame, ks: tuple[int, ...] = (10, 20, 50),
                      batch_size: int = 1024) -> dict:
    """Retrieval-only full-ranking metrics and the candidate stage's recall (the re-ranker's candidates: the
    towers' top N widened by its extra sources, if any): what does not depend on the ranker's fit."""
    reranker = recommender.reranker
    depth = reranker.config.candidates
    histories, targets = examples["history"].to_list(), examples["target"].to_list()
    times = examples["timestamp"].to_list()
    candidates, _, _ = retrieve(recommender, histories, max(depth, max(ks)), batch_size)
    pool = [c[:depth] for c in candidates]  # what the re-ranker sees (widened by its extra sources, if any)
    if reranker.sources is not None:
        pool, _, _ = retrieve(recommender, histories, depth, batch_size, reranker.sources,
                              reranker.stats.query_times(times, len(times)))
    return {"retrieval": {"n_examples": float(len(targets)), **summarize(target_ranks(candidates, targets), ks)},
            f"candidate_recall@{depth}": float(np.mean([t in c for t, c in zip(targets, pool)])) if targets else 0.0}


def reranked_metrics(recommender, examples: pl.DataFrame, ks: tuple[int, ...] = (10, 20, 50),
                     batch_size: int = 1024, reference: ListReference | None = None, progress: bool = False) -> dict:
    """Full-ranking metrics of the lists the bundle shows (re-ranked, diversified as configured), each example
    at its own time; with `reference`, intra-list diversity and catalogue coverage too (a bar with `progress`)."""
    shown = shown_lists(recommender, examples, max(ks), batch_size, progress=progress)
    return list_scores(shown, examples["target"].to_list(), ks, reference)


def shown_row(recommender, examples: pl.DataFrame, name: str, progress: bool = False) -> tuple[dict, np.ndarray]:
    """The metrics row (model `name`, @10 and @50) of the lists `recommender` shows `examples`, each at its own
    time, and the per-example NDCG@10 gains, for paired comparisons of two bundles or settings (a bar named
    `name` with `progress`)."""
    from recsys.metrics import ndcg_gains, summarize, target_ranks

    targets = examples["target"].to_list()
    ranks = target_ranks(shown_lists(recommender, examples, 50, progress=progress, desc=name), targets)
    return ({"model": name, "split": "test", "n_examples": float(len(targets)), **summarize(ranks, (10, 50))},
            ndcg_gains(ranks, 10))


def shown_lists(recommender, examples: pl.DataFrame, k: int, batch_size: int = 1024, progress: bool = False,
                desc: str = "evaluating the lists as shown") -> list[list[str]]:
    """The item ids of the top-k list the bundle shows each example (re-ranked, diversified as configured), each
    example at its own time; with `progress`, an examples bar (`desc`)."""
    from tqdm.auto import tqdm

    histories, times = examples["history"].to_list(), examples["timestamp"].to_list()
    shown: list[list[str]] = []
    with tqdm(total=len(histories), desc=desc, unit="ex", disable=not progress) as bar:
        for start in range(0, len(histories), batch_size):
            stop = start + batch_size
            lists = recommender.recommend_batch(histories[start:stop], k, as_of=times[start:stop])
            shown += [r.item_ids for r in lists]
            bar.update(len(lists))
    return shown

