"""EASE item–item weights in the re-ranker's statistics (recsys/ease.py): the weights are EASE's constrained ridge
regression, each fit counts only the events before its cut, a query reads the latest fit before it, the weights
round-trip through the bundle, and the re-ranker gets the score as a feature only when its statistics hold them."""

import numpy as np
import polars as pl
import pytest

from recsys.ease import EaseConfig, EaseTable, ease_weights, fit_cuts, largest
from recsys.errors import DataError
from recsys.features import FeatureBuilder, FeatureConfig
from recsys.ranker import RankerConfig, _with_older_defaults
from recsys.ranker_training import prepare_training
from recsys.stats import InteractionStats, StatsConfig


def test_each_column_is_the_ridge_regression_of_that_item_on_the_others():
    rng = np.random.default_rng(0)
    x = (rng.random((40, 6)) < 0.4).astype(np.float64)
    users, items = np.nonzero(x)
    repeated = np.concatenate([users, users[:5]]), np.concatenate([items, items[:5]])  # repeats count once
    weights = ease_weights(*repeated, 6, l2=3.0)
    assert np.allclose(np.diag(weights), 0.0)
    for j in range(6):
        others = [k for k in range(6) if k != j]
        a = x[:, others]
        expected = np.linalg.solve(a.T @ a + 3.0 * np.eye(5), a.T @ x[:, j])
        np.testing.assert_allclose(weights[others, j], expected, rtol=1e-4, atol=1e-5)


def test_each_row_keeps_its_largest_weights_padded_with_zeros():
    weights = np.array([[0.0, 0.5, -1.0, 0.2], [0.3, 0.0, 0.1, 0.9], [-0.2, -0.1, 0.0, -0.3], [1, 2, 3, 0]],
                       np.float32)
    columns, values = largest(weights, 2)
    assert [sorted(zip(c, v), key=lambda p: -p[1]) for c, v in zip(columns.tolist(), values.tolist())] == [
        [(1, 0.5), (3, pytest.approx(0.2))], [(3, pytest.approx(0.9)), (0, pytest.approx(0.3))],
        [(2, 0.0), (1, pytest.approx(-0.1))], [(2, 3.0), (1, 2.0)]]
    columns, values = largest(weights[:2, :2], 3)  # fewer items than asked: zero weights pad
    assert columns.shape == (2, 3) and values[:, 2].tolist() == [0.0, 0.0]


def test_cuts_follow_the_users_latest_events_or_every_events_time():
    users = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    ranks = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    latest_after = [3, 5, 9, 10]  # just after each user's latest event
    assert fit_cuts(users, ranks, 10, EaseConfig(fits=4), False).tolist() == [5, 9, 10]
    assert set(fit_cuts(users, ranks, 10, EaseConfig(fits=4), False).tolist()) <= set(latest_after)
    assert fit_cuts(users, ranks, 10, EaseConfig(fits=5, cut_at="events"), False).tolist() == [2, 4, 6, 8, 10]
    assert fit_cuts(users, ranks, 10, EaseConfig(fits=5), True).tolist() == [10]  # sequence time: one fit


def test_a_query_reads_the_latest_fit_before_it_and_never_a_later_event():
    # a and b are bought together only after rank 4; a and c before it
    users = np.array([0, 0, 1, 1, 2, 2])
    items = np.array([0, 2, 0, 1, 0, 1])
    ranks = np.array([0, 1, 4, 5, 4, 5])
    table = EaseTable.fit(users, items, ranks, 3, 6, EaseConfig(l2=0.5, fits=2, cut_at="events"), False)
    assert table.cuts.tolist() == [4, 6]
    sources = np.array([[0, 0, -1], [0, -1, -1], [0, -1, -1]])  # item a twice in the first history
    candidates = np.array([1, 2, 1, 2, 1, -1])
    query = np.array([0, 0, 1, 1, 2, 2])
    scores = table.scores(sources, candidates, query, np.array([4, 6, 3]))
    assert scores[0] == 0.0 and scores[1] > 0.0  # at rank 4 only the a–c purchase exists
    assert scores[2] > scores[3] > 0.0  # at rank 6: a–b twice, a–c once
    assert np.isnan(scores[4]) and np.isnan(scores[5])  # before the first cut: no fit, no score
    once = table.scores(np.array([[0, -1, -1]]), np.array([2]), np.array([0]), np.array([4]))
    assert once[0] == pytest.approx(scores[1])  # an item twice in a history counts once
    unknown = table.scores(np.array([[0, -1, -1]]), np.array([-1]), np.array([0]), np.array([6]))
    assert unknown.tolist() == [0.0]  # a candidate without events: no weight


def sequences(n_users: int = 60, n_items: int = 12, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{int(rng.integers(n_items))}", t) for u in range(n_users) for t in range(5)]
    return pl.DataFrame(rows, schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Int64}, orient="row")


def test_statistics_fit_save_and_load_their_ease_weights(tmp_path):
    train = sequences()
    config = StatsConfig(time_mode="sequence", recent_window=5, ease=EaseConfig(l2=10.0, neighbours=4))
    stats = InteractionStats.fit(train, config)
    assert stats.ease is not None and stats.ease.columns.shape == (1, 12, 4)
    x = np.zeros((60, 12))
    x[train["user_id"].str.slice(1).cast(pl.Int64).to_numpy(), stats.codes(train["item_id"].to_list())] = 1
    row = ease_weights(*np.nonzero(x), 12, 10.0)[stats.code["i3"]]
    expected = sorted(row)[-4:]
    assert sorted(stats.ease.weights[0, stats.code["i3"]].tolist()) == pytest.approx(expected, rel=1e-5)
    src, dst = np.array([[stats.code["i3"], -1]]), np.array([stats.code["i5"], stats.code["i7"]])
    scores = stats.ease_scores(src, dst, np.array([0, 0]), stats.query_times(None, 1))
    stats.save(tmp_path / "s")
    loaded = InteractionStats.load(tmp_path / "s")
    assert loaded.config.ease == config.ease
    np.testing.assert_array_equal(loaded.ease_scores(src, dst, np.array([0, 0]), loaded.query_times(None, 1)), scores)
    InteractionStats.fit(train, config.model_copy(update={"ease": None})).save(tmp_path / "s")  # saved again without
    assert InteractionStats.load(tmp_path / "s").ease is None
    with pytest.raises(DataError, match="no EASE weights"):
        InteractionStats.load(tmp_path / "s").ease_scores(src, dst, np.array([0, 0]), np.zeros(1, np.int64))
    too_many = config.model_copy(update={"ease": EaseConfig(max_items=11)})
    assert InteractionStats.fit(train, too_many).ease is None  # 12 items with events: no fit


def test_the_feature_sums_the_weights_of_the_histories_last_items():
    train = sequences()
    stats = InteractionStats.fit(train, StatsConfig(time_mode="sequence", recent_window=5, ease=EaseConfig()))
    items = pl.DataFrame({"item_id": [f"i{i}" for i in range(13)], "text": [f"item {i}" for i in range(13)]})
    vectors = np.random.default_rng(1).normal(size=(13, 8)).astype(np.float32)
    builder = FeatureBuilder.from_frame(items, vectors, stats, FeatureConfig(ease=True, ease_items=2))
    assert builder.names[-1] == "ease_score"
    frame = builder.build([["i1", "i2", "i4"]], [["i5", "i12"]], [[0.9, 0.8]])
    dense = ease_weights(*np.nonzero(_binary(train, stats)), 12, 200.0)
    code = stats.code
    expected = dense[code["i2"], code["i5"]] + dense[code["i4"], code["i5"]]  # the last 2 items only
    assert frame["ease_score"].to_list() == [pytest.approx(expected, rel=1e-5), 0.0]  # i12: no events
    without = InteractionStats.fit(train, StatsConfig(time_mode="sequence", recent_window=5))
    with pytest.raises(DataError, match="no EASE weights"):
        FeatureBuilder.from_frame(items, vectors, without, FeatureConfig(ease=True))


def _binary(train: pl.DataFrame, stats: InteractionStats) -> np.ndarray:
    x = np.zeros((train["user_id"].n_unique(), len(stats.item_ids)))
    users = train["user_id"].str.slice(1).cast(pl.Int64).to_numpy()
    x[users, stats.codes(train["item_id"].to_list())] = 1
    return x


def test_the_re_ranker_reads_ease_scores_only_when_its_statistics_hold_them():
    from tests.test_ranker import N_ITEMS, planted_recommender

    recommender, split = planted_recommender()
    messages: list[str] = []
    on = prepare_training(recommender, split, RankerConfig(candidates=20, ease={}), messages.append)
    assert "ease_score" in on.builder.names and on.builder.config.ease
    assert on.report["stats"]["ease"]["l2"] == 200.0
    assert on.frame["ease_score"].drop_nulls().len() == on.frame.height  # sequence time: every valid query scored
    off = prepare_training(recommender, split, RankerConfig(candidates=20), messages.append)  # the default: off
    assert "ease_score" not in off.builder.names
    small = RankerConfig(candidates=20, ease={"max_items": N_ITEMS - 1})
    skipped = prepare_training(recommender, split, small, messages.append)
    assert "ease_score" not in skipped.builder.names
    assert any("more than ease.max_items" in m for m in messages)


def test_rankers_saved_before_ease_load_without_it():
    saved = RankerConfig(ease={}).model_dump(mode="json")
    assert RankerConfig.model_validate(_with_older_defaults(saved)).ease == EaseConfig()
    saved.pop("ease")
    assert RankerConfig.model_validate(_with_older_defaults(saved)).ease is None


def test_a_ranker_with_ease_scores_saves_loads_and_refreshes_them(tmp_path):
    from recsys.pipeline import Recommender
    from recsys.ranker_training import train_reranker
    from recsys.stats_refresh import refreshed
    from tests.test_ranker import planted_recommender

    recommender, split = planted_recommender(4)
    config = RankerConfig(candidates=40, n_estimators=30, early_stopping_rounds=5, cv_folds=0, ease={"l2": 20.0})
    recommender.reranker, _ = train_reranker(recommender, split, config, log=lambda *_: None)
    assert "ease_score" in recommender.reranker.builder.names
    histories = split.test["history"].to_list()[:40]
    before = recommender.recommend_batch(histories, 10)
    loaded = Recommender.load(recommender.save(tmp_path / "b" / "v1"))
    assert loaded.reranker.stats.ease is not None and loaded.reranker.config.ease.l2 == 20.0
    assert [r.scores for r in loaded.recommend_batch(histories, 10)] == [r.scores for r in before]
    fresher = refreshed(loaded.reranker, split, "valid")
    assert fresher.stats.config.ease == loaded.reranker.stats.config.ease
    assert not np.array_equal(fresher.stats.ease.weights, loaded.reranker.stats.ease.weights)  # refit with valid


def test_the_statistics_fit_shows_its_ease_fits_when_asked(capsys):
    from recsys.ranker_training import fit_training_stats
    from recsys.splits import split_dataset
    from tests.test_ranker import planted_dataset

    split = split_dataset(planted_dataset())
    fit_training_stats(split, RankerConfig(ease={}), progress=True)
    shown = capsys.readouterr().err
    assert "EASE fits" in shown and "co-occurrence" in shown
    fit_training_stats(split, RankerConfig(ease={}))
    assert "EASE fits" not in capsys.readouterr().err
