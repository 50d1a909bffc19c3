"""TowerConfig.neighbour_mix / neighbour_features: an item's neighbours' mean text features mixed into its own, or
beside them as a second input block of the item head."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from encoders.neighbour_features import NeighbourFeatures, neighbour_counts
from encoders.training import Trainer
from recsys.config import TowerConfig
from tests.test_lora import small_config


def test_neighbours_are_adjacent_items_in_either_order_counted_without_self_pairs():
    counts = neighbour_counts([np.array([0, 1, 2]), np.array([2, 1, 1]), np.array([3])], 5).toarray()
    expected = np.zeros((5, 5))
    expected[0, 1] = expected[1, 0] = 1  # 0 → 1
    expected[1, 2] = expected[2, 1] = 2  # 1 → 2 and 2 → 1; the 1 → 1 repeat is no pair
    assert counts.tolist() == expected.tolist()
    assert neighbour_counts([], 3).nnz == 0


def test_second_block_is_the_count_weighted_neighbour_mean_or_the_items_own_features():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [4.0, 4.0], [9.0, 9.0]])
    block = NeighbourFeatures([np.array([0, 1, 2, 1])], 4, block=True)  # neighbours: 0–1 once, 1–2 twice
    with pytest.raises(RuntimeError, match="refresh"):
        block(bank, torch.arange(4))
    block.refresh(bank)
    both = block(bank, torch.arange(4))
    assert both.shape == (4, 4)
    torch.testing.assert_close(both[:, :2], bank)
    torch.testing.assert_close(both[1, 2:], (bank[0] + 2 * bank[2]) / 3)
    torch.testing.assert_close(both[0, 2:], bank[1])
    torch.testing.assert_close(both[3, 2:], bank[3])  # no neighbour: its own features again
    # freshly encoded features of some rows sit beside the means of the bank last refreshed
    fresh = torch.tensor([[2.0, 2.0]])
    torch.testing.assert_close(block(fresh, torch.tensor([2])), torch.tensor([[2.0, 2.0, 0.0, 1.0]]))


def test_a_share_moves_the_features_towards_the_neighbour_mean_and_leaves_loners_alone():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [4.0, 4.0], [9.0, 9.0]])
    mix = NeighbourFeatures([np.array([0, 1, 2, 1])], 4, share=0.25)
    mix.refresh(bank)
    mixed = mix(bank, torch.arange(4))
    torch.testing.assert_close(mixed[1], 0.75 * bank[1] + 0.25 * (bank[0] + 2 * bank[2]) / 3)
    torch.testing.assert_close(mixed[0], 0.75 * bank[0] + 0.25 * bank[1])
    torch.testing.assert_close(mixed[3], bank[3])
    with pytest.raises(ValueError, match="not both"):
        NeighbourFeatures([], 4, share=0.25, block=True)
    with pytest.raises(ValidationError, match="choose one"):
        TowerConfig(neighbour_mix=0.3, neighbour_features=True)
    with pytest.raises(ValidationError, match=r"neighbour_mix\n  Input should be less than 1"):
        TowerConfig(neighbour_mix=1.0)
    assert NeighbourFeatures.for_tower([], 4, TowerConfig()) is None
    assert NeighbourFeatures.for_tower([], 4, TowerConfig(neighbour_mix=0.3)).share == 0.3


def test_trainer_with_a_share_keeps_the_head_width_and_mixes_bank_and_fresh_features(tiny_bert_dir, shop):
    dataset, split = shop
    tower = TowerConfig(dim=16, item_max_length=24, seq_layers=1, neighbour_mix=0.3)
    trainer = Trainer(dataset, split, small_config(tiny_bert_dir, tower=tower), progress=False)
    hidden = trainer.model.bert.feature_size
    assert trainer.model.item_head.in_features == hidden
    raw = torch.randn(len(trainer.data.item_ids), hidden, generator=torch.Generator().manual_seed(0))
    trainer.cache.bank = lambda **_: raw.clone()
    trainer.refresh_bank()
    torch.testing.assert_close(trainer.bank, trainer.neighbours(raw, torch.arange(len(raw))))
    loners = ~trainer.neighbours.has_neighbours
    torch.testing.assert_close(trainer.bank[loners], raw[loners])
    assert not torch.allclose(trainer.bank[~loners], raw[~loners])
    some = torch.arange(5)
    torch.testing.assert_close(trainer.fresh_features(some).detach(),
                               trainer.neighbours(trainer.cache.features(some).detach(), some))


def test_id_dropout_computes_dropped_items_as_unseen_ones_without_the_neighbours_share(tiny_bert_dir, shop):
    dataset, split = shop
    tower = TowerConfig(dim=16, item_max_length=24, seq_layers=1, id_fusion="concat", id_dim=8, neighbour_mix=0.3,
                        id_dropout=0.5)
    trainer = Trainer(dataset, split, small_config(tiny_bert_dir, tower=tower), progress=False)
    hidden = trainer.model.bert.feature_size
    raw = torch.randn(len(trainer.data.item_ids), hidden, generator=torch.Generator().manual_seed(0))
    trainer.cache.bank = lambda **_: raw.clone()
    trainer.refresh_bank()
    torch.testing.assert_close(trainer.unseen_bank, raw)  # what an item unseen in training gets: its own
    seen = {}
    trainer._objective = lambda features, rows, *args: seen.update(features=features, rows=rows, unseen=args[-1]) \
        or features.sum()
    torch.manual_seed(0)
    trainer.model.train()
    trainer._loss(next(trainer._batches(np.random.default_rng(0))), False, np.random.default_rng(0))
    rows, unseen = seen["rows"], seen["unseen"]
    mixed = trainer.neighbours.has_neighbours[rows]
    assert 0.35 < unseen.float().mean() < 0.65 and (unseen & mixed).any() and (~unseen & mixed).any()
    torch.testing.assert_close(seen["features"][unseen], raw[rows][unseen])
    torch.testing.assert_close(seen["features"][~unseen], trainer.bank[rows][~unseen])
    # ... and without their ID block, as the text-only path computes unseen items
    vectors = trainer.model.item_vectors(seen["features"], rows, unseen).detach()
    assert vectors[unseen][:, 8:].abs().sum() == 0 and (vectors[~unseen][:, 8:].abs().sum(dim=1) > 0).all()
    # re-encoded items (the adapters' positives) follow the same mask
    some, drop = torch.arange(4), torch.tensor([True, False, True, False])
    trainer.model.eval()  # (no adapter dropout between the two encodings)
    own = trainer.cache.features(some).detach()
    fresh = trainer.fresh_features(some, drop).detach()
    torch.testing.assert_close(fresh[drop], own[drop])
    torch.testing.assert_close(fresh[~drop], trainer.neighbours(own, some)[~drop])


def test_trainer_bank_head_and_text_only_path_carry_the_block(tiny_bert_dir, shop):
    dataset, split = shop
    tower = TowerConfig(dim=16, item_max_length=24, seq_layers=1, neighbour_features=True)
    trainer = Trainer(dataset, split, small_config(tiny_bert_dir, tower=tower), progress=False)
    assert Trainer(dataset, split, small_config(tiny_bert_dir), progress=False).neighbours is None
    hidden = trainer.model.bert.feature_size
    assert trainer.model.item_head.in_features == 2 * hidden
    raw = torch.randn(len(trainer.data.item_ids), hidden, generator=torch.Generator().manual_seed(0))
    trainer.cache.bank = lambda **_: raw.clone()  # known features, far apart per item
    trainer.refresh_bank()
    rows = torch.arange(len(raw))
    torch.testing.assert_close(trainer.bank, trainer.neighbours(raw, rows))
    loners = ~trainer.neighbours.has_neighbours
    assert loners.any() and (~loners).any()
    torch.testing.assert_close(trainer.bank[loners, hidden:], raw[loners])
    assert not torch.allclose(trainer.bank[~loners, hidden:], raw[~loners])
    trainer.model.eval()
    with torch.no_grad():
        # an item without neighbours gets from the text-only path (new items, upserts) what training gave it,
        # less its ID block
        text_only = trainer.model.text_only_vectors(raw[loners])
        id_dim = trainer.model.id_dim
        full = trainer.model.item_head(trainer.bank[loners])
        expected = torch.nn.functional.normalize(torch.nn.functional.pad(full, (0, id_dim)), dim=-1)
        torch.testing.assert_close(text_only, expected)
    # the re-encoded positives of an adapter step get the same second block
    some = torch.arange(5)
    torch.testing.assert_close(trainer.fresh_features(some).detach(),
                               trainer.neighbours(trainer.cache.features(some).detach(), some))
    assert trainer.fit().history  # trains end to end with the block


def test_a_saved_bundle_loads_with_its_neighbour_block(tiny_bert_dir, shop, tmp_path):
    from encoders.bundle import load_recommender
    from encoders.experiment import train_and_evaluate

    dataset, split = shop
    tower = TowerConfig(dim=16, item_max_length=24, seq_layers=1, neighbour_features=True)
    trained = train_and_evaluate(dataset, split, small_config(tiny_bert_dir, tower=tower), name="nb",
                                 out_root=tmp_path, progress=False)
    loaded = load_recommender(trained.path)
    np.testing.assert_array_equal(loaded.item_vectors, trained.recommender.item_vectors)
    vector = loaded.item_tower().encode_items([{"item_id": "NEW", "title": "a brand-new item", "text": "new"}])
    assert vector.shape == (1, 16) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    # new items by their text (two texts of two words: two vectors), as the towers that trained them encode them
    news = [{"item_id": "N1", "text": "red tent"}, {"item_id": "N2", "text": "laptop sleeve"}]
    vectors = loaded.item_tower().encode_items(news)
    np.testing.assert_allclose(vectors, trained.recommender.item_tower().encode_items(news), atol=1e-6)
    assert np.linalg.norm(vectors[0] - vectors[1]) > 1e-2


def test_a_shrunk_share_grows_with_the_items_neighbour_count():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [4.0, 4.0], [9.0, 9.0]])
    # neighbour counts: item 0 once (1), item 1 three times (0 once, 2 twice), item 2 twice, item 3 never
    mix = NeighbourFeatures([np.array([0, 1, 2, 1])], 4, share=0.5, shrink=1.0)
    mix.refresh(bank)
    mixed = mix(bank, torch.arange(4))
    torch.testing.assert_close(mix.shares, torch.tensor([0.25, 0.375, 0.5 * 2 / 3, 0.0]))
    torch.testing.assert_close(mixed[0], 0.75 * bank[0] + 0.25 * bank[1])
    torch.testing.assert_close(mixed[1], 0.625 * bank[1] + 0.375 * (bank[0] + 2 * bank[2]) / 3)
    torch.testing.assert_close(mixed[3], bank[3])
    # without shrink: the one share for every item with neighbours, as before
    assert NeighbourFeatures([np.array([0, 1, 2, 1])], 4, share=0.5).shares is None
    from_config = NeighbourFeatures.for_tower([np.array([0, 1, 2, 1])], 4, TowerConfig(neighbour_mix=0.5,
                                                                                       neighbour_shrink=1.0))
    torch.testing.assert_close(from_config.shares, mix.shares)  # the config's share and shrink, as above
    # a preset's shrink stays inert when a --config turns the share off or picks the block instead
    assert NeighbourFeatures.for_tower([], 4, TowerConfig(neighbour_shrink=8)) is None
    block = NeighbourFeatures.for_tower([], 4, TowerConfig(neighbour_features=True, neighbour_shrink=8))
    assert block.block and block.shares is None
    with pytest.raises(ValueError, match="not to the block"):
        NeighbourFeatures([], 4, block=True, shrink=1.0)
