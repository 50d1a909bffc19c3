"""The zero-shot text prior blended into trained towers: scores, weight choice, bundle round trip, live items."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from encoders.blend import BLEND_KEY, BlendedHistoryEncoder, principal_projection
from encoders.bundle import load_recommender
from encoders.experiment import train_and_evaluate
from encoders.text_encoder import TextEncoder
from recsys.errors import BundleError
from tests.test_lora import small_config


def test_blended_towers_score_trained_plus_weighted_zero_shot_and_round_trip(tiny_bert_dir, shop, tmp_path):
    dataset, split = shop
    config = small_config(tiny_bert_dir, zero_shot_blend=(0.5,), zero_shot_dims=8)
    trained = train_and_evaluate(dataset, split, config, name="tiny", out_root=tmp_path, progress=False)
    recommender, tower = trained.recommender, trained.recommender.user_tower
    assert isinstance(tower, BlendedHistoryEncoder) and trained.blend["weight"] == 0.5
    d = tower.trained_dim
    bert_vectors = TextEncoder.from_config(config.encoder).encode(dataset.items["text"].to_list())
    projection = principal_projection(bert_vectors, 8)  # the zero-shot block: the top 8 principal directions,
    zero_shot = bert_vectors @ projection.T  # each row back to unit length
    zero_shot /= np.linalg.norm(zero_shot, axis=1, keepdims=True)
    np.testing.assert_allclose(np.linalg.norm(recommender.item_vectors, axis=1), np.sqrt(2), rtol=1e-5)
    assert recommender.item_vectors.shape == (dataset.items.height, d + 8)
    np.testing.assert_allclose(recommender.item_vectors[:, d:], zero_shot, atol=1e-6)

    histories = split.test["history"].to_list()[:20]
    queries = tower.encode_histories(histories)
    trained_part = tower.trained.encode_histories(histories)
    pooled_part = tower.pooled.encode_histories(histories)
    np.testing.assert_allclose(queries @ recommender.item_vectors.T,
                               trained_part @ recommender.item_vectors[:, :d].T + 0.5 * pooled_part @ zero_shot.T,
                               atol=1e-5)

    info = json.loads((trained.path / "encoder" / "encoder.json").read_text())
    assert info[BLEND_KEY]["weight"] == 0.5 and info[BLEND_KEY]["trained_dim"] == d and info["dim"] == queries.shape[1]
    np.testing.assert_array_equal(np.load(trained.path / "encoder" / info[BLEND_KEY]["projection"]), projection)
    loaded = load_recommender(trained.path)
    np.testing.assert_allclose(loaded.user_tower.encode_histories(histories), queries, atol=1e-6)
    assert loaded.recommend_histories(histories, 10) == recommender.recommend_histories(histories, 10)

    # a new item's text goes through both item towers, and histories can use it at once
    text = dataset.items["text"][5]
    vector = loaded.user_tower.encode_item_texts([text])
    np.testing.assert_allclose(vector[0, d:], zero_shot[5], atol=1e-5)
    scores = np.sort(zero_shot @ vector[0, d:])  # its zero-shot block is item 5's alone (not all texts alike)
    assert scores[-1] > scores[-2] + 1e-3
    np.testing.assert_allclose(vector[0, :d], loaded.user_tower.trained.encode_item_texts([text])[0], atol=1e-6)
    np.testing.assert_allclose(loaded.item_tower().encode_items([{"item_id": "NEW", "text": text}]), vector, atol=1e-6)
    loaded.catalogue.upsert([{"item_id": "NEW", "text": text}], vector)
    new_query = loaded.user_tower.encode_histories([["NEW"]])[0]
    assert np.any(new_query[:d]) and np.any(new_query[d:])


def test_the_blend_weight_is_the_best_on_validation_and_zero_means_no_blend(tiny_bert_dir, shop):
    dataset, split = shop
    trained = train_and_evaluate(dataset, split, small_config(tiny_bert_dir, zero_shot_blend=(0.0, 1.0)),
                                 name="tiny", progress=False)
    scores = {float(w): v for w, v in trained.blend["valid_ndcg"].items()}
    assert set(scores) == {0.0, 1.0}
    best = max(scores, key=lambda w: (scores[w], -w))
    assert trained.blend["weight"] == best
    blended = isinstance(trained.recommender.user_tower, BlendedHistoryEncoder)
    assert blended == (best > 0)
    assert trained.recommender.item_vectors.shape[1] == trained.result.item_vectors.shape[1] + (32 if blended else 0)


def test_a_ranker_with_block_similarity_reads_the_blend_width_and_keeps_it_in_its_bundle(tiny_bert_dir, shop,
                                                                                          tmp_path):
    from recsys.features import FeatureConfig
    from recsys.ranker import RankerConfig, Reranker
    from recsys.ranker_training import blended_trained_dim, train_reranker
    from recsys.user_tower import CachedHistoryEncoder

    dataset, split = shop
    config = small_config(tiny_bert_dir, zero_shot_blend=(0.5,), zero_shot_dims=8)
    trained = train_and_evaluate(dataset, split, config, name="tiny", out_root=tmp_path, progress=False)
    recommender = trained.recommender
    ranker_config = RankerConfig(candidates=30, n_estimators=20, cv_folds=0,
                                 features=FeatureConfig(block_similarity=True))
    recommender.reranker, _ = train_reranker(recommender, split, ranker_config, log=lambda *_: None)
    d = recommender.user_tower.trained_dim
    assert recommender.reranker.config.features.trained_dim == d
    wrapped = SimpleNamespace(user_tower=CachedHistoryEncoder(recommender.user_tower))  # as the API serves it
    assert blended_trained_dim(wrapped) == d
    assert {"sim_last_towers", "sim_max_text"} <= set(recommender.reranker.builder.names)
    path = recommender.save(tmp_path / "engine" / "v1")
    loaded = load_recommender(path)
    assert loaded.reranker.config.features.trained_dim == d
    assert loaded.reranker.builder.names == recommender.reranker.builder.names
    histories = split.test["history"].to_list()[:20]
    assert [r.item_ids for r in loaded.recommend_batch(histories, 10)] == \
        [r.item_ids for r in recommender.recommend_batch(histories, 10)]
    spec_file = path / "ranker" / "features.json"  # a spec whose trained block leaves no zero-shot block
    spec = json.loads(spec_file.read_text())
    spec["ranker"]["features"]["trained_dim"] = loaded.catalogue.dim
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="leaves no zero-shot block"):  # (load_recommender: checksum first)
        Reranker.load(path, loaded.catalogue)
