"""The re-ranker's training queries inside the train split and its extra candidate sources, point-in-time."""

import numpy as np
import polars as pl
import pytest

from recsys.candidates import CandidateSources
from recsys.config import BuildConfig
from recsys.features import FeatureBuilder, FeatureConfig
from recsys.pipeline import Recommender
from recsys.ranker import RankerConfig
from recsys.ranker_training import evaluate_reranker, train_position_examples, train_reranker
from recsys.splits import split_dataset
from recsys.stats import InteractionStats, StatsConfig
from tests.test_ranker import N_ITEMS, planted_dataset

TRAIN = pl.DataFrame({"user_id": ["u1", "u1", "u2", "u2", "u2"], "item_id": ["x", "y", "x", "y", "z"],
                      "timestamp": [0, 1, 0, 1, 2]})


def test_train_split_examples_take_the_last_positions_with_their_time():
    sequence = train_position_examples(TRAIN, 2, sequence_time=True).sort("user_id", "timestamp")
    assert sequence.rows() == [("u1", ["x"], "y", -1), ("u2", ["x"], "y", -2), ("u2", ["x", "y"], "z", -1)]
    absolute = train_position_examples(TRAIN.with_columns(pl.col("timestamp") * 100), 1, sequence_time=False)
    assert sorted(absolute.rows()) == [("u1", ["x"], "y", 100), ("u2", ["x", "y"], "z", 200)]


def test_sequence_offsets_see_only_earlier_steps():
    stats = InteractionStats.fit(TRAIN, StatsConfig(time_mode="sequence", recent_window=5))
    x, y = stats.codes(["x", "y"])
    # x → y happens at step -1 (u1) and -2 (u2), counted from each user's last training event
    counts = [int(stats.pair_counts("transitions", np.array([x]), np.array([y]), np.array([stats.query_time(t)]))[0])
              for t in (None, -1, -2)]
    assert counts == [2, 1, 0]
    assert stats.query_time(5) == 0  # valid/test positions: after every training event


def test_extra_candidates_are_counted_before_the_query_time():
    stats = InteractionStats.fit(TRAIN, StatsConfig(time_mode="sequence", recent_window=5))
    items = ["x", "y", "z", "w"]
    frame = pl.DataFrame({"item_id": items, "text": items})
    builder = FeatureBuilder.from_frame(frame, np.eye(4, dtype=np.float32), stats, FeatureConfig())
    sources = CandidateSources(builder, transitions=2, popular=2)
    histories = [["x"], ["x"], ["w"]]
    extra = sources.extra(histories, np.array([0, -2, 0]), builder.catalogue.state)
    assert [[items[r] for r in rows] for rows in extra] == [["y", "x"], ["x"], ["x", "y"]]
    # step -2 sees only u2's first item (x) for popularity and no x → y yet
    ids, scores = sources.widen([["x"]], np.array([[0.0, 0.5, 0.9, 0.0]], np.float32), [["z"]], [[0.9]],
                                np.array([0]), allowed=lambda row, item: item != "x")
    assert ids == [["z", "y"]] and scores[0] == pytest.approx([0.9, 0.5])


def test_transition_candidates_ignore_successors_counted_only_after_the_query_time():
    # before time 10, x was followed once by s; after it, x is followed twice by each of d1..d4. A query at time 10
    # must get s (the only successor it can know of), as it would with the later events left out; at serving time
    # ("now": every event counted) the d's lead
    rows = [("u0", "x", 0), ("u0", "s", 1)] + [(f"v{d}{n}", item, 20 + t) for d in range(1, 5) for n in range(2)
                                               for t, item in enumerate(["x", f"d{d}"])]
    train = pl.DataFrame(rows, schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Int64}, orient="row")
    items = ["x", "s", "d1", "d2", "d3", "d4"]
    frame = pl.DataFrame({"item_id": items, "text": items})
    stats = InteractionStats.fit(train, StatsConfig(time_mode="absolute", recent_window=5))
    builder = FeatureBuilder.from_frame(frame, np.eye(6, dtype=np.float32), stats, FeatureConfig())
    sources = CandidateSources(builder, transitions=1, popular=0)  # the all-time top 4 successors are the d's
    extra = sources.extra([["x"], ["x"]], np.array([10, stats.end_time]), builder.catalogue.state)
    assert [[items[r] for r in rows] for rows in extra] == [["s"], ["d1"]]


@pytest.fixture(scope="module")
def planted():
    dataset = planted_dataset()
    split = split_dataset(dataset)
    vectors = np.random.default_rng(1).normal(size=(N_ITEMS, 16)).astype(np.float32)
    return Recommender.build(dataset, split, vectors, BuildConfig()), split


def test_transition_candidates_lift_the_ceiling_and_train_split_queries_train(planted):
    recommender, split = planted
    base = RankerConfig(candidates=20, n_estimators=40, early_stopping_rounds=10)
    results = {}
    for name, config in {"towers": base, "widened": base.model_copy(update={"transition_candidates": 3}),
                         "positions": base.model_copy(update={"transition_candidates": 3,
                                                              "train_positions": 2})}.items():
        recommender.reranker, report = train_reranker(recommender, split, config, log=lambda *_: None)
        results[name] = (report, evaluate_reranker(recommender, split.test, ks=(10,)))
    ceiling = {name: result["candidate_recall@20"] for name, (_, result) in results.items()}
    assert ceiling["widened"] > ceiling["towers"] + 0.3  # the planted successor is now a candidate
    assert results["widened"][1]["reranked"]["ndcg@10"] > results["towers"][1]["reranked"]["ndcg@10"] + 0.1
    report = results["positions"][0]
    assert report["train_split_queries"] > report["holdout_queries"] > 0
    assert results["positions"][1]["reranked"]["ndcg@10"] > results["towers"][1]["reranked"]["ndcg@10"] + 0.1
    recommender.reranker = None


def test_the_seeded_ranker_benchmark_reports_each_fit_and_keeps_the_best_on_valid(tmp_path):
    import json

    from benchmarks.ranker import run
    from encoders.loading import load_recommender

    dataset = planted_dataset()
    dataset.save(tmp_path / "data")
    vectors = np.random.default_rng(1).normal(size=(N_ITEMS, 16)).astype(np.float32)
    bundle = Recommender.build(dataset, split_dataset(dataset), vectors, BuildConfig()).save(tmp_path / "b" / "v1")
    config = RankerConfig(candidates=20, n_estimators=30, early_stopping_rounds=5, transition_candidates=3,
                          train_positions=1)
    paths = run(bundle, tmp_path / "data", tmp_path / "out", config, seeds=(0, 1), save_bundle=tmp_path / "best",
                log=lambda *_: None)
    report = json.loads(paths["json"].read_text())
    assert [(r["model"], r["split"]) for r in report["rows"]] == [
        ("retrieval-only", "test"), ("re-ranked, seed 0", "valid (held-out users)"), ("re-ranked, seed 0", "test"),
        ("re-ranked, seed 1", "valid (held-out users)"), ("re-ranked, seed 1", "test")]
    tests = [r["ndcg@10"] for r in report["rows"] if r["split"] == "test" and r["model"] != "retrieval-only"]
    assert report["meta"]["test_spread"]["ndcg@10"] == pytest.approx(max(tests) - min(tests))
    noise = [r["ndcg@10_se"] for r in report["rows"] if r["split"] == "test" and r["model"] != "retrieval-only"]
    assert report["meta"]["test_ndcg@10_se"] == pytest.approx(np.mean(noise)) and 0 < np.mean(noise) < 0.5
    best = report["meta"]["best_seed"]
    valid = {r["model"]: r["ndcg@10"] for r in report["rows"] if r["split"].startswith("valid")}
    assert valid[f"re-ranked, seed {best}"] == max(valid.values())
    loaded = load_recommender(tmp_path / "best")
    assert loaded.reranker.config.seed == best and loaded.reranker.config.transition_candidates == 3


def test_cross_fitted_ranker_takes_the_folds_mean_number_of_trees(planted):
    recommender, split = planted
    config = RankerConfig(candidates=20, n_estimators=40, early_stopping_rounds=10, cv_folds=3, fold_ensemble=False)
    reranker, report = train_reranker(recommender, split, config, log=lambda *_: None)
    assert len(report["fold_trees"]) == 3 and all(1 <= t <= 40 for t in report["fold_trees"])
    assert report["trees"] == reranker.ranker.n_trees == max(1, round(float(np.mean(report["fold_trees"]))))
    recommender.reranker = reranker
    assert evaluate_reranker(recommender, split.test, ks=(10,))["reranked"]["ndcg@10"] > 0.2
    recommender.reranker = None


def test_fold_ensemble_sums_the_fold_models_and_round_trips(planted, tmp_path):
    from recsys.ranker import Ranker

    recommender, split = planted
    config = RankerConfig(candidates=20, n_estimators=40, early_stopping_rounds=10, cv_folds=3, fold_ensemble=True)
    reranker, report = train_reranker(recommender, split, config, log=lambda *_: None)
    assert len(report["fold_trees"]) == 3 and reranker.ranker.n_trees == sum(report["fold_trees"])
    recommender.reranker = reranker
    assert evaluate_reranker(recommender, split.test, ks=(10,))["reranked"]["ndcg@10"] > 0.2
    recommender.reranker = None
    reranker.ranker.save(tmp_path)
    loaded = Ranker.load(tmp_path, compile_trees=False)
    x = np.random.default_rng(0).normal(size=(50, len(loaded.names)))
    np.testing.assert_allclose(loaded.predict(x), reranker.ranker.predict(x), atol=1e-12)


def test_summed_rankers_score_the_sum_and_explain_it():
    import lightgbm as lgb

    from recsys.ranker import Ranker

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4))
    y = (x[:, 0] + rng.normal(size=600) > 0).astype(int)
    parts = [Ranker(lgb.LGBMRanker(n_estimators=n, num_leaves=5, min_child_samples=5, colsample_bytree=0.7,
                                   random_state=seed, verbose=-1).fit(x, y, group=[30] * 20).booster_)
             for seed, n in enumerate((3, 8, 5))]
    summed = Ranker.summed(parts)
    assert summed.n_trees == 16 and summed.names == parts[0].names
    np.testing.assert_allclose(summed.predict(x), sum(p.predict(x) for p in parts), atol=1e-12)
    np.testing.assert_allclose(summed.contributions(x), sum(p.contributions(x) for p in parts), atol=1e-12)
    other = Ranker(lgb.LGBMRanker(n_estimators=2, verbose=-1).fit(x[:, :3], y, group=[30] * 20).booster_)
    with pytest.raises(ValueError, match="same features"):
        Ranker.summed([parts[0], other])


def test_cross_fitted_scheme_benchmark_scores_every_valid_user_with_unseen_rankers(tmp_path):
    import json

    from benchmarks.ranker_folds import run

    dataset = planted_dataset()
    dataset.save(tmp_path / "data")
    vectors = np.random.default_rng(1).normal(size=(N_ITEMS, 16)).astype(np.float32)
    bundle = Recommender.build(dataset, split_dataset(dataset), vectors, BuildConfig()).save(tmp_path / "b" / "v1")
    schemes = {"one fit": {"cv_folds": 0, "n_estimators": 30, "early_stopping_rounds": 5, "candidates": 20},
               "3 folds summed": {"cv_folds": 3, "fold_ensemble": True, "n_estimators": 30,
                                  "early_stopping_rounds": 5, "candidates": 20},
               "5 candidates": {"cv_folds": 0, "n_estimators": 30, "early_stopping_rounds": 5, "candidates": 5}}
    paths = run(bundle, tmp_path / "data", tmp_path / "out", outer=3, schemes=schemes, log=lambda *_: None)
    report = json.loads(paths["json"].read_text())
    rows = {r["scheme"]: r for r in report["rows"]}
    assert set(rows) == set(schemes) and paths["png"].exists() and report["meta"]["frames"] == 2
    # its own frame: among 5 random-vector candidates the target is seldom there to rank
    assert rows["5 candidates"]["ndcg@10"] < 0.1 < rows["one fit"]["ndcg@10"]
    assert rows["5 candidates"]["n_users"] == rows["one fit"]["n_users"]
    assert rows["one fit"]["diff"] == 0.0 and rows["one fit"]["n_users"] == split_dataset(dataset).valid.height
    assert rows["3 folds summed"]["diff"] == pytest.approx(rows["3 folds summed"]["ndcg@10"]
                                                           - rows["one fit"]["ndcg@10"])
    assert rows["one fit"]["ndcg@10"] > 0.2  # the planted successor is learned by rankers that never saw the user
    assert rows["3 folds summed"]["trees"] > rows["one fit"]["trees"]


def test_too_few_users_for_the_folds_fall_back_to_one_fit(planted):
    recommender, split = planted  # 400 valid users: 80 held out, at most 320 to share among 200 folds
    config = RankerConfig(candidates=20, n_estimators=30, early_stopping_rounds=5, cv_folds=200)
    messages = []
    reranker, report = train_reranker(recommender, split, config, log=messages.append)
    assert report["fold_trees"] is None and 1 <= reranker.ranker.n_trees <= 30
    assert any("too few training users for 200 folds" in m for m in messages)


def test_diversify_validation_is_cross_fitted_over_every_valid_user(planted, monkeypatch):
    import recsys.ranker_training as ranker_training
    from benchmarks.diversify import cross_fitted_lists
    from recsys.config import DiversifyConfig
    from recsys.diversify import OFF
    from recsys.evaluation import ListReference, list_metrics
    from recsys.evaluation import list_scores

    recommender, split = planted
    config = RankerConfig(candidates=30, n_estimators=30, early_stopping_rounds=5, cv_folds=2)
    bundle_reranker, _ = train_reranker(recommender, split, config, log=lambda *_: None)
    recommender.reranker = bundle_reranker
    fitted_on, scored = [], []
    real_fit, real_shown = ranker_training.fit_frame, ranker_training.shown_lists
    monkeypatch.setattr(ranker_training, "fit_frame", lambda frame, names, c: fitted_on.append(
        set(frame["user_id"].to_list())) or real_fit(frame, names, c))
    monkeypatch.setattr(ranker_training, "shown_lists", lambda r, part, k: scored.append(
        (r.reranker, set(part["user_id"].to_list()))) or real_shown(r, part, k))
    settings = [OFF, DiversifyConfig(weight=0.5)]
    examples, lists = cross_fitted_lists(recommender, split, settings, outer=4, log=lambda *_: None)
    assert examples.height == split.valid.height and len(fitted_on) == 4
    assert all(len(shown) == 10 for per_setting in lists for shown in per_setting)
    # each fold's users are shown lists by a ranker fitted without them, and every valid user is scored once
    for fold, users in enumerate(fitted_on):
        fold_scored = [seen for reranker, seen in scored[2 * fold:2 * fold + 2]]
        assert fold_scored[0] == fold_scored[1] and not fold_scored[0] & users
    assert sum(len(seen) for _, seen in scored[::2]) == split.valid.height
    assert all(reranker is not bundle_reranker for reranker, _ in scored)
    assert recommender.reranker is bundle_reranker and recommender.config.diversify == BuildConfig().diversify
    targets = examples["target"].to_list()
    state = recommender.catalogue.state
    reference = ListReference(list(state.ids), state.vectors, k=10)
    plain, mmr = (list_scores(shown, targets, (10,), reference) for shown in lists)
    recommender.reranker = None
    assert plain["ndcg@10"] > 0.2  # the planted successor, learned by rankers that never saw the user
    assert mmr["ild@10"] > plain["ild@10"] == pytest.approx(list_metrics(lists[0], reference)["ild@10"])


def test_the_chosen_weight_is_the_largest_within_the_budget():
    from benchmarks.diversify import chosen_weight

    def row(weight, change, threshold=None, split="valid"):
        return {"split": split, "ndcg_change": change, "config": {"weight": weight, "duplicate_threshold": threshold}}

    rows = [row(0.0, 0.0), row(0.2, -0.004), row(0.3, -0.012), row(0.4, -0.009), row(0.5, -0.03),
            row(0.6, 0.0, threshold=0.9), row(0.7, 0.0, split="test")]
    assert chosen_weight(rows, "valid", 0.01) == 0.4  # largest within 1 %, even past a costlier smaller one
    assert chosen_weight(rows, "valid", 0.001) is None


def test_schemes_file_takes_ranker_settings_and_refuses_what_would_change_the_shared_frame(tmp_path):
    import json

    from benchmarks.ranker_folds import load_schemes

    path = tmp_path / "schemes.json"
    path.write_text(json.dumps({"default": {}, "7 leaves": {"num_leaves": 7}}))
    assert load_schemes(path) == {"default": {}, "7 leaves": {"num_leaves": 7}}
    path.write_text(json.dumps({"fewer": {"candidates": 50, "features": {"recent_items": 5}}}))
    assert load_schemes(path) == {"fewer": {"candidates": 50, "features": {"recent_items": 5}}}
    for content, reason in (({"a": {"train_examples": 50}}, "would change which valid users are scored"),
                            ({"a": {"features": {"recent": 5}}}, "features"),
                            ({"a": {"leaves": 7}}, "unknown RankerConfig fields"),
                            ({"a": {"num_leaves": 1}}, "num_leaves"), ([1, 2], "expected a JSON object"),
                            ({}, "expected a JSON object")):
        path.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=reason):
            load_schemes(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read schemes"):
        load_schemes(path)


def test_too_few_hits_for_a_ranker_is_a_clear_data_error():
    from recsys.errors import DataError
    from recsys.ranker import Ranker

    names = ["a", "b"]
    one_query = (np.zeros((3, 2)), np.array([1, 0, 0]), np.array([3]))
    two_queries = (np.zeros((6, 2)), np.array([1, 0, 0, 0, 1, 0]), np.array([3, 3]))
    with pytest.raises(DataError, match="at least 2 training queries"):
        Ranker.fit(one_query, None, names, RankerConfig())
    with pytest.raises(DataError, match="early stopping has nothing to measure"):
        Ranker.fit(two_queries, (np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=int)), names, RankerConfig())
    assert Ranker.fit(two_queries, None, names, RankerConfig(), trees=2).n_trees >= 1
