"""Deterministic training: torch's deterministic algorithms for the span of a run, the same weights bit for bit."""

import torch

from encoders.presets import preset
from encoders.reproducible import deterministic_algorithms
from encoders.training import Trainer
from recsys.config import TrainConfig
from tests.test_sampled_training import sampled_config


def _fit_recording(trainer: Trainer) -> tuple[object, list[bool]]:
    """Fit `trainer`, recording at every step whether torch's deterministic algorithms were on."""
    seen: list[bool] = []
    step = trainer.loss_step
    trainer.loss_step = lambda *args: (seen.append(torch.are_deterministic_algorithms_enabled()), step(*args))[1]
    return trainer.fit(), seen


def test_deterministic_training_is_on_only_during_the_run_and_repeats_bit_for_bit(tiny_bert_dir, shop):
    dataset, split = shop
    config = sampled_config(tiny_bert_dir, epochs=2)  # deterministic by default
    first, seen = _fit_recording(Trainer(dataset, split, config, progress=False))
    assert seen and all(seen)
    assert not torch.are_deterministic_algorithms_enabled()  # the process-wide setting is back
    second = Trainer(dataset, split, config, progress=False).fit()
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert (first.item_vectors == second.item_vectors).all()
    _, seen = _fit_recording(Trainer(dataset, split, sampled_config(tiny_bert_dir, epochs=1, deterministic=False),
                                     progress=False))
    assert seen and not any(seen)  # off when asked
    assert TrainConfig().deterministic and preset("cpu").deterministic and preset("quickstart").deterministic


def test_the_context_restores_whatever_was_set_before():
    try:
        torch.use_deterministic_algorithms(True, warn_only=False)
        with deterministic_algorithms(True):
            assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        with deterministic_algorithms(False):
            assert torch.are_deterministic_algorithms_enabled()  # False leaves the setting alone
    finally:
        torch.use_deterministic_algorithms(False)
    try:
        with deterministic_algorithms(True):
            raise ValueError("a failing run")
    except ValueError:
        pass
    assert not torch.are_deterministic_algorithms_enabled()
