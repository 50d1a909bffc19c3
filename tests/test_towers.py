"""Tower building blocks: cached lower layers, the causal sequence model, text rendering, one output space."""

import numpy as np
import polars as pl
import torch

from encoders.backbone import load_backbone
from encoders.history_text import render_history
from encoders.lora import attach_adapters
from encoders.pooling import mean_pool
from encoders.sequence_model import SequenceModel
from encoders.serving import TrainedUserTower
from encoders.towers import AdaptedBert, TwoTowerModel
from recsys.catalogue import Catalogue
from recsys.config import LoraConfig, TowerConfig, TrainConfig


def test_cached_lower_layers_plus_adapted_top_equal_the_full_model(tiny_bert_dir):
    backbone, tokenizer = load_backbone(str(tiny_bert_dir))
    batch = tokenizer(["black mirrorless camera", "camera bag", "running shoe blue"], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        reference = mean_pool(backbone(**batch).last_hidden_state, batch["attention_mask"])
    assert torch.dist(reference[0], reference[2]) > 0.05  # as many tokens, other words: apart (not all [UNK])
    for top in (1, None):
        bert = AdaptedBert(attach_adapters(backbone, LoraConfig(top_layers=top)), top).eval()
        with torch.no_grad():
            hidden = bert.lower(batch["input_ids"], batch["attention_mask"])
            torch.testing.assert_close(bert.upper(hidden, batch["attention_mask"]), reference, atol=1e-5, rtol=1e-4)
        backbone = bert.model.unload()  # plain backbone again for the next round


def test_pooled_layers_are_the_last_layers_mean_pools_side_by_side(tiny_bert_dir):
    import pytest
    from pydantic import ValidationError

    backbone, tokenizer = load_backbone(str(tiny_bert_dir))
    batch = tokenizer(["black mirrorless camera", "camera bag", "running shoe blue"], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        states = backbone(**batch, output_hidden_states=True).hidden_states  # embeddings, layer 1, layer 2
    pools = [mean_pool(state, batch["attention_mask"]) for state in states]
    for top, layers, expected in ((1, 2, pools[1:]), (None, 3, pools), (None, 2, pools[1:])):
        bert = AdaptedBert(attach_adapters(backbone, LoraConfig(top_layers=top)), top, pool_layers=layers).eval()
        with torch.no_grad():
            features = bert(batch["input_ids"], batch["attention_mask"])
        assert bert.feature_size == features.shape[1] == layers * bert.hidden_size
        torch.testing.assert_close(features, torch.cat(expected, dim=1), atol=1e-5, rtol=1e-4)
        backbone = bert.model.unload()
    with pytest.raises(ValueError, match="at most 2 here"):
        AdaptedBert(backbone, 1, pool_layers=3)
    with pytest.raises(ValidationError, match="needs lora.top_layers ≥ 2"):
        TrainConfig(tower=TowerConfig(pool_layers=3), lora=LoraConfig(top_layers=1))


def test_sequence_model_is_causal_and_ignores_padding():
    torch.manual_seed(0)
    model = SequenceModel(dim=16, max_len=8, layers=2, heads=2, dropout=0.0).eval()
    items = torch.randn(1, 5, 16)
    changed = items.clone()
    changed[0, 4] += 1.0
    with torch.no_grad():
        a, b = model(items, torch.tensor([5])), model(changed, torch.tensor([5]))
        torch.testing.assert_close(a[:, :4], b[:, :4])
        padded = torch.cat([items[:, :3], torch.randn(1, 2, 16)], dim=1)
        torch.testing.assert_close(model.last(padded, torch.tensor([3])), model.last(items[:, :3], torch.tensor([3])),
                                   atol=1e-5, rtol=1e-4)


def test_history_text():
    assert render_history([0, 1, 2], ["x", "y", "z"], " ; ", max_items=2) == "z ; y"


def test_every_user_tower_lands_in_the_item_space(tiny_bert_dir):
    backbone, tokenizer = load_backbone(str(tiny_bert_dir))
    bert = AdaptedBert(attach_adapters(backbone, LoraConfig(top_layers=1)), 1)
    item_ids = ["i0", "i1", "i2", "i3"]
    vectors = np.eye(4, 16, dtype=np.float32)
    for mode in ("sequence", "text", "fusion"):
        tower = TowerConfig(user_tower=mode, dim=16, seq_layers=1)
        model = TwoTowerModel(bert, len(item_ids), tower)
        catalogue = Catalogue(pl.DataFrame({"item_id": item_ids, "text": ["black camera", "camera bag",
                                                                          "running shoe", "socks"]}), vectors)
        user = TrainedUserTower(model, TrainConfig(tower=tower), catalogue, tokenizer)
        out = user.encode_histories([["i0", "i2"], [], ["unknown"], ["i3"]])
        assert out.shape == (4, 16) and user.dim == 16
        np.testing.assert_allclose(np.linalg.norm(out[[0, 3]], axis=1), 1.0, rtol=1e-5)
        assert not out[1].any() and not out[2].any()  # nothing known → popularity fallback


def test_text_only_path_encodes_new_items_like_the_catalogue(tiny_bert_dir):
    import torch

    from encoders.item_bank import ItemTextCache
    backbone, tokenizer = load_backbone(str(tiny_bert_dir))
    bert = AdaptedBert(attach_adapters(backbone, LoraConfig(top_layers=1)), 1).eval()
    tower = TowerConfig(dim=16, seq_layers=1, item_max_length=24)
    model = TwoTowerModel(bert, 3, tower).eval()
    texts = ["black mirrorless camera", "camera bag black", "running socks blue"]
    cache = ItemTextCache(bert, tokenizer, texts, 24, torch.device("cpu"))
    with torch.no_grad():
        catalogue = model.item_vectors(cache.bank(), torch.arange(3)).numpy()  # id_mask 0: nothing seen
    items = Catalogue(pl.DataFrame({"item_id": ["a", "b", "c"], "text": texts}), catalogue)
    user = TrainedUserTower(model, TrainConfig(tower=tower), items, tokenizer)
    distances = np.linalg.norm(catalogue[:, None] - catalogue[None], axis=-1)
    assert distances[~np.eye(3, dtype=bool)].min() > 1e-2  # three texts of three words: three vectors
    np.testing.assert_allclose(user.encode_item_texts(texts[::-1]), catalogue[::-1], atol=1e-5)
    records = [{"item_id": i, "text": t} for i, t in zip("abc", texts)]
    np.testing.assert_allclose(user.item_tower().encode_items(records), catalogue, atol=1e-5)  # via the template
    assert not user.encode_histories([["d"]]).any()
    items.upsert([{"item_id": "d", "text": "camera bag brown"}], user.encode_item_texts(["camera bag brown"]))
    assert user.encode_histories([["d"]]).any()  # the catalogue's new row, at once
    # an item upserted with b's text is b's vector, one with another text of as many words is not
    twin, other = user.item_tower().encode_items([{"item_id": "e", "text": texts[1]}, {"item_id": "f",
                                                                                         "text": "camera bag brown"}])
    np.testing.assert_allclose(twin, catalogue[1], atol=1e-5)
    assert np.linalg.norm(other - catalogue[1]) > 1e-2


def test_history_suppression_lowers_only_the_history_items():
    import torch
    tower = TowerConfig(dim=16, id_fusion="concat", id_dim=8, suppress_history=True, seq_layers=1)
    model = TwoTowerModel(None, 5, tower, hidden_size=12).eval()
    model.id_mask.fill_(1.0)
    with torch.no_grad():
        model.suppress.copy_(torch.tensor([2.0, 0.0]))
        items = model.item_vectors(torch.randn(5, 12), torch.arange(5))
        history = torch.tensor([[0, 3]])
        states = model.sequence_states(items, history, torch.tensor([2]))[:, -1]
        plain = model.fuse(states, None) @ items.T
        penalty = model.history_penalty(history, torch.tensor([2]))[:, -1]
        suppressed = model.fuse(states, None, penalty) @ items.T
    assert penalty[0, :8].abs().sum() == 0  # the text block is untouched
    drop = (plain - suppressed)[0]
    assert drop[3] > drop[[1, 2, 4]].max()  # the last history item loses most
    # unseen items (id_mask 0) and the text-only path have a zero ID block
    assert model.text_only_vectors(torch.randn(2, 12))[:, 8:].abs().sum() == 0


def test_id_dropout_drops_whole_id_blocks_in_training_only():
    torch.manual_seed(0)
    tower = TowerConfig(dim=16, id_fusion="concat", id_dim=8, id_dropout=0.5, seq_layers=1)
    model = TwoTowerModel(None, 400, tower, hidden_size=12)
    model.id_mask.fill_(1.0)
    features = torch.randn(400, 12)
    with torch.no_grad():
        trained = model.train().item_vectors(features, torch.arange(400))
        served = model.eval().item_vectors(features, torch.arange(400))
    dropped = trained[:, 8:].abs().sum(dim=1) == 0
    assert 0.4 < dropped.float().mean() < 0.6  # about half the items lose their ID block...
    assert (served[:, 8:].abs().sum(dim=1) > 0).all()  # ...never when serving
    text_only = model.text_only_vectors(features)
    torch.testing.assert_close(trained[dropped], text_only[dropped])  # a dropped item looks like an unseen one
    torch.testing.assert_close(trained[~dropped], served[~dropped])
