"""The EASE probe (benchmarks/ease.py; its weights are recsys.ease's, tested in test_ease.py): its scores never
read events at or after a query's time, and the benchmark cross-fits the default re-ranker with and without it."""

import functools
import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from benchmarks.ease import point_in_time_scores, query_groups, target_ndcg_recall
from recsys.splits import split_dataset
from tests.test_ranker import SMALL_RANKER, planted_bundle, planted_dataset


def test_a_query_never_scores_with_events_at_or_after_its_time():
    index = {"a": 0, "b": 1, "c": 2}
    # a and b are bought together only at times 100-101; a and c at 10-11
    train = pl.DataFrame({"user_id": ["u1", "u1", "u2", "u2", "u3", "u3"], "item_id": ["a", "c", "a", "b", "a", "b"],
                          "timestamp": [10, 11, 100, 101, 100, 101]})
    histories, times = [["a"], ["a"]], np.array([50, 200])
    scores = point_in_time_scores(train, histories, times, index, lam=0.5, buckets=2, sequence_time=False)
    assert scores[0, 1] == 0.0 and scores[0, 2] > 0.0  # at time 50 only the a–c purchase exists
    assert scores[1, 1] > scores[1, 2] > 0.0  # at time 200: a–b twice, a–c once
    together = point_in_time_scores(train, histories, times, index, lam=0.5, buckets=2, sequence_time=True)
    np.testing.assert_allclose(together[0], together[1])  # sequence time: one fit on every train event
    assert [g.tolist() for g in query_groups(np.array([5, 1, 3, 2]), 2, False)] == [[1, 3], [2, 0]]


def test_ndcg_and_recall_rank_the_target_among_every_item():
    scores = np.array([[0.9, 0.5, 0.1], [0.1, 0.2, 0.3]], np.float32)
    assert target_ndcg_recall(scores, np.array([0, 0])) == (pytest.approx(0.75), 1.0)  # ranks 0 and 2


def test_benchmark_and_command_cross_fit_the_default_ranker_with_and_without_ease(tmp_path, monkeypatch):
    import benchmarks.ease
    from jobs.cli import app

    # the command as typed; the probe's re-ranker the small one (the id-sequence test's), as the report is checked
    monkeypatch.setattr(benchmarks.ease, "run",
                        functools.partial(benchmarks.ease.run, ranker_overrides=SMALL_RANKER))

    bundle, data = planted_bundle(tmp_path)
    dataset = planted_dataset()
    result = CliRunner().invoke(app, ["bench", "ease", "--bundle", str(bundle), "--data", str(data),
                                      "--out", str(tmp_path / "out"), "--lambdas", "5,50", "--outer", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "ease.json").read_text())
    first, *others = report["rows"]
    assert [r["scheme"] for r in others] == ["+ EASE score, λ 5", "+ EASE score, λ 50"]
    assert first["diff"] == 0.0 and all(r["n_users"] == split_dataset(dataset).valid.height for r in report["rows"])
    assert others[0]["diff"] == pytest.approx(others[0]["ndcg@10"] - first["ndcg@10"])
    assert report["meta"]["time_mode"] == "sequence"
    assert report["meta"]["ease_alone"]["5"]["valid_recall@10"] > 0.3  # the planted successors co-occur
    assert (tmp_path / "out" / "ease.png").exists() and "EASE alone" in (tmp_path / "out" / "ease.md").read_text()
    refused = CliRunner().invoke(app, ["bench", "ease", "--bundle", str(bundle), "--data", str(data),
                                       "--lambdas", "0,x"])
    assert refused.exit_code == 2 and "--lambdas" in refused.output


def test_a_probe_refuses_train_position_queries_it_would_map_to_the_wrong_examples(tmp_path):
    from benchmarks.ease import run

    bundle, data = planted_bundle(tmp_path)
    with pytest.raises(ValueError, match="valid step alone"):
        run(bundle, data, tmp_path / "out", lambdas=[5.0], outer=3, ranker_overrides={"train_positions": 2},
            log=lambda *_: None)
