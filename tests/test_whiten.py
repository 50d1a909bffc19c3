"""TowerConfig.whiten: the item head reads the catalogue's pooled features ZCA-whitened (set once, from the first
bank), saved with the towers."""

import torch

from encoders.training import Trainer
from recsys.config import TowerConfig
from tests.test_lora import small_config


def test_whitening_centres_and_decorrelates_the_first_bank_and_is_kept_after_refreshes(tiny_bert_dir, shop):
    dataset, split = shop
    tower = TowerConfig(dim=16, item_max_length=24, seq_layers=1, whiten=True)
    trainer = Trainer(dataset, split, small_config(tiny_bert_dir, tower=tower), progress=False)
    hidden = trainer.model.bert.feature_size
    rotation, _ = torch.linalg.qr(torch.randn(hidden, hidden, generator=torch.Generator().manual_seed(1)))
    mixing = torch.diag(torch.linspace(1.0, 3.0, hidden)) @ rotation  # correlated, variances 1 to 9
    raw = torch.randn(len(trainer.data.item_ids), hidden, generator=torch.Generator().manual_seed(0)) @ mixing + 3.0
    trainer.cache.bank = lambda **_: raw.clone()
    trainer.refresh_bank()
    model = trainer.model
    white = (raw - model.whiten_mean) @ model.whiten_matrix
    torch.testing.assert_close(white.mean(dim=0), torch.zeros(hidden), atol=1e-4, rtol=0)
    cov = torch.cov(white.T)
    # unit variance and no correlation, up to the 1 % shrinkage towards the mean eigenvalue
    assert (cov.diagonal() - 1).abs().max() < 0.06 and (cov - torch.diag(cov.diagonal())).abs().max() < 0.02
    assert torch.cov(raw.T).diagonal().max() > 4
    # the head reads the whitened features: the same vectors as an unwhitened head given them
    rows = torch.arange(4)
    ids = model.id_codes(rows)
    expected = torch.nn.functional.normalize(model.item_head(white[:4]) + ids, dim=-1)
    torch.testing.assert_close(model.item_vectors(raw[:4], rows), expected)
    # set once: a later bank (adapters moved) leaves the whitening as it was, and it travels in the state dict
    before = model.whiten_matrix.clone()
    trainer.cache.bank = lambda **_: raw.clone() * 2
    trainer.refresh_bank()
    torch.testing.assert_close(model.whiten_matrix, before)
    state = model.state_dict()
    assert torch.equal(state["whiten_matrix"], before) and "whiten_mean" in state


def test_without_whiten_the_head_reads_the_features_as_they_are(tiny_bert_dir, shop):
    dataset, split = shop
    tower = TowerConfig(dim=16, item_max_length=24, seq_layers=1)
    trainer = Trainer(dataset, split, small_config(tiny_bert_dir, tower=tower), progress=False)
    assert "whiten_matrix" not in trainer.model.state_dict()
    features = torch.randn(3, trainer.model.bert.feature_size)
    torch.testing.assert_close(trainer.model._head(features), trainer.model.item_head(features))


def test_a_bundle_of_whitened_towers_serves_the_vectors_it_was_trained_with(tiny_bert_dir, tmp_path):
    from encoders.experiment import train_and_evaluate
    from recsys.data.synthetic import generate_shop
    from encoders.bundle import load_towers
    from recsys.splits import split_dataset

    dataset = generate_shop(n_users=60, n_items=90, seed=2)
    tower = TowerConfig(dim=16, item_max_length=24, seq_layers=1, whiten=True)
    trained = train_and_evaluate(dataset, split_dataset(dataset), small_config(tiny_bert_dir, tower=tower),
                                 name="white", out_root=tmp_path, progress=False)
    model, config, _, _ = load_towers(trained.path / "encoder")
    assert config.tower.whiten
    matrix = model.whiten_matrix
    assert not torch.allclose(matrix, torch.eye(len(matrix)))  # the whitening training set, not the initial one
    torch.testing.assert_close(matrix, matrix.T)  # ZCA: symmetric
