"""Seed ensembles of trained towers: members = the towers trained alone with those seeds, one inner product =
the mean of their scores, the first-k report, bundle round trip, new item texts, export parts, clear refusals."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from encoders.blend import BlendedHistoryEncoder
from encoders.bundle import init_from_bundle, load_recommender
from encoders.ensemble import ENSEMBLE_KEY, EnsembleUserTower
from encoders.experiment import train_and_evaluate
from jobs.cli import app
from recsys.data.synthetic import generate_shop
from recsys.errors import BundleError
from tests.test_lora import small_config


def _metric(rows, split, name="ndcg@10"):
    return next(r[name] for r in rows if r["split"] == split and r["slice"] == "all")


def test_an_ensemble_serves_the_mean_of_its_members_scores_and_round_trips(tiny_bert_dir, shop, tmp_path):
    dataset, split = shop
    alone = train_and_evaluate(dataset, split, small_config(tiny_bert_dir), name="alone", progress=False)
    config = small_config(tiny_bert_dir, ensemble=2, zero_shot_blend=(0.5,), zero_shot_dims=8)
    trained = train_and_evaluate(dataset, split, config, name="pair", out_root=tmp_path, progress=False)
    blend = trained.recommender.user_tower
    assert isinstance(blend, BlendedHistoryEncoder) and isinstance(blend.trained, EnsembleUserTower)
    ensemble = blend.trained
    d = alone.result.item_vectors.shape[1]
    assert ensemble.widths == [d, d] and blend.trained_dim == 2 * d

    # member 0 is the seed-0 tower trained alone, member 1 another seed's
    vectors = trained.result.item_vectors
    np.testing.assert_allclose(vectors[:, :d], alone.result.item_vectors, atol=1e-5)
    assert not np.allclose(vectors[:, d:], vectors[:, :d], atol=1e-3)
    assert [m.config.seed for m in ensemble.members] == [0, 1]

    # one inner product over the trained block (each block unit length, rows normalised as the index does) =
    # the mean of the members' scores
    histories = split.test["history"].to_list()[:20]
    queries = ensemble.encode_histories(histories)
    members = [m.encode_histories(histories) for m in ensemble.members]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), np.sqrt(2), rtol=1e-5)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(queries @ unit.T, (members[0] @ vectors[:, :d].T + members[1] @ vectors[:, d:].T) / 2,
                               atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, rtol=1e-5)

    # the report: member 0 alone is the lone tower's evaluation (before the blend), then both
    report = trained.ensemble
    assert [m["seed"] for m in report["members"]] == [0, 1] and [r["members"] for r in report["first_k"]] == [1, 2]
    assert report["first_k"][0]["valid_ndcg@10"] == pytest.approx(_metric(alone.rows, "valid"), abs=1e-5)
    assert report["first_k"][0]["test_recall@10"] == pytest.approx(_metric(alone.rows, "test", "recall@10"), abs=1e-5)
    manifest = json.loads((trained.path / "manifest.json").read_text())
    assert manifest["train"]["ensemble"] == report and manifest["train"]["config"]["ensemble"] == 2

    # the bundle: each member in its own directory, the ensemble in encoder.json; loads to the same tower
    info = json.loads((trained.path / "encoder" / "encoder.json").read_text())
    assert info[ENSEMBLE_KEY] == {"members": ["member-0", "member-1"], "dims": [d, d], "seeds": [0, 1]}
    member_meta = json.loads((trained.path / "encoder" / "member-1" / "tower.json").read_text())
    assert member_meta["train_config"]["seed"] == 1 and member_meta["seed"] == 1
    loaded = load_recommender(trained.path)
    assert isinstance(loaded.user_tower.trained, EnsembleUserTower) and loaded.user_tower.config.ensemble == 2
    np.testing.assert_allclose(loaded.user_tower.encode_histories(histories), blend.encode_histories(histories),
                               atol=1e-6)
    assert loaded.recommend_histories(histories, 10) == trained.recommender.recommend_histories(histories, 10)

    # a new item's text goes through each member's text path, then the zero-shot tower
    texts = ["red tent", "laptop sleeve"]  # as many tokens: told apart by their words alone
    vector = loaded.item_tower().encode_items([{"item_id": f"NEW{n}", "text": t} for n, t in enumerate(texts)])
    assert vector.shape == (2, 2 * d + 8)
    for k, member in enumerate(loaded.user_tower.trained.members):
        block = vector[:, k * d:(k + 1) * d]
        np.testing.assert_allclose(block, member.encode_item_texts(texts), atol=1e-6)
        assert np.linalg.norm(block[0] - block[1]) > 1e-2

    from encoders.export import tower_parts
    assert [p.name for p in tower_parts(loaded)] == ["item_tower_member_0", "item_tower_member_1", "zero_shot_tower"]

    # continual training starts from one tower, not from an ensemble
    with pytest.raises(BundleError, match="seed ensemble of 2 towers"):
        init_from_bundle(alone.result.model, trained.path, dataset.items["item_id"].to_list())


def test_train_command_trains_an_ensemble_and_refuses_it_on_ray(tiny_bert_dir, tmp_path):
    data = generate_shop(n_users=80, n_items=120, seed=0).save(tmp_path / "shop")
    args = ["train", "--data", str(data), "--out", str(tmp_path / "art"), "--name", "pair", "--preset", "smoke",
            "--model", str(tiny_bert_dir), "--epochs", "1", "--threads", "1", "--ensemble", "2"]
    refused = CliRunner().invoke(app, args + ["--engine", "ray"])
    assert refused.exit_code == 2 and "one after another" in refused.output
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "seed ensemble" in result.output and "0, 1" in result.output
    runs = tmp_path / "art" / "pair" / "runs" / "latest"
    assert (runs / "member-0" / "metrics.csv").is_file() and (runs / "member-1" / "metrics.csv").is_file()
    again = CliRunner().invoke(app, args[:-2] + ["--from-bundle", str(tmp_path / "art" / "pair"), "--name", "more"])
    assert again.exit_code != 0 and "seed ensemble of 2 towers" in again.output


def test_the_quality_report_notes_each_members_step():
    from benchmarks.quality import ensemble_note

    report = {"members": [{"seed": 4}, {"seed": 5}],
              "first_k": [{"members": 1, "valid_ndcg@10": 0.08, "valid_recall@10": 0.12, "test_ndcg@10": 0.07,
                           "test_recall@10": 0.11},
                          {"members": 2, "valid_ndcg@10": 0.085, "valid_recall@10": 0.125, "test_ndcg@10": 0.075,
                           "test_recall@10": 0.115}]}
    note = ensemble_note("frozen", report)
    assert "seed ensemble of 2 towers (seeds 4, 5)" in note
    assert "2: valid N@10 0.0850 R@10 0.1250, test N@10 0.0750 R@10 0.1150" in note
