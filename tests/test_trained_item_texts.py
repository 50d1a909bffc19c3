"""A new text of an item the towers were trained on keeps its ID block (the towers' own vector for that item with
that text); new items keep the text-only path. Upserts reached every item through the text-only path, so a typo
fix demoted a trained best-seller to a text-only item while its statistics stayed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from encoders.item_bank import encode_texts
from encoders.loading import load_recommender
from encoders.serving import TrainedUserTower
from recsys.data.item_text import item_text
from recsys.towers import innermost_tower

TOKEN = "s3cret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
NEW_TEXT = "waterproof hiking boots, brown leather, size 42"


@pytest.fixture(scope="module")
def concat_bundle(tmp_path_factory, tiny_bert_dir):
    """Towers trained (one epoch, tiny BERT) with the ID embedding as its own block of 6 dimensions."""
    from encoders.experiment import train_and_evaluate
    from recsys.config import TowerConfig
    from recsys.data.synthetic import generate_shop
    from recsys.splits import split_dataset
    from tests.test_lora import small_config

    dataset = generate_shop(n_users=60, n_items=90, seed=2)
    tower = TowerConfig(dim=16, item_max_length=24, history_max_length=48, seq_layers=1, id_fusion="concat",
                        id_dim=6)
    trained = train_and_evaluate(dataset, split_dataset(dataset), small_config(tiny_bert_dir, tower=tower),
                                 name="concat", out_root=tmp_path_factory.mktemp("concat"), progress=False)
    return trained.path


@pytest.fixture(params=["sum", "concat"])
def bundle(request, trained_bundle, concat_bundle):
    """The session's trained bundle (ID embedding added to the text vector) and one with an ID block."""
    return trained_bundle if request.param == "sum" else concat_bundle


def trained_tower(recommender) -> TrainedUserTower:
    tower = innermost_tower(recommender.user_tower)
    tower.load_text_path()
    return tower


def trained_item(tower: TrainedUserTower) -> str:
    """The catalogue item with the largest ID code."""
    ids = [i for i in tower.catalogue.state.ids.tolist() if tower.model.id_mask[tower.training_position[i]] > 0]
    with torch.no_grad():
        codes = tower.model.id_codes(torch.as_tensor([tower.training_position[i] for i in ids]))
    best = int(codes.norm(dim=1).argmax())
    assert float(codes[best].norm()) > 1e-3
    return ids[best]


def towers_vector(tower: TrainedUserTower, item_id: str | None, text: str) -> np.ndarray:
    """What the towers compute for `item_id` with (rendered) `text`: `item_vectors` over the text's pooled features
    at the item's training position (the text-only path without one)."""
    features = torch.as_tensor(encode_texts(tower.model.bert, tower.tokenizer, [text],
                                            tower.config.tower.item_max_length, tower.device))
    with torch.no_grad():
        if item_id is None:
            return tower.model.text_only_vectors(features).numpy()[0]
        return tower.model.item_vectors(features, torch.tensor([tower.training_position[item_id]])).numpy()[0]


def id_block(tower: TrainedUserTower, vector: np.ndarray) -> np.ndarray:
    return vector[tower.model.config.dim - tower.model.id_dim:]


def with_a_new_text(recommender, item: str) -> tuple[dict, str]:
    """(`item`'s record with NEW_TEXT, that text as the item tower renders it), after checking that its catalogue
    text through the item tower's path gives back the vector it is served with."""
    item_tower, state = recommender.item_tower(), recommender.catalogue.state
    record = recommender.item_records([item])[0]
    np.testing.assert_allclose(item_tower.encode_items([record])[0], state.vectors[state.position[item]], atol=1e-5)
    changed = {**record, "text": NEW_TEXT}
    return changed, item_text(changed, item_tower.template)


def test_a_new_text_of_a_trained_item_is_the_towers_vector_with_its_id_code(bundle):
    recommender = load_recommender(bundle)
    tower, item_tower = trained_tower(recommender), recommender.item_tower()
    item = trained_item(tower)
    changed, text = with_a_new_text(recommender, item)
    vectors = item_tower.encode_items([changed, {**changed, "item_id": "brand-new"}, {**changed, "item_id": None}])
    expected = towers_vector(tower, item, text)
    np.testing.assert_allclose(vectors[0], expected, atol=1e-5)
    np.testing.assert_allclose(vectors[1], towers_vector(tower, None, text), atol=1e-5)  # a new item: text only
    np.testing.assert_allclose(vectors[2], vectors[1], atol=1e-6)
    assert np.linalg.norm(vectors[0] - vectors[1]) > 1e-3
    if tower.model.id_dim:
        # the ID block is the item's ID code scaled as item_vectors scales it; a new item's is zero
        with torch.no_grad():
            code = tower.model.id_codes(torch.tensor([tower.training_position[item]])).numpy()[0]
            head = tower.model._head(torch.as_tensor(encode_texts(
                tower.model.bert, tower.tokenizer, [text], tower.config.tower.item_max_length, tower.device)))
        scale = 1 / np.linalg.norm(np.concatenate([head.numpy()[0], code]))
        np.testing.assert_allclose(id_block(tower, vectors[0]), code * scale, atol=1e-6)
        assert np.abs(code).sum() > 1e-3 and not id_block(tower, vectors[1]).any()
    # the free-text query path names no item: text only
    np.testing.assert_allclose(item_tower.encode_texts([text])[0], vectors[1], atol=1e-6)


def test_an_upsert_of_a_new_text_keeps_a_trained_items_id_block_through_the_api(bundle, tmp_path):
    from api.app import create_app
    from api.service import Service
    from api.settings import Settings

    service = Service(Settings(state_dir=tmp_path / "state", admin_token=TOKEN, warm_user_cache=0,
                               warm_similar_items=0))
    with TestClient(create_app(bundle, service=service)) as client:
        recommender = service.current.recommender
        tower = trained_tower(recommender)
        item = trained_item(tower)
        body = {k: v for k, v in recommender.item_records([item])[0].items() if k != "item_id" and v is not None}
        state = recommender.catalogue.state
        served = state.vectors[state.position[item]].copy()
        assert client.put(f"/v1/admin/items/{item}", json=body, headers=ADMIN).status_code == 200
        state = service.current.recommender.catalogue.state
        np.testing.assert_array_equal(state.vectors[state.position[item]], served)  # the same text: as served

        for item_id in (item, "brand-new"):
            answer = client.put(f"/v1/admin/items/{item_id}", json={**body, "text": NEW_TEXT}, headers=ADMIN)
            assert answer.status_code == 200, answer.text
        state = service.current.recommender.catalogue.state
        text = state.record(item)["text"]
        assert text == item_text({**body, "text": NEW_TEXT}, recommender.item_tower().template)
        np.testing.assert_allclose(state.vectors[state.position[item]], towers_vector(tower, item, text), atol=1e-5)
        new = state.vectors[state.position["brand-new"]]
        np.testing.assert_allclose(new, towers_vector(tower, None, text), atol=1e-5)
        if tower.model.id_dim:
            assert np.abs(id_block(tower, state.vectors[state.position[item]])).sum() > 1e-3
            assert not id_block(tower, new).any()


def test_with_neighbour_features_a_known_items_text_part_is_a_new_items_and_its_id_block_its_code():
    """Towers that keep no item's own neighbours (saved before stop 59; tests/test_own_neighbours.py has those that
    do): the text part of a trained item's new text is computed as a new item's (own features in both blocks), its
    ID block is its code."""
    from encoders.towers import TwoTowerModel
    from recsys.config import TowerConfig

    torch.manual_seed(0)
    model = TwoTowerModel(None, 4, TowerConfig(dim=16, id_fusion="concat", id_dim=6, neighbour_features=True,
                                               seq_layers=1), hidden_size=12).eval()
    model.id_mask.copy_(torch.tensor([1.0, 1.0, 0.0, 1.0]))
    features, positions = torch.randn(4, 12), torch.tensor([0, 2, 3, -1])  # −1: an item added after training
    with torch.no_grad():
        known = model.item_text_vectors(features, positions)
        text_only = model.text_only_vectors(features)
        codes = model.id_codes(positions.clamp(min=0)) * (positions >= 0)[:, None]
        head = model._head(torch.cat([features, features], dim=-1))  # own features in the neighbour block too
    expected = torch.cat([head, codes], dim=-1)
    torch.testing.assert_close(known, expected / expected.norm(dim=1, keepdim=True))
    torch.testing.assert_close(text_only[:, :10], head / head.norm(dim=1, keepdim=True))
    assert codes[[0, 2]].abs().sum(dim=1).min() > 0 and not codes[[1, 3]].any()
    torch.testing.assert_close(known[[1, 3]], text_only[[1, 3]])  # unseen in training, added later: text only
