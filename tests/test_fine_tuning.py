"""Fine-tuning options: the item–item pre-stage, AdaLoRA trained as AdaLoRA, full fine-tuning, FGM."""

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from encoders.adversarial import adversarial_loss
from encoders.bundle import load_recommender
from encoders.experiment import train_and_evaluate
from encoders.item_pairs import item_pairs, pair_loss
from encoders.lora import orthogonal_penalty
from encoders.pre_stage import pretrain_items
from encoders.schedules import warmup_cosine_factor
from encoders.training import Trainer
from recsys.config import LoraConfig
from recsys.data.dataset import Dataset
from recsys.splits import split_dataset
from tests.conftest import toy_dataset
from tests.test_lora import small_config


def test_item_pairs_count_every_occurrence_both_ways_within_the_window():
    sequences = [np.array([0, 1, 2, 1]), np.array([3, 4])]
    assert sorted(item_pairs(sequences, 1).tolist()) == [[0, 1], [1, 0], [1, 2], [1, 2], [2, 1], [2, 1], [3, 4],
                                                         [4, 3]]
    assert [0, 2] in item_pairs(sequences, 2).tolist() and [0, 3] not in item_pairs(sequences, 3).tolist()
    assert len(item_pairs([np.array([5])], 1)) == 0


def test_pair_loss_leaves_the_anchor_out_and_rewards_the_partner():
    vectors = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=-1)
    batch = torch.tensor([[0, 1]])
    near = pair_loss(vectors, batch, scale=10.0)
    far = pair_loss(vectors, torch.tensor([[0, 3]]), scale=10.0)
    assert near < far
    # the anchor itself (cosine 1) is not a competitor: item 1 wins against 2 and 3 alone
    expected = -torch.log_softmax(10.0 * torch.tensor([1.0, 0.8, 0.0]), dim=0)[0]
    torch.testing.assert_close(near, expected)


def pair_margin(trainer) -> float:
    """Mean text-path cosine of co-occurring pairs minus that of random pairs."""
    with torch.no_grad():
        vectors = F.normalize(trainer.model.item_head(trainer.cache.bank()), dim=-1)
    pairs = torch.as_tensor(trainer.pairs)
    shuffled = pairs[:, 1][torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0))]
    together = (vectors[pairs[:, 0]] * vectors[pairs[:, 1]]).sum(-1).mean()
    apart = (vectors[pairs[:, 0]] * vectors[shuffled]).sum(-1).mean()
    return float(together - apart)


def couples_shop(n_couples: int = 20, n_users: int = 150, seed: int = 0) -> Dataset:
    """Items come in couples bought back to back (4 random couples per user): a known pair structure."""
    rng = np.random.default_rng(seed)
    texts = toy_dataset().items["text"].to_list()
    items = pl.DataFrame({"item_id": [f"i{k}" for k in range(2 * n_couples)],
                          "text": [texts[k % len(texts)] for k in range(2 * n_couples)]})
    rows = []
    for user in range(n_users):
        couples = rng.choice(n_couples, size=4, replace=False)
        rows += [(f"u{user}", f"i{k}", t) for t, k in enumerate(k for c in couples for k in (2 * c, 2 * c + 1))]
    interactions = pl.DataFrame(rows, schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Int64},
                                orient="row")
    return Dataset("couples", items, interactions)


@pytest.mark.parametrize("method", ["lora", "none"])
def test_pre_stage_pulls_co_occurring_items_together_in_the_text_path(tiny_bert_dir, method):
    dataset = couples_shop()
    config = small_config(tiny_bert_dir, lora=LoraConfig(method=method, rank=4, top_layers=1), pair_epochs=3,
                          pair_batch_size=32, epochs=1, bert_epochs=0)
    trainer = Trainer(dataset, split_dataset(dataset), config, progress=False)
    torch.manual_seed(0)
    trainer.cache.states.normal_()  # the tiny random BERT gives every text nearly the same features
    trainer.refresh_bank()
    before = pair_margin(trainer)
    adapters = {n: p.detach().clone() for n, p in trainer.model.bert.named_parameters() if "lora_B" in n}
    report = pretrain_items(trainer, started=0.0)
    assert report["steps"] == trainer.pair_steps == int(np.ceil(3 * len(trainer.pairs) / 32))
    assert report["last_loss"] < report["first_loss"] - 1.0
    assert pair_margin(trainer) > before + 0.08
    moved = [n for n, p in trainer.model.bert.named_parameters() if n in adapters and not torch.equal(p, adapters[n])]
    assert bool(moved) == (method == "lora")
    assert trainer.adapter_step == (trainer.pair_steps if method == "lora" else 0)


def test_adalora_prunes_over_the_adapter_steps_with_its_regulariser(tiny_bert_dir, shop):
    dataset, split = shop
    lora = LoraConfig(method="adalora", rank=4, adalora_target_rank=2, top_layers=1)
    config = small_config(tiny_bert_dir, lora=lora, epochs=3, bert_epochs=2, patience=5, pair_epochs=1,
                          pair_batch_size=128)
    trainer = Trainer(dataset, split, config, progress=False)
    adapter_steps = trainer.pair_steps + 2 * trainer.steps_per_epoch
    assert trainer.peft.peft_config["default"].total_step == adapter_steps
    start = float(orthogonal_penalty(trainer.peft).detach())
    assert start > 0
    trainer.fit()
    assert trainer.adapter_step == adapter_steps  # the head-only third epoch does not advance the budget
    assert float(orthogonal_penalty(trainer.peft)) < start
    assert trainer.peft.peft_config["default"].rank_pattern  # the final budget was allocated
    kept = sum(int((p != 0).sum()) for n, p in trainer.peft.named_parameters() if "lora_E" in n)
    modules = sum(1 for n, _ in trainer.peft.named_parameters() if "lora_E" in n)
    assert kept <= 2 * modules < 4 * modules  # average rank at most the target
    assert orthogonal_penalty(Trainer(dataset, split, small_config(tiny_bert_dir), progress=False).peft) is None


def test_adalora_bundle_continues_training_from_its_pruned_ranks(tiny_bert_dir, shop, tmp_path):
    dataset, split = shop
    lora = LoraConfig(method="adalora", rank=4, adalora_target_rank=2, top_layers=1)
    # fp32 (no bf16 autocast on a GPU): the reloaded vectors are compared to 1e-5
    config = small_config(tiny_bert_dir, lora=lora, epochs=2, bert_epochs=2, patience=5, mixed_precision="no")
    first = train_and_evaluate(dataset, split, config, name="ada", out_root=tmp_path, progress=False)
    from safetensors.torch import load_file
    saved = load_file(first.path / "encoder" / "adapter_model.safetensors")
    assert any(t.shape[0] < 4 for n, t in saved.items() if "lora_E" in n)  # saved at the pruned ranks
    again = Trainer(dataset, split, config, progress=False, init_bundle=first.path)  # fresh adapters at rank 4
    np.testing.assert_allclose(again.catalogue_vectors(), first.recommender.item_vectors, atol=1e-5)


def test_adapter_weights_that_do_not_fit_are_a_bundle_error():
    from encoders.bundle import fit_pruned_ranks
    from recsys.errors import BundleError

    fresh = {"a.lora_A": torch.zeros(4, 8), "a.lora_E": torch.zeros(4, 1), "a.ranknum": torch.tensor(4.0)}
    saved = {"a.lora_A": torch.ones(2, 8), "a.lora_E": torch.ones(2, 1), "a.ranknum": torch.tensor(4.0)}
    fitted = fit_pruned_ranks(saved, fresh)
    assert fitted["a.lora_A"].shape == (4, 8) and fitted["a.lora_A"][:2].eq(1).all() \
        and fitted["a.lora_A"][2:].eq(0).all()
    assert fitted["a.lora_E"][:, 0].tolist() == [1, 1, 0, 0] and fitted["a.ranknum"] is saved["a.ranknum"]
    with pytest.raises(BundleError, match="does not fit"):
        fit_pruned_ranks({"a.lora_A": torch.ones(6, 8)}, fresh)


def test_full_fine_tuning_trains_the_top_layer_and_round_trips(tiny_bert_dir, shop, tmp_path):
    dataset, split = shop
    config = small_config(tiny_bert_dir, lora=LoraConfig(method="full", top_layers=1), epochs=1)
    trainer = Trainer(dataset, split, config, progress=False)
    before = {n: p.detach().clone() for n, p in trainer.model.bert.named_parameters()}
    trainer.fit()
    changed = {n for n, p in trainer.model.bert.named_parameters() if not torch.equal(before[n], p)}
    assert changed and all(".layer.1." in n for n in changed)
    assert any("attention.self.query.weight" in n for n in changed)
    trained = train_and_evaluate(dataset, split, config, name="full", out_root=tmp_path, progress=False)
    loaded = load_recommender(trained.path)
    histories = split.test["history"].to_list()[:10]
    np.testing.assert_allclose(loaded.user_tower.encode_histories(histories),
                               trained.recommender.user_tower.encode_histories(histories), atol=1e-6)
    texts = ["black mirrorless camera"]
    np.testing.assert_allclose(loaded.user_tower.encode_item_texts(texts),
                               trained.recommender.user_tower.encode_item_texts(texts), atol=1e-5)


def test_adversarial_loss_is_the_loss_at_the_worst_nearby_features():
    features = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    weights = torch.tensor([0.6, -0.8], requires_grad=True)

    def objective(x):
        return (x * weights).sum()

    loss = adversarial_loss(objective, features, eps=0.1)
    clean = float(objective(features))
    shifted = clean + 0.1 * (5.0 + 1.0) * 1.0  # each row moves by eps·‖row‖ along w/‖w‖ (‖w‖ = 1)
    assert float(loss) == pytest.approx(0.5 * (clean + shifted), abs=1e-6)
    loss.backward()  # the step is a constant: d/dw of ½(Σ f·w + Σ (f + step)·w)
    torch.testing.assert_close(weights.grad, features.sum(0) + 0.5 * 0.1 * 6.0 * torch.tensor([0.6, -0.8]))


def test_training_with_adversarial_features_learns(tiny_bert_dir, shop):
    dataset, split = shop
    trainer = Trainer(dataset, split, small_config(tiny_bert_dir, epochs=3, adversarial_eps=0.05,
                                                   valid_sample=None), progress=False)
    untrained = trainer.validate()["ndcg@10"]
    result = trainer.fit()
    assert np.isfinite(result.history[-1]["train_loss"]) and result.best_valid_ndcg > untrained + 0.02


def test_fresh_adapter_loss_is_an_in_batch_softmax_over_the_re_encoded_items(tiny_bert_dir, shop):
    dataset, split = shop
    # fp32 (no bf16 autocast on a GPU): the loss is compared with its formula to 1e-5
    config = small_config(tiny_bert_dir, adapter_negatives="fresh", mixed_precision="no")
    trainer = Trainer(dataset, split, config, progress=False)
    trainer.refresh_bank()
    torch.manual_seed(0)
    device = trainer.device
    users = F.normalize(torch.randn(5, 16), dim=-1).to(device)
    positives = torch.tensor([3, 7, 3, 11, 9], device=device)
    items = torch.tensor([7, 3, 20], device=device)  # users 3 and 4 (positives 11, 9) are not in the re-encoded set
    features = trainer.cache.features(items)
    loss = trainer._fresh_loss(users, positives, items, features)
    vectors = trainer.model.item_vectors(features, items)
    share = trainer.target_share[items]
    log_q = torch.log(1 - (1 - share).pow(len(positives)))
    logits = trainer.model.scale * users[:3] @ vectors.T - log_q
    torch.testing.assert_close(loss, F.cross_entropy(logits, torch.tensor([1, 0, 1], device=device)))
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in trainer.adapters)


def test_fresh_adapter_negatives_keep_the_bank_loss_away_from_the_adapters_and_learn(tiny_bert_dir, shop):
    dataset, split = shop
    config = small_config(tiny_bert_dir, adapter_negatives="fresh", epochs=3, valid_sample=None)
    trainer = Trainer(dataset, split, config, progress=False)
    trainer.refresh_bank()
    batch = next(iter(trainer._batches(np.random.default_rng(0))))
    for parameter in trainer.adapters:
        parameter.requires_grad_(True)
    trainer.model.eval()  # no dropout: both calls see the same bank term
    bank_loss, _ = trainer._loss(batch, False, np.random.default_rng(0))  # adapters off: the bank alone
    both, _ = trainer._loss(batch, True, np.random.default_rng(0))
    assert float(both.detach()) > float(bank_loss.detach()) + 0.1  # + the in-batch term (a cross-entropy)
    bank_loss.backward()
    assert all(p.grad is None for p in trainer.adapters)
    untrained = trainer.validate()["ndcg@10"]
    adapters = {n: p.detach().clone() for n, p in trainer.model.bert.named_parameters() if "lora_B" in n}
    result = trainer.fit()
    assert result.best_valid_ndcg > untrained + 0.02
    assert any(not torch.equal(p, adapters[n]) for n, p in trainer.model.bert.named_parameters() if n in adapters)


def test_adapters_last_train_after_the_heads_converge_and_keep_the_best_state(tiny_bert_dir, shop):
    dataset, split = shop
    config = small_config(tiny_bert_dir, adapter_phase="last", epochs=4, bert_epochs=2, patience=1,
                          valid_sample=None)
    trainer = Trainer(dataset, split, config, progress=False)
    adapters = {n: p.detach().clone() for n, p in trainer.model.bert.named_parameters() if "lora_B" in n}
    result = trainer.fit()
    trained = [row["adapters_trained"] for row in result.history]
    heads = trained.index(True)
    adapter_epochs = len(trained) - heads
    assert heads >= 1 and not any(trained[:heads]) and all(trained[heads:])
    assert 1 <= adapter_epochs <= 2  # then at most bert_epochs, cut short only by early stopping
    if adapter_epochs < 2:
        assert result.history[heads]["valid_ndcg@10"] <= max(r["valid_ndcg@10"] for r in result.history[:heads])
    # the adapters' phase restarts the learning-rate schedule (cosine over its own steps)
    assert trainer.phase_start == result.history[heads - 1]["step"]
    whole_run = warmup_cosine_factor(trainer.phase_start, trainer.steps_per_epoch * 4, config.warmup_ratio)
    assert trainer._lr_factor(trainer.phase_start) == pytest.approx(1.0) and whole_run < 0.9
    scaled = Trainer(dataset, split, config.model_copy(update={"adapter_phase_lr": 0.1}), progress=False)
    assert scaled._lr_factor(trainer.phase_start) == pytest.approx(whole_run)  # before its phase: unscaled
    scaled.phase_start = trainer.phase_start
    assert scaled._lr_factor(trainer.phase_start) == pytest.approx(0.1)
    best = max(row["valid_ndcg@10"] for row in result.history)
    assert result.best_valid_ndcg == best
    if result.best_epoch > heads:  # the best state has trained adapters, else the heads-only one (adapters reset)
        assert any(not torch.equal(p, adapters[n]) for n, p in trainer.model.bert.named_parameters() if n in adapters)
    else:
        assert all(torch.equal(p, adapters[n]) for n, p in trainer.model.bert.named_parameters() if n in adapters)


def test_re_encoding_every_positive_collapses_with_bank_negatives_and_learns_with_fresh(tiny_bert_dir, shop):
    """The `gpu` preset's regime (adapters in every layer from the first step, 4,096 positives re-encoded a step):
    with `bank` negatives the adapters raise all re-encoded items at once against the stale bank, so the loss climbs
    back after the first epochs and validation stalls; `fresh` (their own in-batch softmax) learns. The first H200
    run of the old `gpu` preset showed the `bank` curve on amazon-scientific."""
    from encoders.presets import preset

    dataset, split = shop
    curves = {}
    for negatives in ("bank", "fresh"):
        config = preset("gpu", encoder={"model": str(tiny_bert_dir)}, tower={"dim": 32, "id_dim": 8, "seq_heads": 2},
                        zero_shot_dims=8, adapter_phase="first", adapter_phase_lr=1.0, bert_epochs=None,
                        adapter_negatives=negatives, epochs=6, patience=20, batch_size=64, valid_sample=None,
                        mixed_precision="no")
        history = Trainer(dataset, split, config, progress=False).fit().history
        curves[negatives] = ([h["valid_ndcg@10"] for h in history], [h["train_loss"] for h in history])
    bank_valid, bank_loss = curves["bank"]
    fresh_valid, _ = curves["fresh"]
    assert bank_loss[-1] > min(bank_loss) + 0.5  # the loss climbs back while the adapters keep training
    assert fresh_valid[-1] > fresh_valid[0] and max(fresh_valid) > 2 * max(bank_valid)
