"""`--index auto|flat|hnsw|ivf_flat|ivf_pq` where bundles are made: the choice, its measured recall in the
manifest, and live catalogue edits on the built kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import recsys.retrieval.choice as choice
from encoders.loading import load_recommender
from jobs.cli import app
from recsys.artifacts import resolve_bundle
from recsys.config import IndexConfig
from recsys.data.synthetic import generate_shop
from recsys.retrieval.factory import default_pq_m, factory_string

runner = CliRunner()


def test_auto_is_exact_for_small_catalogues_and_ivf_pq_with_refine_above_the_threshold():
    auto = IndexConfig(kind="auto")
    assert choice.resolve_index(auto, choice.AUTO_EXACT_BELOW - 1).kind == "flat"
    big = choice.resolve_index(auto, choice.AUTO_EXACT_BELOW)
    assert (big.kind, big.refine) == ("ivf_pq", "fp16") and big.nprobe == choice.AUTO_ANN["nprobe"]
    assert choice.resolve_index(IndexConfig(kind="hnsw"), 10**7).kind == "hnsw"  # an explicit kind is kept
    assert [default_pq_m(d) for d in (384, 512, 32, 7)] == [48, 64, 4, 1]
    assert factory_string(big, 512, 1024) == "IVF1024,PQ64x8,Refine(SQfp16)"
    with pytest.raises(ValueError, match="resolved first"):
        factory_string(auto, 512, 0)


def _check_live_edits(bundle):
    recommender = load_recommender(bundle)
    user = next(iter(recommender.histories))
    first = recommender.recommend_user(user, 5).item_ids
    catalogue = recommender.catalogue
    catalogue.set_active([first[0]], False)
    assert first[0] not in recommender.recommend_user(user, 5).item_ids
    catalogue.remove([first[1]])
    assert first[1] not in recommender.recommend_user(user, 5).item_ids
    vector = recommender.item_vectors[:1] * -1.0
    catalogue.upsert([{"item_id": "NEW-1", "text": "new"}], vector)
    scores, ids = recommender.index.search(vector, 1)
    assert ids[0, 0] == "NEW-1"
    assert catalogue.compact() == 1  # the deleted row reclaimed, the index rebuilt aside and swapped in
    assert len(recommender.index) == len(catalogue.state.ids) \
        and recommender.index.search(vector, 1)[1][0, 0] == "NEW-1"
    after = recommender.recommend_user(user, 5).item_ids
    assert first[0] not in after and first[1] not in after


def test_build_picks_the_index_by_size_and_records_its_recall(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(choice, "AUTO_EXACT_BELOW", 200)  # the tiny shop counts as a large catalogue
    data = generate_shop(n_users=120, n_items=300, seed=1).save(tmp_path / "shop")
    result = runner.invoke(app, ["build", "--data", str(data), "--out", str(tmp_path / "art"), "--name", "big",
                                 "--model", str(tiny_bert_dir), "--eval-users", "50"])
    assert result.exit_code == 0, result.output
    assert "index: ivf_pq" in result.output and "chosen by --index auto for 300 items" in result.output
    assert "50 of 120 (seeded sample)" in " ".join(result.output.replace("│", " ").split())
    bundle = resolve_bundle(tmp_path / "art" / "big")
    manifest = json.loads((bundle / "manifest.json").read_text())
    index = manifest["index"]
    assert (index["requested"], index["kind"], index["exact"]) == ("auto", "ivf_pq", False)
    assert index["faiss"].startswith("IVF") and "PQ4x8,Refine(SQfp16)" in index["faiss"]
    assert 0.0 <= index["recall@100"] <= 1.0 and 0.0 < index["recall@10"] <= 1.0 and index["queries"] > 0
    assert manifest["config"]["index"]["kind"] == "ivf_pq"  # the resolved kind, as the bundle holds it
    assert json.loads((bundle / "index" / "config.json").read_text())["kind"] == "ivf_pq"
    assert {row["sampled_from"] for row in manifest["metrics"]} == {120.0}
    _check_live_edits(bundle)

    result = runner.invoke(app, ["build", "--data", str(data), "--out", str(tmp_path / "art"), "--name", "flat",
                                 "--model", str(tiny_bert_dir), "--index", "flat", "--eval-users", "all"])
    assert result.exit_code == 0, result.output
    flat = json.loads((resolve_bundle(tmp_path / "art" / "flat") / "manifest.json").read_text())
    assert flat["index"] == {"requested": "flat", "kind": "flat", "faiss": "Flat", "items": 300, "exact_below": None,
                             "exact": True}
    assert all("sampled_from" not in row for row in flat["metrics"])


def test_train_takes_an_index_kind(tiny_bert_dir, tmp_path):
    data = generate_shop(n_users=80, n_items=120, seed=0).save(tmp_path / "shop")
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "art"), "--name", "hnsw",
                                 "--preset", "smoke", "--model", str(tiny_bert_dir), "--epochs", "1", "--threads", "1",
                                 "--index", "hnsw", "--deterministic"])
    assert result.exit_code == 0, result.output
    bundle = resolve_bundle(tmp_path / "art" / "hnsw")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["index"]["kind"] == "hnsw" and manifest["index"]["recall@10"] > 0
    assert manifest["train"]["config"]["index"]["kind"] == "hnsw"
    assert manifest["train"]["stopped"] == "epochs" and "stopped: epochs" in " ".join(result.output.split())
    assert manifest["train"]["config"]["deterministic"] is True
    recommender = load_recommender(bundle)
    assert recommender.index.config.kind == "hnsw"
    _check_live_edits(bundle)
    assert np.isfinite(manifest["index"]["recall@100"])
