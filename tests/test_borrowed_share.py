"""TowerConfig.neighbour_borrow: items without neighbours in the training sequences, and items added after training,
borrow the neighbour share of their text-nearest items that have neighbours, in training and in serving alike."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from encoders.neighbour_features import BorrowedShare, NeighbourFeatures
from encoders.training import Trainer
from recsys.config import TowerConfig
from tests.test_export import _onnx_vectors
from tests.test_lora import small_config

# items 0–3 stand next to each other in the sequences (0–1, 1–2, 2–3); 4 and 5 have no neighbours
SEQUENCES = [np.array([0, 1, 2, 3])]
BANK = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [1.0, 0.05], [0.05, 1.0]])


def test_the_borrowed_share_is_the_mean_value_of_the_k_text_nearest_keys():
    values = torch.tensor([[10.0, 0.0], [20.0, 0.0], [0.0, 30.0], [0.0, 40.0]])  # stand-ins for neighbour means
    borrow = BorrowedShare(k=2, share=0.4, hidden=2)
    borrow.fill(BANK[:4], values)
    got = borrow(BANK[4:])
    torch.testing.assert_close(got[0], 0.6 * BANK[4] + 0.4 * (values[0] + values[1]) / 2)  # nearest: 0 and 1
    torch.testing.assert_close(got[1], 0.6 * BANK[5] + 0.4 * (values[2] + values[3]) / 2)  # nearest: 2 and 3
    # excluding an item's own bank row (training computing a warm item as a new one)
    torch.testing.assert_close(borrow(BANK[:1], exclude=torch.tensor([0])),
                               0.6 * BANK[:1] + 0.4 * (values[1] + values[3]) / 2)
    # a bank of k items or fewer lends nothing
    small = BorrowedShare(k=4, share=0.4, hidden=2)
    small.fill(BANK[:4], values)
    torch.testing.assert_close(small(BANK[4:]), BANK[4:])


def test_the_share_is_what_a_warm_item_seen_beside_k_others_gets_and_is_inert_without_a_share():
    tower = TowerConfig(neighbour_mix=0.5, neighbour_shrink=8.0, neighbour_borrow=10)
    borrow = BorrowedShare.for_tower(tower, hidden=2)
    assert borrow.k == 10 and borrow.share == pytest.approx(0.5 * 10 / 18)
    assert BorrowedShare.for_tower(TowerConfig(neighbour_mix=0.5), hidden=2) is None
    # a preset's value stays inert when a --config turns the share off or picks the block
    assert BorrowedShare.for_tower(TowerConfig(neighbour_borrow=10), hidden=2) is None
    assert BorrowedShare.for_tower(TowerConfig(neighbour_features=True, neighbour_borrow=10), hidden=2) is None
    with pytest.raises(ValidationError, match=r"neighbour_borrow\n  Input should be greater than or equal to 0"):
        TowerConfig(neighbour_mix=0.5, neighbour_borrow=-1)
    with pytest.raises(ValueError, match="not the block"):
        NeighbourFeatures(SEQUENCES, 6, block=True, borrow=BorrowedShare(1, 0.5, 2))


def test_items_without_neighbours_borrow_and_warm_items_keep_their_neighbours_share():
    borrow = BorrowedShare(k=1, share=0.3, hidden=2)
    mix = NeighbourFeatures(SEQUENCES, 6, share=0.5, borrow=borrow)
    mix.refresh(BANK)
    means = torch.stack([BANK[1], (BANK[0] + BANK[2]) / 2, (BANK[1] + BANK[3]) / 2, BANK[2]])  # chain 0–1–2–3
    torch.testing.assert_close(borrow.keys, BANK[:4])  # the items with neighbours, in catalogue order
    torch.testing.assert_close(borrow.values, means)
    mixed = mix(BANK, torch.arange(6))
    torch.testing.assert_close(mixed[:4], 0.5 * BANK[:4] + 0.5 * means)
    torch.testing.assert_close(mixed[4], 0.7 * BANK[4] + 0.3 * means[0])  # nearest by text: item 0
    torch.testing.assert_close(mixed[5], 0.7 * BANK[5] + 0.3 * means[2])  # item 2
    # as unseen items: warm ones borrow too, never from themselves; loners as they always do
    unseen = mix.as_unseen(BANK, torch.arange(6))
    torch.testing.assert_close(unseen[0], 0.7 * BANK[0] + 0.3 * means[1])
    torch.testing.assert_close(unseen[1], 0.7 * BANK[1] + 0.3 * means[0])
    torch.testing.assert_close(unseen[4:], mixed[4:])


def test_serving_computes_an_item_without_neighbours_as_training_did(tiny_bert_dir, shop):
    dataset, split = shop
    tower = TowerConfig(dim=16, item_max_length=24, seq_layers=1, id_fusion="concat", id_dim=8, neighbour_mix=0.5,
                        neighbour_shrink=2.0, neighbour_borrow=3, id_dropout=0.5)
    trainer = Trainer(dataset, split, small_config(tiny_bert_dir, tower=tower), progress=False)
    hidden = trainer.model.bert.feature_size
    raw = torch.randn(len(trainer.data.item_ids), hidden, generator=torch.Generator().manual_seed(0))
    trainer.cache.bank = lambda **_: raw.clone()  # known features, far apart per item
    reserved = trainer.model.borrow.keys  # sized at construction, filled in place (data-parallel training)
    trainer.refresh_bank()
    assert trainer.model.borrow.keys is reserved
    warm = trainer.neighbours.has_neighbours
    assert (~warm).any() and warm.sum() > 3
    keys, values = raw[warm], trainer.neighbours.means[warm]
    torch.testing.assert_close(trainer.model.borrow.keys, keys)
    torch.testing.assert_close(trainer.model.borrow.values, values)
    loners = raw[~warm]
    nearest = (F.normalize(loners, dim=-1) @ F.normalize(keys, dim=-1).T).topk(3).indices
    share = 0.5 * 3 / 5
    torch.testing.assert_close(trainer.bank[~warm], (1 - share) * loners + share * values[nearest].mean(dim=1))
    # id_dropout's unseen items borrow as new items do (a warm item never from itself)
    first = int(torch.nonzero(warm)[0])  # the first warm item: bank row 0
    own_nearest = (F.normalize(raw[first], dim=0) @ F.normalize(keys[1:], dim=-1).T).topk(3).indices
    torch.testing.assert_close(trainer.unseen_bank[first],
                               (1 - share) * raw[first] + share * values[1:][own_nearest].mean(0))
    trainer.model.eval()
    with torch.no_grad():  # the text-only path (upserts, free-text queries, ONNX) gives a loner its training input
        expected = F.normalize(F.pad(trainer.model.item_head(trainer.bank[~warm]), (0, 8)), dim=-1)
        torch.testing.assert_close(trainer.model.text_only_vectors(loners), expected)


def test_a_saved_bundle_keeps_the_bank_and_exports_it_in_the_onnx_item_tower(tiny_bert_dir, shop, tmp_path):
    from encoders.bundle import load_recommender
    from encoders.experiment import train_and_evaluate
    from encoders.export import export_bundle

    dataset, split = shop
    tower = TowerConfig(dim=16, item_max_length=24, seq_layers=1, neighbour_mix=0.5, neighbour_borrow=2)
    trained = train_and_evaluate(dataset, split, small_config(tiny_bert_dir, tower=tower), name="nb",
                                 out_root=tmp_path, progress=False)
    loaded = load_recommender(trained.path)
    saved = trained.recommender.user_tower.model.borrow
    assert len(saved.keys) > 2
    torch.testing.assert_close(loaded.user_tower.model.borrow.keys, saved.keys)
    torch.testing.assert_close(loaded.user_tower.model.borrow.values, saved.values)
    np.testing.assert_array_equal(loaded.item_vectors, trained.recommender.item_vectors)
    new = [{"item_id": "NEW", "title": "a brand-new item", "text": "a brand-new item"}]
    vector = loaded.item_tower().encode_items(new)
    np.testing.assert_allclose(vector, trained.recommender.item_tower().encode_items(new), atol=1e-6)
    # ... and it is not what the same towers give without the borrowed share
    loaded.user_tower.model.borrow.keys = saved.keys[:2]  # (k or fewer items: nothing to borrow)
    assert np.abs(loaded.item_tower().encode_items(new) - vector).max() > 1e-3
    out = tmp_path / "export"
    out.mkdir()
    info = export_bundle(trained.recommender, out)  # raises unless the ONNX graph matches PyTorch
    assert info["onnx"][0]["parity"]["max_abs_diff"] < 1e-4
    # by their text: new items of as many tokens, other words, get other vectors (each borrowing from its own
    # text-nearest items), in PyTorch and in the exported graph alike; one repeating the text of the item training
    # never saw (a loner, borrowing as new items do) lands on that item's vector, its nearest
    loaded.user_tower.model.borrow.keys = saved.keys
    [loner] = set(trained.recommender.item_ids) - set(split.train["item_id"].to_list())
    twin = {**trained.recommender.item_records([loner])[0], "item_id": "TWIN"}
    news = [{"item_id": f"N{n}", "text": text} for n, text in enumerate(["red tent", "laptop sleeve"])]
    vectors = loaded.item_tower().encode_items([twin, *news])
    np.testing.assert_allclose(_onnx_vectors(out, info["onnx"][0], [twin["text"], "red tent", "laptop sleeve"]),
                               vectors, atol=1e-4)
    assert np.linalg.norm(vectors[1] - vectors[2]) > 1e-2
    np.testing.assert_allclose(vectors[0], loaded.item_vectors[loaded.item_position[loner]], atol=1e-5)
    assert loaded.item_ids[int(np.argmax(loaded.item_vectors @ vectors[0]))] == loner
