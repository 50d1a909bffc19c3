"""The trained ONNX graph carries a trained item's own neighbour share. Since stop 59 the towers mix a new text of a
trained item with its own neighbours' means at its own share (`OwnNeighbours`); the graph gave its text part as a
new item's, so its ID-code join was what a bundle built before stop 59 serves. The graph now takes each row's own
neighbours' means and share as inputs (`own_means`, `own_share`; zeros and 0 for any other text), written beside
it by the export (`encoders.export.own_neighbour_inputs`). Toy towers in the three neighbour modes here; the trained
bundle in tests/test_own_neighbours.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders.export import (OWN_INPUTS, TowerPart, _id_codes, _own_rows, _TrainedTower, export_onnx, id_codes_of,
                             own_neighbour_inputs, with_id_code)
from tests.test_export import _onnx_outputs
from tests.test_own_neighbours import MODES, toy_towers

ITEMS = [f"i{n}" for n in range(8)]  # toy_towers' items: 0-5 with neighbours, 6 without, 7 unseen in training
TEXTS = ["black mirrorless camera", "camera bag brown", "running shoe blue", "running socks blue", "silver compact "
         "camera", "a tent for two", "laptop sleeve"]
OF = ["i0", "i1", "i5", "i3", "i6", "brand-new", None]  # the texts' items: four with neighbours, one without, two new


class _PooledToy(torch.nn.Module):
    """A toy BERT: token embeddings (12 wide, seeded) mean-pooled over the attention mask."""

    def __init__(self, vocab: int, hidden: int = 12) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding.from_pretrained(torch.randn(vocab, hidden, generator=torch.Generator()
                                                                        .manual_seed(3)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask[..., None].float()
        return (self.embedding(input_ids) * mask).sum(1) / mask.sum(1)


@pytest.fixture(params=list(MODES))
def exported(request, tiny_bert_dir, tmp_path):
    return export_toy(MODES[request.param], tiny_bert_dir, tmp_path)


def export_toy(neighbours: dict, tiny_bert_dir, tmp_path):
    """Toy towers (tests.test_own_neighbours.toy_towers) on a toy BERT, exported as the trained graph with its
    tokenizer: the towers, their served path for texts of items, the export directory, the graph's entry."""
    pytest.importorskip("onnxruntime")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    model, _ = toy_towers(neighbours)
    model.bert = _PooledToy(tokenizer.vocab_size)

    def positions(item_ids) -> np.ndarray:
        return np.array([ITEMS.index(i) if i in ITEMS else -1 for i in item_ids])

    def served(texts, item_ids=None, own_neighbours=True) -> np.ndarray:
        batch = tokenizer(list(texts), padding=True, truncation=True, max_length=16, return_tensors="pt")
        with torch.no_grad():
            features = model.bert(batch["input_ids"], batch["attention_mask"])
            where = torch.as_tensor(positions(item_ids if item_ids is not None else [None] * len(texts)))
            return model.item_text_vectors(features, where, own_neighbours).numpy()

    ids = ITEMS[:7]  # the live catalogue: item 7 left out
    part = TowerPart("toy_tower", _TrainedTower(model), tokenizer, 16, served, _id_codes(model, ids, positions(ids)),
                     own=_own_rows(model, ids, positions(ids)), served=served)
    entry = export_onnx(part, tmp_path / "toy_tower.onnx", TEXTS, OF)
    tokenizer.save_pretrained(str(tmp_path / "tokenizer"))
    return model, served, tmp_path, {**entry, "tokenizer": "tokenizer"}


def test_the_graphs_join_is_the_served_vector_of_a_trained_items_new_text(exported):
    model, served, out, entry = exported
    assert entry["inputs"] == ["input_ids", "attention_mask", *OWN_INPUTS]
    own = entry["own_neighbours"]
    assert own["items"] == 6 and own["mix"] == ("block" if model.config.neighbour_features else "share")
    assert own["parity"]["texts"] == 4 and own["parity"]["max_abs_diff"] < 1e-5
    assert entry["id_codes"]["rows"] == 7 and entry["id_codes"]["parity"]["texts"] == 5
    np.testing.assert_array_equal(own_neighbour_inputs(out, entry, OF)["own_share"] > 0, [True] * 4 + [False] * 3)
    vectors, block = _onnx_outputs(out, entry, TEXTS, OF)  # fed own_neighbour_inputs(out, entry, OF)
    joined = with_id_code(block, id_codes_of(out, entry, OF), entry["id_codes"]["fusion"])
    expected = served(TEXTS, OF)
    np.testing.assert_allclose(joined, expected, atol=1e-5)  # with neighbours, without, new items alike
    np.testing.assert_allclose(vectors[5:], expected[5:], atol=1e-5)  # a new item's: `vectors` itself
    before = served(TEXTS, OF, own_neighbours=False)  # what the join gave before: a new item's text part
    assert np.linalg.norm(joined[:4] - before[:4], axis=1).min() > 1e-3
    np.testing.assert_allclose(joined[4:], before[4:], atol=1e-5)
    assert not expected[5:, -6:].any() and np.linalg.norm(expected[4, -6:]) > 1e-3  # new: no ID block; item 6 its


def test_zero_own_inputs_give_every_text_a_new_items_vector(exported):
    _, served, out, entry = exported
    vectors, _ = _onnx_outputs(out, entry, TEXTS)  # fed own_neighbour_inputs(out, entry, [None] * 7)
    np.testing.assert_allclose(vectors, served(TEXTS), atol=1e-5)
    assert own_neighbour_inputs(out, {"file": entry["file"]}, OF) == {}  # a graph without the inputs: nothing


def test_towers_without_id_codes_give_the_served_vector_as_the_graphs_vectors(tiny_bert_dir, tmp_path):
    model, served, out, entry = export_toy({**MODES["flat share, none borrowed"], "id_embedding": False},
                                           tiny_bert_dir, tmp_path)
    assert "id_codes" not in entry and entry["own_neighbours"]["parity"]["texts"] == 4
    assert "then vectors is the item's vector" in entry["own_neighbours"]["note"]
    vectors = _onnx_outputs(out, entry, TEXTS, OF)[0]
    np.testing.assert_allclose(vectors, served(TEXTS, OF), atol=1e-5)
    assert np.linalg.norm(vectors[:4] - served(TEXTS, OF, own_neighbours=False)[:4], axis=1).min() > 1e-3
