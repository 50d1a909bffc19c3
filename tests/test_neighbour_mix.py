"""TowerConfig.neighbour_mix: item text features mixed with their training-sequence neighbours' features."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from encoders.neighbour_mix import NeighbourMix, neighbour_counts
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


def test_mix_moves_a_share_towards_the_count_weighted_neighbour_mean_and_leaves_loners_alone():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [4.0, 4.0], [9.0, 9.0]])
    mix = NeighbourMix([np.array([0, 1, 2, 1])], 4, share=0.25)  # neighbours: 0–1, 1–2 (twice)
    with pytest.raises(RuntimeError, match="refresh"):
        mix(bank, torch.arange(4))
    mix.refresh(bank)
    mixed = mix(bank, torch.arange(4))
    neighbour_mean_of_1 = (bank[0] + 2 * bank[2]) / 3
    torch.testing.assert_close(mixed[1], 0.75 * bank[1] + 0.25 * neighbour_mean_of_1)
    torch.testing.assert_close(mixed[0], 0.75 * bank[0] + 0.25 * bank[1])
    torch.testing.assert_close(mixed[3], bank[3])  # no neighbour: its own features
    # freshly encoded features of some rows mix with the means of the bank last refreshed
    fresh = torch.tensor([[2.0, 2.0]])
    torch.testing.assert_close(mix(fresh, torch.tensor([2])), 0.75 * fresh + 0.25 * bank[1])


def test_trainer_bank_and_catalogue_vectors_carry_the_mix(tiny_bert_dir, shop):
    dataset, split = shop
    tower = TowerConfig(dim=16, item_max_length=24, seq_layers=1, neighbour_mix=0.3)
    mixed = Trainer(dataset, split, small_config(tiny_bert_dir, tower=tower), progress=False)
    plain = Trainer(dataset, split, small_config(tiny_bert_dir), progress=False)
    assert plain.neighbour_mix is None
    raw = torch.randn(len(mixed.data.item_ids), mixed.model.bert.feature_size,
                      generator=torch.Generator().manual_seed(0))
    mixed.cache.bank = lambda: raw.clone()  # distinct features per item (the tiny BERT's are nearly alike)
    mixed.refresh_bank()
    loners = ~mixed.neighbour_mix.has_neighbours
    expected = mixed.neighbour_mix(raw, torch.arange(len(raw)))
    torch.testing.assert_close(mixed.bank, expected)
    assert not torch.allclose(mixed.bank, raw)
    torch.testing.assert_close(mixed.bank[loners], raw[loners])
    # the catalogue's vectors are the item head over the mixed bank
    with torch.no_grad():
        mixed.model.eval()
        head = mixed.model.item_vectors(expected, torch.arange(len(raw))).numpy()
    np.testing.assert_allclose(mixed.catalogue_vectors(), head, rtol=1e-5, atol=1e-6)
    # the re-encoded positives of an adapter step are mixed the same way
    rows = torch.arange(5)
    torch.testing.assert_close(mixed.fresh_features(rows).detach(),
                               mixed.neighbour_mix(mixed.cache.features(rows).detach(), rows))


def test_neighbour_mix_is_a_share():
    with pytest.raises(ValidationError):
        TowerConfig(neighbour_mix=1.5)
    assert TowerConfig().neighbour_mix == 0.0
