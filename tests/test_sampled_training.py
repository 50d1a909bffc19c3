"""Training whose step cost does not grow with the catalogue: sampled negatives with the logQ correction, epochs
of a fixed number of steps, max_minutes respected."""

import math
import time

import numpy as np
import torch

from encoders.stopping import STOP_REASONS, over_budget, stop_reason
from encoders.training import Trainer
from tests.test_lora import small_config


def sampled_config(tiny_bert_dir, **overrides):
    values = dict(negatives="auto", sampled_above=50, bank_size=24, steps_per_epoch=2, epochs=6, patience=6,
                  valid_sample=None)
    values.update(overrides)
    return small_config(tiny_bert_dir, **values)


def test_sampled_negatives_train_on_a_generated_catalogue(tiny_bert_dir, shop, tmp_path):
    dataset, split = shop  # 120 generated items: above sampled_above=50, so "auto" samples
    trainer = Trainer(dataset, split, sampled_config(tiny_bert_dir), tmp_path, progress=False)
    assert trainer.negatives == "bank" and trainer.steps_per_epoch == 2
    widths = []
    inclusion = trainer._log_inclusion
    trainer._log_inclusion = lambda rows, n: (widths.append(len(rows)), inclusion(rows, n))[1]
    untrained = trainer.validate()["ndcg@10"]
    result = trainer.fit()
    assert [r["step"] for r in result.history] == [2, 4, 6, 8, 10, 12]  # epochs counted in steps
    assert len(widths) == 12
    # each step's softmax: the batch's positives and histories plus 24 sampled items, never the whole catalogue
    assert all(w < len(trainer.data.item_ids) for w in widths), widths
    assert result.best_valid_ndcg > untrained + 0.02, (untrained, result.history)
    small = Trainer(dataset, split, sampled_config(tiny_bert_dir, sampled_above=500), progress=False)
    assert small.negatives == "catalogue"  # below the threshold: the exact softmax


def test_log_q_correction_is_the_chance_to_be_in_the_sampled_set(tiny_bert_dir, shop):
    dataset, split = shop
    trainer = Trainer(dataset, split, sampled_config(tiny_bert_dir), progress=False)
    counts = trainer.data.target_counts()
    assert counts.sum() == trainer.data.n_targets
    rows = torch.tensor([int(np.argmax(counts)), int(np.argmin(counts))])
    got = trainer._log_inclusion(rows, 32).tolist()
    n = len(trainer.data.item_ids)
    for row, value in zip(rows.tolist(), got):
        share = counts[row] / counts.sum()
        expected = math.log(1 - (1 - share) ** 32 * (1 - 24 / n))
        assert math.isclose(value, expected, rel_tol=1e-4), (row, value, expected)
    assert got[0] > got[1]  # the most frequent target is the likeliest in-batch negative: corrected most


def test_max_minutes_stops_within_the_first_epoch(tiny_bert_dir, shop):
    dataset, split = shop
    trainer = Trainer(dataset, split, sampled_config(tiny_bert_dir, max_minutes=1e-5, steps_per_epoch=None),
                      progress=False)
    assert trainer.steps_per_epoch > 1
    result = trainer.fit()
    assert [r["step"] for r in result.history] == [1]
    assert result.stopped == "time budget"


def test_the_time_budget_is_reported_only_when_it_cut_training_short(tiny_bert_dir, shop, capsys):
    dataset, split = shop
    trainer = Trainer(dataset, split, sampled_config(tiny_bert_dir, max_minutes=1e-5, epochs=3), progress=True)
    assert trainer.fit().stopped == "time budget"
    printed = capsys.readouterr().out
    assert "training stopped after epoch 1 of at most 3: its 1e-05-minute time budget" in printed
    # two epochs well inside a generous budget: they ran out, nothing to warn about
    done = Trainer(dataset, split, sampled_config(tiny_bert_dir, max_minutes=30, epochs=2), progress=True).fit()
    assert (done.stopped, len(done.history)) == ("epochs", 2)
    assert "time budget" not in capsys.readouterr().out
    # a learning rate too small to move any ranking: no epoch beats the first, patience 1 stops after the second
    stalled = Trainer(dataset, split, sampled_config(tiny_bert_dir, lr=1e-12, adapter_lr=1e-12, patience=1,
                                                     max_minutes=30), progress=False).fit()
    assert (stalled.stopped, len(stalled.history), stalled.best_epoch) == ("early stopping", 2, 1)
    assert stop_reason(True, True, True) == "early stopping"  # patience first: the budget did not cut it short
    assert stop_reason(False, True, True) == "refit epochs"
    assert (stop_reason(False, False, True), stop_reason(False, False, False)) == ("time budget", None)
    assert {"time budget", "epochs", "early stopping", "refit epochs"} == set(STOP_REASONS)
    now = time.perf_counter()
    assert over_budget(now - 61, 1.0) and not over_budget(now, 1.0)  # a minute's budget, spent / not yet
    assert not over_budget(now - 1e6, None) and not over_budget(now - 1e6, 0)  # no budget: never over
