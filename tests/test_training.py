"""Training on a tiny generated shop: it learns, bundles round-trip exactly, checkpoints resume."""

import json

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from encoders.bundle import load_recommender
from encoders.experiment import cold_start_examples, train_and_evaluate
from encoders.training import Trainer
from encoders.weight_average import WeightAverage
from recsys.config import TowerConfig
from tests.test_lora import small_config


def test_training_improves_validation_ndcg_over_untrained_towers(tiny_bert_dir, shop, tmp_path):
    dataset, split = shop
    trainer = Trainer(dataset, split, small_config(tiny_bert_dir, epochs=4, valid_sample=None), tmp_path,
                      progress=False)
    untrained = trainer.validate()["ndcg@10"]
    first = trainer.recommender()
    assert trainer.recommender().popularity is first.popularity and not len(first.histories)  # fit once
    result = trainer.fit()
    assert result.best_valid_ndcg > untrained + 0.02, (untrained, result.history)
    # what only training needed is released before the bundle is built (the cached token states, the optimizer)
    assert trainer.cache is None and not trainer.optimizer.state
    assert trainer.validate()["ndcg@10"] == pytest.approx(result.best_valid_ndcg)  # best state restored
    assert (tmp_path / "metrics.csv").read_text().count("\n") == len(result.history) + 1
    assert (tmp_path / "training_curve.png").stat().st_size > 0


@pytest.mark.parametrize("mode,extra", [("sequence", {}), ("text", {}),
                                        ("sequence", {"id_fusion": "concat", "id_dim": 8, "suppress_history": True})])
def test_save_then_load_gives_identical_embeddings(tiny_bert_dir, shop, tmp_path, mode, extra):
    dataset, split = shop
    config = small_config(tiny_bert_dir, tower=small_config(tiny_bert_dir).tower.model_copy(
        update={"user_tower": mode, **extra}), merge_adapters=True)
    trained = train_and_evaluate(dataset, split, config, name="tiny", out_root=tmp_path, progress=False)
    encoder = trained.path / "encoder"
    for name in ("adapter_config.json", "adapter_model.safetensors", "towers.safetensors", "tower.json",
                 "tokenizer_config.json", "merged/config.json", "training/metrics.csv"):
        assert (encoder / name).is_file(), name
    assert json.loads((encoder / "encoder.json").read_text())["user_tower"] == f"trained-{mode}"
    loaded = load_recommender(trained.path)
    np.testing.assert_array_equal(loaded.item_vectors, trained.recommender.item_vectors)
    histories = split.test["history"].to_list()[:20] + [[], ["not-an-item"]]
    np.testing.assert_allclose(loaded.user_tower.encode_histories(histories),
                               trained.recommender.user_tower.encode_histories(histories), atol=1e-6)
    assert loaded.recommend_histories(histories, 10) == trained.recommender.recommend_histories(histories, 10)
    # the item tower re-encodes the catalogue text to the saved vectors (text path + ID fusion)
    from encoders.bundle import load_towers
    model, config, tokenizer, _ = load_towers(encoder)
    tokens = tokenizer(dataset.items["text"].to_list(), padding=True, truncation=True,
                       max_length=config.tower.item_max_length, return_tensors="pt")
    with torch.no_grad():
        features = model.bert(tokens["input_ids"], tokens["attention_mask"])
        again = model.item_vectors(features, torch.arange(dataset.items.height)).numpy()
    np.testing.assert_allclose(again, loaded.item_vectors, atol=1e-5)
    assert len(np.unique(again.round(5), axis=0)) == len(again)  # every item its own vector
    manifest = json.loads((trained.path / "manifest.json").read_text())
    assert {(r["split"], r["slice"]) for r in manifest["metrics"]} >= {("valid", "all"), ("test", "all")}
    assert manifest["train"]["parameters"]["adapter"] > 0


def test_checkpoints_resume_and_continual_training(tiny_bert_dir, shop, tmp_path):
    dataset, split = shop
    config = small_config(tiny_bert_dir, epochs=2, patience=5)
    # stopped by its time budget after epoch 1 (one step); the budget is a setting a resumed run may change
    cut = Trainer(dataset, split, config.model_copy(update={"max_minutes": 1e-6}), tmp_path, progress=False).fit()
    assert cut.stopped == "time budget" and [r["epoch"] for r in cut.history] == [1]
    resumed = Trainer(dataset, split, config, tmp_path, progress=False).fit(resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    first = train_and_evaluate(dataset, split, small_config(tiny_bert_dir), name="base", out_root=tmp_path / "a",
                               progress=False)
    again = Trainer(dataset, split, small_config(tiny_bert_dir), progress=False, init_bundle=first.path)
    np.testing.assert_allclose(again.catalogue_vectors(), first.recommender.item_vectors, atol=1e-5)


def test_a_run_killed_while_it_replaced_its_checkpoint_resumes_from_the_previous_one(tiny_bert_dir, shop, tmp_path,
                                                                                      monkeypatch):
    """A kill between removing the last checkpoint and renaming the new one into place left none: --resume
    silently trained from the first epoch again. The previous checkpoint is now kept until the new one is in place."""
    from pathlib import Path

    dataset, split = shop
    rename, saves = Path.rename, []

    def killed_at_second_save(self, target):
        if self.name == "checkpoint.tmp":
            saves.append(self)
            if len(saves) == 2:
                raise KeyboardInterrupt
        return rename(self, target)

    config = small_config(tiny_bert_dir, epochs=2, patience=5)
    with monkeypatch.context() as patched:
        patched.setattr(Path, "rename", killed_at_second_save)
        with pytest.raises(KeyboardInterrupt):
            Trainer(dataset, split, config, tmp_path, progress=False).fit()
    trainer = Trainer(dataset, split, config, tmp_path, progress=False)
    epochs = []
    train_epoch = trainer._train_epoch
    monkeypatch.setattr(trainer, "_train_epoch", lambda epoch, *a: epochs.append(epoch) or train_epoch(epoch, *a))
    assert [r["epoch"] for r in trainer.fit(resume=True).history] == [1, 2]
    assert epochs == [1]  # epoch 2 only: epoch 1 came from the checkpoint


def test_cold_start_slice_is_targets_unseen_in_training(shop):
    _, split = shop
    assert cold_start_examples(split, split.test).height == 0  # every test target of this shop occurs in training
    examples = split.test.head(4)
    unseen = examples.with_columns(target=pl.Series(["never-sold", examples["target"][1], "never-sold-2",
                                                     examples["target"][3]]))
    cold = cold_start_examples(split, unseen)
    assert cold.equals(unseen[[0, 2]])
    assert cold["target"].to_list() == ["never-sold", "never-sold-2"]


def test_history_margin_marks_each_positions_own_history(tiny_bert_dir, shop):
    import torch
    dataset, split = shop
    trainer = Trainer(dataset, split, small_config(tiny_bert_dir, history_margin=0.3), progress=False)
    device = trainer.device
    history = torch.tensor([[3, 1, 2], [4, 0, 0]], device=device)
    lengths = torch.tensor([3, 1], device=device)
    targets = torch.tensor([1, 2, 5, 4], device=device)  # next items at the 4 real positions (the 2nd repeats item 1)
    mask = trainer._history_mask(history, lengths, "sequence", 6, targets)
    expected = [[0, 0, 0, 1, 0, 0], [0, 1, 0, 1, 0, 0], [0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]]
    assert mask.tolist() == expected
    last = trainer._history_mask(history, lengths, "text", 6, torch.tensor([0, 3], device=device))
    assert last.tolist() == [[0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0]]
    assert trainer.fit().history  # trains with the margin


def test_items_unseen_in_training_are_left_out_of_the_softmax(tiny_bert_dir, shop):
    import torch
    dataset, split = shop
    trainer = Trainer(dataset, split, small_config(tiny_bert_dir), progress=False)
    unseen = torch.nonzero(~trainer.seen).flatten()
    if len(unseen) == 0:  # make one: pretend the first item never occurred in training
        trainer.seen[0] = False
        unseen = torch.tensor([0], device=trainer.device)
    trainer.refresh_bank()
    trainer.model.eval()  # no dropout: the two losses differ only by the mask
    batch = next(trainer._batches(np.random.default_rng(0)))
    batch = (batch[0], batch[1], torch.where(torch.isin(batch[2], unseen.cpu()), torch.tensor(-100), batch[2]))
    with_mask = trainer._loss(batch, False, np.random.default_rng(0))[0]
    trainer.config = trainer.config.model_copy(update={"exclude_unseen_negatives": False})
    without = trainer._loss(batch, False, np.random.default_rng(0))[0]
    assert with_mask < without  # fewer negatives in the denominator


def test_weight_average_is_what_validation_sees_and_what_is_kept(tiny_bert_dir, shop, tmp_path):
    dataset, split = shop
    config = small_config(tiny_bert_dir, epochs=3, patience=5, average_epochs=2.0, lora={"method": "none"})
    trainer = Trainer(dataset, split, config, tmp_path, progress=False)
    average = trainer.average
    assert average is not None and average.decay == pytest.approx(1 - 1 / (2 * trainer.steps_per_epoch))
    assert not any(name.startswith("bert.") for name in average.parameters)  # heads only, not the adapters
    result = trainer.fit()
    assert average.updates == 3 * trainer.steps_per_epoch
    # the kept (best) state is the average validated at its epoch: restored, it scores what that epoch reported
    assert trainer.validate()["ndcg@10"] == pytest.approx(result.best_valid_ndcg)
    # a refit keeps its last epoch's state: exactly the final average, which the checkpoint holds as the best state
    # beside different raw weights
    refit = Trainer(dataset, split, config.model_copy(update={"refit_epochs": 2}), tmp_path / "refit", progress=False)
    refit.fit()
    best = load_file(tmp_path / "refit" / "checkpoint" / "best.safetensors")
    raw_last = load_file(tmp_path / "refit" / "checkpoint" / "model.safetensors")
    for name, parameter in refit.average.parameters.items():
        assert torch.equal(parameter.detach(), refit.average.shadow[name]) and torch.equal(best[name], parameter)
    assert any(not torch.equal(best[name], raw_last[name]) for name in refit.average.parameters)
    raw = {name: p.detach().clone() for name, p in average.parameters.items()}
    for name in average.shadow:
        average.shadow[name].copy_(raw[name] + 1.0)
    with average.applied():
        assert all(torch.equal(p.detach(), raw[n] + 1.0) for n, p in average.parameters.items())
    assert all(torch.equal(p.detach(), raw[n]) for n, p in average.parameters.items())  # raw weights back
    # a resumed run picks the average up where the checkpoint left it (the run is over: nothing more to train)
    resumed = Trainer(dataset, split, config, tmp_path, progress=False)
    resumed.fit(resume=True)
    assert resumed.average.updates == 3 * trainer.steps_per_epoch


def test_weight_average_first_steps_follow_the_weights():
    weight = torch.nn.Parameter(torch.zeros(3))
    average = WeightAverage({"w": weight}, horizon_steps=100)
    with torch.no_grad():
        weight.fill_(1.0)
    average.update()  # the first update's decay is 1/10, not 0.99: the average does not stay at the random start
    assert torch.allclose(average.shadow["w"], torch.full((3,), 0.9))
    with pytest.raises(ValueError, match="at least one step"):
        WeightAverage({"w": weight}, horizon_steps=0.5)


def test_smoothed_cross_entropy_is_torchs_label_smoothing_over_the_allowed_classes():
    from encoders.losses import smoothed_cross_entropy

    torch.manual_seed(0)
    logits, targets = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 1])
    assert smoothed_cross_entropy(logits, targets) == torch.nn.functional.cross_entropy(logits, targets)
    torch.testing.assert_close(smoothed_cross_entropy(logits, targets, 0.1),
                               torch.nn.functional.cross_entropy(logits, targets, label_smoothing=0.1))
    # classes 3 and 4 masked out (as unseen items are): the smoothing spreads over the other three only, and the
    # loss equals torch's on those three columns, not a huge number from the masked logits
    allowed = torch.tensor([True, True, True, False, False])
    keep = torch.isin(targets, torch.tensor([0, 1, 2]))
    masked = logits.masked_fill(~allowed, -1e4)
    torch.testing.assert_close(smoothed_cross_entropy(masked[keep], targets[keep], 0.2, allowed),
                               torch.nn.functional.cross_entropy(logits[keep][:, :3], targets[keep],
                                                                 label_smoothing=0.2))
    assert smoothed_cross_entropy(masked[keep], targets[keep], 0.2, allowed) < 10


def test_label_smoothing_reaches_the_training_loss(tiny_bert_dir, shop, monkeypatch):
    from pydantic import ValidationError

    import encoders.objective as objective

    seen, real = [], objective.smoothed_cross_entropy
    monkeypatch.setattr(objective, "smoothed_cross_entropy",
                        lambda logits, targets, smoothing, allowed: seen.append((smoothing, allowed)) or
                        real(logits, targets, smoothing, allowed))
    dataset, split = shop
    trainer = Trainer(dataset, split, small_config(tiny_bert_dir, label_smoothing=0.3), progress=False)
    trainer.refresh_bank()
    batch = next(trainer._batches(np.random.default_rng(0)))
    loss = trainer._loss(batch, False, np.random.default_rng(0))[0]
    assert torch.isfinite(loss) and seen[0][0] == 0.3
    assert torch.equal(seen[0][1], trainer.seen)  # the softmax covers the whole catalogue, unseen items masked
    with pytest.raises(ValidationError, match=r"label_smoothing\n  Input should be less than 1"):
        small_config(tiny_bert_dir, label_smoothing=1.0)
    with pytest.raises(ValidationError, match=r"label_smoothing\n  Input should be greater than or equal to 0"):
        small_config(tiny_bert_dir, label_smoothing=-0.1)


def test_resuming_a_checkpoint_of_other_settings_is_one_clear_error(tiny_bert_dir, shop, tmp_path):
    """--resume after changing the towers' settings: a RecsysError naming the run directory and what to do (was:
    a KeyError traceback for unknown tensors, or torch's size mismatch)."""
    from recsys.errors import RecsysError

    dataset, split = shop
    Trainer(dataset, split, small_config(tiny_bert_dir), tmp_path, progress=False).fit()
    forget_config(tmp_path / "checkpoint")  # a checkpoint from before the config was stored: its tensors tell
    for changed in ({"tower": TowerConfig(user_tower="text", dim=16, item_max_length=24, history_max_length=48)},
                    {"tower": TowerConfig(dim=24, item_max_length=24, history_max_length=48, seq_layers=1)}):
        trainer = Trainer(dataset, split, small_config(tiny_bert_dir, epochs=2, **changed), tmp_path, progress=False)
        with pytest.raises(RecsysError, match="its checkpoint is of a run with other settings .*: resume with that "
                                              "run's settings, or train afresh"):
            trainer.fit(resume=True)


def forget_config(checkpoint) -> None:
    """Make `checkpoint` one written before trainer.json stored the TrainConfig."""
    trainer = json.loads((checkpoint / "trainer.json").read_text())
    del trainer["config"]
    (checkpoint / "trainer.json").write_text(json.dumps(trainer))


def test_resuming_with_other_settings_names_them_and_refuses(tiny_bert_dir, shop, tmp_path):
    """A 3-epoch run resumed with --epochs 4 went on with the old run's state under the new run's learning-rate
    schedule, silently. The checkpoint now stores its TrainConfig and a resume with other settings is one error
    naming each one with both values; the budget and what is done after training may change; a checkpoint without
    the config resumes as before."""
    from encoders.checkpoint import config_record
    from recsys.errors import RecsysError

    dataset, split = shop
    config = small_config(tiny_bert_dir, epochs=1, patience=5)
    Trainer(dataset, split, config, tmp_path, progress=False).fit()
    checkpoint = tmp_path / "checkpoint"
    assert json.loads((checkpoint / "trainer.json").read_text())["config"] == config_record(config)
    before = (checkpoint / "trainer.json").read_text()
    changed = config.model_copy(update={"epochs": 2, "lr": 1e-3, "lora": config.lora.model_copy(update={"rank": 8})})
    with pytest.raises(RecsysError) as refused:
        Trainer(dataset, split, changed, tmp_path, progress=False).fit(resume=True)
    assert str(refused.value) == (
        f"{tmp_path}: its checkpoint was trained with other settings (epochs: 1 → 2; lora.rank: 4 → 8; lr: 0.003 → "
        "0.001): start a fresh run (without --resume, or with another --run-dir), or resume with the checkpoint's "
        "settings")
    assert (checkpoint / "trainer.json").read_text() == before  # refused before training
    safe = config.model_copy(update={"max_minutes": 5.0, "merge_adapters": True, "zero_shot_blend": (0.0, 0.5),
                                     "index": config.index.model_copy(update={"kind": "flat"})})
    assert [r["epoch"] for r in Trainer(dataset, split, safe, tmp_path, progress=False).fit(resume=True).history] \
        == [1]
    forget_config(checkpoint)
    longer = config.model_copy(update={"epochs": 2})
    assert [r["epoch"] for r in Trainer(dataset, split, longer, tmp_path, progress=False).fit(resume=True).history] \
        == [1, 2]


def test_a_run_directory_whose_checkpoint_is_other_work_is_refused_not_replaced(tiny_bert_dir, shop, tmp_path):
    """--run-dir at a directory with a `checkpoint` of something else: refused before training (was: deleted by
    the first epoch's checkpoint save)."""
    from recsys.errors import RecsysError

    dataset, split = shop
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "weights.bin").write_bytes(b"someone else's")
    with pytest.raises(RecsysError, match="exists and is not a training checkpoint .*: choose another --run-dir"):
        Trainer(dataset, split, small_config(tiny_bert_dir), tmp_path, progress=False).fit()
    assert (tmp_path / "checkpoint" / "weights.bin").read_bytes() == b"someone else's"


def test_the_future_target_is_each_positions_item_after_next():
    """`future_weight`: each position's logits also score the item two steps on; the last position of each
    sequence has none and padding none (two sequences: 3 and 1 valid positions)."""
    from types import SimpleNamespace

    from encoders.objective import NextItemObjective

    torch.manual_seed(0)
    objective = NextItemObjective.__new__(NextItemObjective)
    objective.config, objective.device = SimpleNamespace(label_smoothing=0.0), torch.device("cpu")
    valid = torch.tensor([[True, True, True], [True, False, False]])
    positives = torch.tensor([5, 7, 9, 2])  # next items, row-major over the valid positions
    lookup = torch.arange(10)
    logits = torch.randn(4, 10)
    loss = objective._future_loss(logits, lookup, positives, valid, None)
    # position 0 of row 0 → 7, position 1 → 9; row 0's last position and row 1's only one have no item after next
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits[:2], torch.tensor([7, 9])))
    assert objective._future_loss(logits[3:], lookup, positives[3:], valid[1:], None) == 0


def test_the_future_target_reaches_the_training_loss(tiny_bert_dir, shop):
    dataset, split = shop
    losses = []
    for weight in (0.0, 0.5):
        trainer = Trainer(dataset, split, small_config(tiny_bert_dir, future_weight=weight), progress=False)
        trainer.refresh_bank()
        batch = next(trainer._batches(np.random.default_rng(0)))
        losses.append(float(trainer._loss(batch, False, np.random.default_rng(0))[0].detach()))
    assert losses[1] > losses[0] + 0.5 * 1.0  # plus half a softmax loss over the catalogue (> 1 nat at the start)
