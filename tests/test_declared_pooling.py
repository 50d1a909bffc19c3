"""Pooling "auto": a sentence-transformers model directory's own pooling (CLS for the BGE family, mean for MiniLM)
is what the encoders run and what bundles record; an explicit setting wins."""

import json
import shutil

import numpy as np
import pytest
import torch

from encoders.backbone import declared_pooling, load_backbone, resolved_pooling
from encoders.pooling import pool
from encoders.text_encoder import TextEncoder, load_text_encoder
from recsys.config import EncoderConfig

TEXTS = ["black mirrorless camera", "camera bag", "running shoe blue"]


def declare(directory, **modes) -> None:
    """Write sentence-transformers' modules.json and 1_Pooling/config.json into a model directory."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "1_Pooling").mkdir(exist_ok=True)
    settings = {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
                "pooling_mode_max_tokens": False, **{f"pooling_mode_{k}": v for k, v in modes.items()}}
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(settings))


@pytest.fixture
def cls_model(tiny_bert_dir, tmp_path):
    directory = tmp_path / "cls-bert"
    shutil.copytree(tiny_bert_dir, directory)
    declare(directory, cls_token=True)
    return directory


def test_the_declared_pooling_is_read_from_the_model_files(tiny_bert_dir, tmp_path):
    assert declared_pooling("default") == "mean"  # the shipped MiniLM declares mean pooling
    assert declared_pooling(str(tiny_bert_dir)) is None  # a plain BERT directory declares none
    for modes, expected in (({"cls_token": True}, "cls"), ({"mean_tokens": True}, "mean"),
                            ({"max_tokens": True}, None), ({"cls_token": True, "mean_tokens": True}, None),
                            ({"mean_tokens": True, "weightedmean_tokens": True}, None)):
        directory = tmp_path / "-".join(modes)
        directory.mkdir()
        declare(directory, **modes)
        assert declared_pooling(str(directory)) == expected, modes
    (directory / "modules.json").write_text("not json")
    assert declared_pooling(str(directory)) is None
    assert resolved_pooling("auto", str(directory)) == "mean" and resolved_pooling("cls", str(tiny_bert_dir)) == "cls"


def test_auto_encodes_with_the_declared_cls_pooling_and_an_explicit_setting_wins(cls_model):
    backbone, tokenizer = load_backbone(str(cls_model))
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = backbone(**batch).last_hidden_state
    expected = {method: torch.nn.functional.normalize(pool(hidden, batch["attention_mask"], method), dim=-1).numpy()
                for method in ("cls", "mean")}
    assert np.abs(expected["cls"] - expected["mean"]).max() > 0.05  # the two poolings give other vectors
    cpu = torch.device("cpu")
    auto = TextEncoder.from_config(EncoderConfig(model=str(cls_model)), cpu)
    assert auto.config.pooling == "cls"
    np.testing.assert_allclose(auto.encode(TEXTS), expected["cls"], atol=1e-5)
    mean = TextEncoder.from_config(EncoderConfig(model=str(cls_model), pooling="mean"), cpu)
    np.testing.assert_allclose(mean.encode(TEXTS), expected["mean"], atol=1e-5)
    onnx = load_text_encoder(EncoderConfig(model=str(cls_model), backend="onnx"), cpu)  # its graph pools as declared
    np.testing.assert_allclose(onnx.encode(TEXTS), expected["cls"], atol=1e-4)


def test_build_and_train_record_the_pooling_they_ran_and_serving_runs_it(cls_model, tmp_path):
    from typer.testing import CliRunner

    from encoders.bundle import load_towers
    from jobs.cli import app
    from recsys.artifacts import resolve_bundle

    def run(*args):
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result

    run("import", "synthetic", "--out", tmp_path / "shop", "--users", 60, "--items", 80, "--seed", 3)
    run("build", "--data", tmp_path / "shop", "--model", cls_model, "--out", tmp_path / "art", "--name", "zs",
        "--encoder", "torch")
    built = resolve_bundle(tmp_path / "art" / "zs")
    assert json.loads((built / "config.json").read_text())["encoder"]["pooling"] == "cls"
    run("build", "--data", tmp_path / "shop", "--model", cls_model, "--out", tmp_path / "art", "--name", "zs-mean",
        "--encoder", "torch", "--pooling", "mean")
    mean = resolve_bundle(tmp_path / "art" / "zs-mean")
    assert json.loads((mean / "config.json").read_text())["encoder"]["pooling"] == "mean"
    vectors = [np.load(bundle / "embeddings" / "items.npy") for bundle in (built, mean)]
    assert np.abs(vectors[0] - vectors[1]).max() > 0.05
    run("train", "--data", tmp_path / "shop", "--preset", "smoke", "--model", cls_model, "--out", tmp_path / "art",
        "--name", "tt")
    trained = resolve_bundle(tmp_path / "art" / "tt")
    tower_json = next(trained.glob("encoder*/tower.json"))
    stored = json.loads(tower_json.read_text())["train_config"]
    assert stored["tower"]["pooling"] == stored["encoder"]["pooling"] == "cls"
    model = load_towers(tower_json.parent)[0]  # as serving loads it: pools [CLS]
    assert model.bert.pooling == "cls"
