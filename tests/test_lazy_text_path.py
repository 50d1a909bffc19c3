"""A served sequence tower loads its BERT (and transformers / peft) only when its item text path is first used."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from encoders.bundle import TOWER_META, load_towers
from encoders.loading import load_recommender
from encoders.serving import TrainedUserTower
from recsys.errors import BundleError
from recsys.towers import innermost_tower

TEXTS = ["black mirrorless camera", "running socks blue"]

SERVE_IN_A_FRESH_PROCESS = """
import json, sys
from encoders.loading import load_recommender
recommender = load_recommender(sys.argv[1])
served = recommender.recommend_batch([recommender.item_ids[:3]], k=5)[0].item_ids
loaded = lambda: {name: name in sys.modules for name in ("transformers", "peft")}
after_history = loaded()
vectors = recommender.user_tower.item_tower().encode_texts(json.loads(sys.argv[2]))
print(json.dumps({"served": len(served), "after_history": after_history, "after_text": loaded(),
                  "vectors": vectors.tolist()}))
"""


def trained_tower(tower) -> TrainedUserTower:
    """The trained tower under the serving wrappers and the zero-shot blend."""
    tower = innermost_tower(tower)
    return tower.trained if hasattr(tower, "trained") else tower


def eager_text_vectors(bundle) -> np.ndarray:
    """The towers' item text path loaded up front, as training and export load it."""
    model, config, tokenizer, load_text = load_towers(bundle / "encoder")
    assert load_text is None and model.bert is not None and tokenizer is not None
    catalogue = trained_tower(load_recommender(bundle).user_tower).catalogue
    vectors = TrainedUserTower(model, config, catalogue, tokenizer).encode_item_texts(TEXTS)
    assert np.linalg.norm(vectors[0] - vectors[1]) > 1e-2  # two texts of three words: two vectors (not all [UNK])
    return vectors


def test_history_queries_run_without_transformers_and_the_text_path_loads_on_first_use(trained_bundle):
    done = subprocess.run([sys.executable, "-c", SERVE_IN_A_FRESH_PROCESS, str(trained_bundle), json.dumps(TEXTS)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["served"] == 5
    assert report["after_history"] == {"transformers": False, "peft": False}
    assert report["after_text"]["transformers"] is True
    np.testing.assert_allclose(np.asarray(report["vectors"]), eager_text_vectors(trained_bundle), atol=1e-5)


def test_a_lazily_loaded_tower_loads_once_for_its_copies_and_saves_its_adapters(trained_bundle, tmp_path):
    tower = trained_tower(load_recommender(trained_bundle).user_tower)
    assert not tower.text_path_loaded and tower.tokenizer is None
    copy = tower.over(tower.catalogue)
    tower.save(tmp_path / "encoder")  # the adapters are part of the towers: saving loads the BERT first
    assert tower.text_path_loaded and copy.text_path_loaded and copy.tokenizer is tower.tokenizer
    assert (tmp_path / "encoder" / "adapter_model.safetensors").is_file()
    model, config, tokenizer, _ = load_towers(tmp_path / "encoder")
    np.testing.assert_allclose(TrainedUserTower(model, config, tower.catalogue, tokenizer).encode_item_texts(TEXTS),
                               eager_text_vectors(trained_bundle), atol=1e-5)


def test_a_missing_backbone_is_refused_when_the_bundle_loads_not_at_the_first_upsert(trained_bundle, tmp_path):
    encoder = tmp_path / "encoder"
    shutil.copytree(trained_bundle / "encoder", encoder)
    meta = json.loads((encoder / TOWER_META).read_text())
    meta["train_config"]["encoder"]["model"] = str(tmp_path / "gone")
    (encoder / TOWER_META).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="not a Hugging Face model directory"):
        load_towers(encoder, lazy_text=True)


@pytest.mark.parametrize("preload", [False, True])
def test_a_worker_loads_the_text_path_at_start_only_when_told_to(trained_bundle, tmp_path, preload):
    from api.service import Service
    from api.settings import Settings

    service = Service(Settings(state_dir=tmp_path / "state", preload_item_tower=preload, warm_user_cache=0,
                               warm_similar_items=0))
    loaded = service.load(trained_bundle)
    assert trained_tower(loaded.recommender.user_tower).text_path_loaded is preload
    vectors = loaded.recommender.item_tower().encode_texts(TEXTS)  # loads it now when it was not preloaded
    np.testing.assert_allclose(vectors[:, :eager_text_vectors(trained_bundle).shape[1]],
                               eager_text_vectors(trained_bundle), atol=1e-5)


def test_towers_on_two_pooled_layers_round_trip_eagerly_and_lazily(tiny_bert_dir, shop, tmp_path):
    from encoders.experiment import train_and_evaluate
    from recsys.config import TowerConfig
    from tests.test_lora import small_config

    dataset, split = shop
    config = small_config(tiny_bert_dir, tower=TowerConfig(dim=16, item_max_length=24, seq_layers=1, pool_layers=2),
                          zero_shot_blend=())
    trained = train_and_evaluate(dataset, split, config, name="tiny", out_root=tmp_path, progress=False)
    model = trained_tower(trained.recommender.user_tower).model
    assert model.item_head.in_features == 2 * model.bert.hidden_size
    meta = json.loads((trained.path / "encoder" / TOWER_META).read_text())
    assert meta["hidden_size"] == 2 * model.bert.hidden_size and meta["train_config"]["tower"]["pool_layers"] == 2
    direct = trained_tower(trained.recommender.user_tower).encode_item_texts(TEXTS)
    np.testing.assert_allclose(eager_text_vectors(trained.path), direct, atol=1e-5)
    lazy = trained_tower(load_recommender(trained.path).user_tower)
    np.testing.assert_allclose(lazy.encode_item_texts(TEXTS), direct, atol=1e-5)
