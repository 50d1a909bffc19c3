"""`recsys train` and `recsys bench quality` end to end on a tiny generated shop with a tiny BERT."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from encoders.bundle import load_recommender
from jobs.cli import app
from recsys.data.synthetic import generate_shop


def test_train_command_writes_an_evaluated_bundle_and_continues_from_it(tiny_bert_dir, tmp_path, monkeypatch):
    import encoders.bundle

    data = generate_shop(n_users=80, n_items=120, seed=0).save(tmp_path / "shop")
    runner = CliRunner()
    args = ["train", "--data", str(data), "--out", str(tmp_path / "art"), "--name", "tiny", "--preset", "smoke",
            "--model", str(tiny_bert_dir), "--epochs", "1", "--threads", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    bundle = next((tmp_path / "art" / "tiny").glob("2*"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {r["split"] for r in manifest["metrics"]} == {"valid", "test"}
    assert (tmp_path / "art" / "tiny" / "runs" / "latest" / "training_curve.png").is_file()
    recommender = load_recommender(tmp_path / "art" / "tiny")
    assert len(recommender.recommend_histories([recommender.item_ids[:3]], 5)[0]) == 5
    real, started_from = encoders.bundle.init_from_bundle, []
    monkeypatch.setattr(encoders.bundle, "init_from_bundle",
                        lambda model, path, item_ids: started_from.append(path) or real(model, path, item_ids))
    again = runner.invoke(app, args + ["--from-bundle", str(bundle), "--name", "tiny2"])
    assert again.exit_code == 0, again.output
    assert started_from == [bundle]  # the towers start from the first bundle's weights
    continued = next((tmp_path / "art" / "tiny2").glob("2*"))
    assert {r["split"] for r in json.loads((continued / "manifest.json").read_text())["metrics"]} == {"valid", "test"}


def test_bench_quality_writes_json_markdown_and_chart(tiny_bert_dir, tmp_path):
    data = generate_shop(n_users=80, n_items=120, seed=0).save(tmp_path / "shop")
    (tmp_path / "cfg.json").write_text(json.dumps({"encoder": {"model": str(tiny_bert_dir)}, "epochs": 1,
                                                   "zero_shot_blend": [0.0, 1.0]}))
    result = CliRunner().invoke(app, ["bench", "quality", "--data", str(data), "--out", str(tmp_path / "res"),
                                      "--variants", "smoke", "--config", str(tmp_path / "cfg.json"),
                                      "--no-baselines", "--threads", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "res" / "quality.json").read_text())
    models = {r["model"] for r in report["rows"]}
    assert {"peft-bert:smoke", "peft-bert:smoke + ranker", "peft-bert:smoke similar items of the last item"} <= models
    assert all(0 <= r["ild@10"] <= 2 and 0 < r["coverage@10"] <= 1 for r in report["rows"])
    # every row carries N@10's standard error over its users: within (0, 0.5] when some but not all users hit
    assert all(0 < r["ndcg@10_se"] <= 0.5 for r in report["rows"] if 0 < r["ndcg@10"] < 1 and r["n_examples"] > 1)
    row = report["rows"][0]  # the blend weight chosen on validation, with each tried weight's NDCG@10
    assert set(row["blend_valid_ndcg"]) == {"0.0", "1.0"} and row["blend_weight"] in (0.0, 1.0)
    assert row["blend_valid_ndcg"][str(row["blend_weight"])] == max(row["blend_valid_ndcg"].values())
    # the re-ranked rows: test only (the valid step trains the ranker), never above their candidates' recall
    ranked = [r for r in report["rows"] if r["model"].endswith("+ ranker")]
    towers = {(r["split"], r["slice"]): r for r in report["rows"] if r["model"] == "peft-bert:smoke"}
    assert {r["split"] for r in ranked} == {"test"} and ("test", "all") in {(r["split"], r["slice"]) for r in ranked}
    for r in ranked:
        assert r["ranker_trees"] >= 1 and r["n_examples"] == towers[("test", r["slice"])]["n_examples"]
        assert r["recall@50"] <= r["candidate_recall"] + 1e-9
        assert r["train_minutes"] > towers[("test", r["slice"])]["train_minutes"]
    # the same ranker with its statistics through the valid step: the towers' candidates are the same ones
    fresh = [r for r in report["rows"] if r["model"] == "peft-bert:smoke + ranker (statistics through valid)"]
    plain = [r for r in report["rows"] if r["model"] == "peft-bert:smoke + ranker" and r["slice"] == "all"]
    assert len(fresh) == len(plain) == 1 and (fresh[0]["split"], fresh[0]["slice"]) == ("test", "all")
    assert fresh[0]["candidate_recall"] == plain[0]["candidate_recall"]
    assert fresh[0]["ranker_trees"] == plain[0]["ranker_trees"]
    markdown = (tmp_path / "res" / "quality.md").read_text()
    assert "peft-bert:smoke" in markdown and "peft-bert:smoke + ranker" in markdown
    assert "not the published protocol" in markdown and "| ± s.e. |" in markdown
    assert (tmp_path / "res" / "quality.png").is_file()
    assert row["stopped"] == "epochs" and "time budget" not in markdown


def test_bench_quality_says_when_the_time_budget_cut_training_short(tiny_bert_dir, tmp_path):
    data = generate_shop(n_users=80, n_items=120, seed=0).save(tmp_path / "shop")
    (tmp_path / "cfg.json").write_text(json.dumps({"encoder": {"model": str(tiny_bert_dir)}, "epochs": 3,
                                                   "max_minutes": 1e-5}))
    result = CliRunner().invoke(app, ["bench", "quality", "--data", str(data), "--out", str(tmp_path / "res"),
                                      "--variants", "smoke", "--config", str(tmp_path / "cfg.json"),
                                      "--no-baselines", "--no-ranker", "--threads", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "res" / "quality.json").read_text())
    assert {r["stopped"] for r in report["rows"]} == {"time budget"}
    assert ("`peft-bert:smoke`: training stopped after epoch 1 of at most 3: its 1e-05-minute time budget"
            in (tmp_path / "res" / "quality.md").read_text())


def test_bench_quality_cold_items_holds_items_out_of_training_and_slices_their_users(tiny_bert_dir, tmp_path):
    import polars as pl

    from recsys.data.dataset import Dataset
    from recsys.splits import split_dataset

    data = generate_shop(n_users=80, n_items=120, seed=0).save(tmp_path / "shop")
    (tmp_path / "cfg.json").write_text(json.dumps({"encoder": {"model": str(tiny_bert_dir)}, "epochs": 1}))
    result = CliRunner().invoke(app, ["bench", "quality", "--data", str(data), "--out", str(tmp_path / "res"),
                                      "--variants", "smoke", "--config", str(tmp_path / "cfg.json"), "--cold-items",
                                      "0.3", "--no-baselines", "--no-ranker", "--threads", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "res" / "quality.json").read_text())
    split = split_dataset(Dataset.load(data))
    train_items = split.train["item_id"].unique()
    held = report["meta"]["cold_items"]["held_out"]
    assert len(held) == round(0.3 * train_items.len()) and set(held) <= set(train_items.to_list())
    cold = split.test.filter(pl.col("target").is_in(held) | ~pl.col("target").is_in(train_items.implode()))
    rows = {(r["split"], r["slice"]): r for r in report["rows"] if r["model"] == "peft-bert:smoke"}
    assert rows[("test", "cold-start")]["n_examples"] == cold.height > 0
    assert f"{len(held):,} of the train split's items" in (tmp_path / "res" / "quality.md").read_text()
    refused = CliRunner().invoke(app, ["bench", "quality", "--data", str(data), "--cold-items", "0.95"])
    assert refused.exit_code == 2 and "less than or equal to 0.9" in refused.output


def test_api_encodes_new_text_with_the_bundles_own_trained_item_tower(tiny_bert_dir, tmp_path):
    """Upserts and text queries must use the trained item tower, not a frozen BERT of the same width."""
    import numpy as np
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings
    from encoders.serving import TrainedItemTower
    from recsys.towers import innermost_tower

    data = generate_shop(n_users=80, n_items=120, seed=0).save(tmp_path / "shop")
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "art"), "--name", "tiny",
                                      "--preset", "smoke", "--model", str(tiny_bert_dir), "--epochs", "1",
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    with TestClient(create_app(tmp_path / "art" / "tiny", Settings(state_dir=tmp_path / "state",
                                                                   admin_token="t"))) as client:
        loaded = client.app.state.service.current
        encoder = loaded.recommender.item_tower()
        assert isinstance(encoder, TrainedItemTower)
        recommender = loaded.recommender
        text = recommender.items["text"][5]  # not row 0, where ties among alike vectors fall
        expected = innermost_tower(recommender.user_tower).encode_item_texts([text])[0]
        np.testing.assert_allclose(encoder.encode([text])[0], expected, rtol=1e-5, atol=1e-6)
        # every catalogue text, encoded on the text-only path, is nearest to its own item (ID embeddings included)
        nearest = (encoder.encode(recommender.items["text"].to_list()) @ recommender.item_vectors.T).argmax(axis=1)
        assert nearest.tolist() == list(range(len(recommender.item_ids)))
        response = client.put("/v1/admin/items/NEW", json={"item_id": "NEW", "text": text},
                              headers={"Authorization": "Bearer t"})
        assert response.status_code == 200
        stored = recommender.item_vectors[recommender.item_position["NEW"]]
        np.testing.assert_allclose(stored, expected, rtol=1e-5, atol=1e-6)  # the trained text-only path
        similar = [i["item_id"] for i in client.get("/v1/items/NEW/similar", params={"k": 3}).json()["items"]]
        assert similar == recommender.similar_items("NEW", 3).item_ids and len(similar) == 3
        # its nearest item is the one whose text it copied (the shown list puts that near-duplicate further back)
        assert recommender.similar_items("NEW", 1, diversify=False).item_ids == [recommender.item_ids[5]]
        # sessions run the trained user tower (off the event loop, batched) and match the recommender's own answer
        session = recommender.item_ids[:3]
        assert not recommender.user_tower.has(session)
        body = client.post("/v1/sessions/recommendations", json={"item_ids": session, "k": 5}).json()
        assert loaded.tower_batches.calls == 1
        assert recommender.user_tower.has(session)  # its vector came from the batch's thread-pool pass, via the cache
        assert body["strategy"] == "session"
        assert [i["item_id"] for i in body["items"]] == recommender.recommend_session(session, 5).item_ids


def test_continual_training_into_another_tower_shape_is_one_error_line(trained_bundle, tiny_bert_dir, tmp_path):
    """--from-bundle with a --config of another tower.dim: one `error:` line (was: a torch RuntimeError)."""
    data = generate_shop(n_users=60, n_items=90, seed=2).save(tmp_path / "shop")
    (tmp_path / "cfg.json").write_text(json.dumps({"encoder": {"model": str(tiny_bert_dir)}, "epochs": 1,
                                                   "tower": {"dim": 24}}))
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "art"), "--preset", "smoke",
                                      "--config", str(tmp_path / "cfg.json"), "--from-bundle", str(trained_bundle),
                                      "--threads", "1"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "continual training keeps the bundle's tower shape" in result.output
    assert "Traceback" not in result.output


def test_a_config_file_that_fails_a_whole_config_check_names_the_check_alone(tmp_path):
    """A --config that breaks a check over several fields (TrainConfig's pooled layers): the check's message,
    not an empty field path and pydantic's "Value error, " before it (was: "invalid setting: : Value error, …")."""
    data = generate_shop(n_users=40, n_items=60, seed=0).save(tmp_path / "shop")
    (tmp_path / "cfg.json").write_text(json.dumps({"tower": {"pool_layers": 3}, "lora": {"top_layers": 1}}))
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "art"),
                                      "--config", str(tmp_path / "cfg.json"), "--threads", "1"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split()).replace(" ", "")  # (the terminal may wrap the file's path)
    assert f"error:{tmp_path / 'cfg.json'}:invalidsetting:tower.pool_layers3needslora.top_layers≥2" in said, said
    assert ": :" not in result.output and "Value error" not in result.output


def test_continual_training_with_a_config_file_changes_the_bundles_settings_not_a_presets(trained_bundle,
                                                                                          tmp_path):
    """--from-bundle with a --config: the file is merged over the bundle's own settings (as the docstring says),
    not over the --preset's (was: the default `cpu` preset's 384-d towers, refused against the bundle's 16-d ones,
    or a silently different model where the shapes happened to fit)."""
    from encoders.bundle import TOWER_META, stored_train_config

    data = generate_shop(n_users=60, n_items=90, seed=2).save(tmp_path / "shop")
    (tmp_path / "cfg.json").write_text(json.dumps({"epochs": 1, "lr": 0.002}))
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "art"), "--name", "more",
                                      "--config", str(tmp_path / "cfg.json"), "--from-bundle", str(trained_bundle),
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    before = stored_train_config(json.loads((trained_bundle / "encoder" / TOWER_META).read_text()))
    bundle = next((tmp_path / "art" / "more").glob("2*"))
    after = stored_train_config(json.loads((bundle / "encoder" / TOWER_META).read_text()))
    assert after.lr == 0.002 and after.epochs == 1
    assert (after.tower, after.lora, after.encoder) == (before.tower, before.lora, before.encoder)


def test_an_index_that_cannot_be_trained_on_the_catalogue_is_refused_before_training(tiny_bert_dir, tmp_path):
    """--index ivf_pq on a catalogue below 2**pq_nbits items: one `error:` line before any epoch (was: a ValueError
    traceback from FAISS's index build after training had run)."""
    data = generate_shop(n_users=40, n_items=60, seed=0).save(tmp_path / "shop")
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "art"), "--name", "pq",
                                      "--preset", "smoke", "--model", str(tiny_bert_dir), "--epochs", "1",
                                      "--threads", "1", "--index", "ivf_pq"])
    assert result.exit_code == 2, result.output
    assert "error: an ivf_pq index needs at least 2**index.pq_nbits = 256 items to train, got 60" in \
        " ".join(result.output.split())
    assert not (tmp_path / "art" / "pq" / "runs").exists()


@pytest.mark.parametrize("tower,message", [
    ({"id_fusion": "concat", "id_dim": 300}, "tower: id_dim 300 must be smaller than dim 32"),
    ({"seq_heads": 3}, "tower: dim 32 is not divisible by seq_heads 3"),
    ({"suppress_history": True, "id_fusion": "sum"}, "tower: suppress_history needs id_embedding=True"),
])
def test_tower_shapes_that_cannot_be_built_are_invalid_settings(tower, message, tmp_path):
    """Tower settings the model cannot be built from: `error: cfg.json: invalid setting: …` when the config is read,
    naming the file (was: a ValueError traceback when the towers were constructed, after the data and BERT had
    loaded; then a line that did not name the file)."""
    data = generate_shop(n_users=40, n_items=60, seed=0).save(tmp_path / "shop")
    (tmp_path / "cfg.json").write_text(json.dumps({"tower": tower}))
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "art"), "--preset", "smoke",
                                      "--config", str(tmp_path / "cfg.json"), "--threads", "1"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split()).replace(" ", "")  # (the terminal may wrap the file's path)
    assert f"error:{tmp_path / 'cfg.json'}:invalidsetting:{message}".replace(" ", "") in said, said


def _train_interrupted(tmp_path: Path, monkeypatch, after_a_checkpoint: bool) -> tuple[int, str, Path]:
    """`recsys train` stopped by Ctrl-C, after the first epoch's checkpoint or before it: (exit code, output on one
    line, the run directory)."""
    import encoders.experiment

    runs = tmp_path / "art" / "cut" / "runs" / "latest"

    def interrupted(*args, **kwargs):
        if after_a_checkpoint:
            (runs / "checkpoint").mkdir(parents=True)
            (runs / "checkpoint" / "trainer.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(encoders.experiment, "train_and_evaluate", interrupted)
    data = generate_shop(n_users=40, n_items=60, seed=0).save(tmp_path / "shop")
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "art"), "--name", "cut",
                                      "--preset", "smoke", "--threads", "1"])
    return result.exit_code, " ".join(result.output.split()), runs


def test_ctrl_c_during_training_says_where_the_checkpoint_is_and_how_to_resume(tmp_path, monkeypatch):
    """Ctrl-C in `recsys train`: one line naming the run directory and `--resume`, exit code 130 (was: a silent
    exit, so nobody learnt that the epochs already trained could be resumed)."""
    code, flat, runs = _train_interrupted(tmp_path, monkeypatch, after_a_checkpoint=True)
    assert code == 130, flat
    assert "interrupted: no bundle written" in flat and "--resume" in flat
    assert str(runs) in flat.replace(" ", "")


def test_ctrl_c_before_the_first_checkpoint_does_not_promise_one(tmp_path, monkeypatch):
    """Ctrl-C before the first epoch finished: no checkpoint to resume from, and the line says so (was: 'the last
    finished epoch's checkpoint is in artifacts/t1/runs/latest: rerun … with --resume', a directory that did not
    exist)."""
    code, flat, runs = _train_interrupted(tmp_path, monkeypatch, after_a_checkpoint=False)
    assert code == 130, flat
    assert "interrupted before the first epoch finished: no bundle and no checkpoint written" in flat
    assert "rerun the same command to start again" in flat and "--resume" not in flat
    assert not runs.exists()


def test_resume_without_a_checkpoint_says_training_starts_at_epoch_1(tmp_path, monkeypatch):
    """--resume with a wrong --name / --out / --run-dir, or before any epoch finished: a note (was: silently a new
    run from epoch 1)."""
    import encoders.experiment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(encoders.experiment, "train_and_evaluate", interrupted)
    data = generate_shop(n_users=40, n_items=60, seed=0).save(tmp_path / "shop")
    args = ["train", "--data", str(data), "--out", str(tmp_path / "art"), "--name", "typo", "--preset", "smoke",
            "--threads", "1"]
    flat = " ".join(CliRunner().invoke(app, [*args, "--resume"]).output.split())
    assert "note: --resume: no checkpoint in" in flat and "training starts at epoch 1" in flat
    checkpoint = tmp_path / "art" / "typo" / "runs" / "latest" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer.json").write_text("{}")
    assert "no checkpoint" not in CliRunner().invoke(app, [*args, "--resume"]).output


def test_resume_with_other_settings_than_the_checkpoints_is_refused_before_training(tmp_path, monkeypatch):
    """`recsys train --resume --epochs 4` on a run's checkpoint of other settings: one `error:` line naming each
    setting with both values, before BERT and the data's texts are loaded (was: the old run's state went on under
    the new schedule, silently)."""
    import encoders.experiment

    calls = []
    monkeypatch.setattr(encoders.experiment, "train_and_evaluate", lambda *a, **k: calls.append(1))
    data = generate_shop(n_users=40, n_items=60, seed=0).save(tmp_path / "shop")
    checkpoint = tmp_path / "art" / "cut" / "runs" / "latest" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer.json").write_text(json.dumps({"config": {"epochs": 3, "max_minutes": 60.0, "seed": 0}}))
    args = ["train", "--data", str(data), "--out", str(tmp_path / "art"), "--name", "cut", "--preset", "smoke",
            "--threads", "1", "--resume", "--max-minutes", "5"]
    result = CliRunner().invoke(app, [*args, "--epochs", "4"])
    assert result.exit_code == 2 and not calls, result.output
    flat = " ".join(result.output.split())
    assert f"error: {checkpoint.parent}: its checkpoint was trained with other settings (epochs: 3 → 4): start a " \
           "fresh run (without --resume, or with another --run-dir), or resume with the checkpoint's settings" in flat
    assert "Traceback" not in result.output

