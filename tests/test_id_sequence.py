"""The ID-only sequence probe (benchmarks/id_sequence.py): the model learns a planted successor, histories are
padded as documented, and the benchmark cross-fits the default re-ranker with and without its features."""

import json

import numpy as np
import pytest
import torch

from benchmarks.id_sequence import MAX_LENGTH, left_padded, target_ranks, train_sequence_model
from recsys.splits import split_dataset
from tests.test_ranker import SMALL_RANKER, planted_bundle, planted_dataset


def test_histories_are_left_padded_truncated_and_unknown_items_become_padding():
    index = {"a": 1, "b": 2}
    x = left_padded([["a", "b"], ["zz", "a"], ["a"] * (MAX_LENGTH + 5)], index)
    assert x.shape == (3, MAX_LENGTH)
    assert x[0, -2:].tolist() == [1, 2] and (x[0, :-2] == 0).all()
    assert x[1, -2:].tolist() == [0, 1]
    assert (x[2] == 1).all()


def test_the_model_learns_a_planted_successor_from_ids_alone():
    rng = np.random.default_rng(0)
    n = 20
    items = [f"i{k}" for k in range(n)]
    index = {item: k + 1 for k, item in enumerate(items)}
    starts = rng.integers(0, n, 300)
    sequences = [[items[(s + t) % n] for t in range(8)] for s in starts]
    valid_x = left_padded([s[:5] for s in sequences[:50]], index)
    valid_targets = np.array([index[s[5]] for s in sequences[:50]])
    model = train_sequence_model(sequences, index, valid_x, valid_targets, max_epochs=40, patience=1, lr=5e-3,
                                 log=lambda *_: None)
    ranks = target_ranks(model.catalogue_scores(valid_x), valid_targets)
    assert (ranks == 0).mean() > 0.9  # the successor comes first
    scores = model.catalogue_scores(valid_x[:2])
    assert scores.shape == (2, n + 1) and torch.isinf(scores[:, 0]).all()  # padding is never recommended


def test_benchmark_cross_fits_the_default_ranker_with_and_without_the_model(tmp_path):
    from benchmarks.id_sequence import run

    bundle, data = planted_bundle(tmp_path)
    dataset = planted_dataset()
    paths = run(bundle, data, tmp_path / "out", outer=3, max_epochs=10, log=lambda *_: None,
                ranker_overrides=SMALL_RANKER)
    report = json.loads(paths["json"].read_text())
    first, second = report["rows"]
    assert first["diff"] == 0.0 and first["n_users"] == second["n_users"] == split_dataset(dataset).valid.height
    assert second["diff"] == pytest.approx(second["ndcg@10"] - first["ndcg@10"])
    assert report["meta"]["id_model"]["valid"][0] > 0.2  # the planted successor, learned from IDs alone
    assert report["meta"]["id_model"]["max_epochs"] == 10
    assert paths["png"].exists() and "ID-only model" in paths["md"].read_text()


def test_catalogue_ranks_count_the_items_scored_strictly_higher():
    from benchmarks.id_sequence import catalogue_ranks

    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, (7, 30)).astype(np.float32)     # many ties
    rows, items = rng.integers(0, 7, 200), rng.integers(0, 30, 200)
    expected = (scores[rows] > scores[rows, items][:, None]).sum(1)
    np.testing.assert_array_equal(catalogue_ranks(scores, rows, items), expected)


def test_the_command_caps_the_id_models_epochs(tmp_path, monkeypatch):
    """`recsys bench id-sequence --max-epochs N` (was: no cap; 65 epochs, 22 minutes on a synthetic shop under
    load, with no way to shorten it)."""
    import benchmarks.id_sequence
    from typer.testing import CliRunner

    from jobs.cli import app

    asked = {}

    def run(*args, **kwargs):
        asked.update(kwargs)
        return {}

    monkeypatch.setattr(benchmarks.id_sequence, "run", run)
    args = ["bench", "id-sequence", "--bundle", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert CliRunner().invoke(app, [*args, "--max-epochs", "20"]).exit_code == 0
    assert asked["max_epochs"] == 20
    refused = CliRunner().invoke(app, [*args, "--max-epochs", "0"])
    assert refused.exit_code == 2 and "--max-epochs" in refused.output
