"""Training at catalogue scale: the passes each epoch repeats show a bar when slow, and only one approximate index
is trained for a run whose zero-shot blend replaces the plain towers' recommender."""

import pytest

import recsys.progress
import recsys.retrieval.index as index_module
from encoders.blend import BlendedHistoryEncoder
from encoders.experiment import train_and_evaluate
from recsys.config import IndexConfig
from tests.test_lora import small_config


@pytest.fixture()
def built_kinds(monkeypatch):
    """The kind of every index built, in order."""
    kinds, new_index = [], index_module.new_index

    def recording(config, vectors):
        kinds.append(config.kind)
        return new_index(config, vectors)

    monkeypatch.setattr(index_module, "new_index", recording)
    return kinds


@pytest.mark.parametrize("weights, blended", [((0.5,), True), ((0.0,), False)])
def test_one_approximate_index_is_trained_whether_or_not_the_blend_wins(tiny_bert_dir, shop, built_kinds, weights,
                                                                          blended):
    dataset, split = shop
    config = small_config(tiny_bert_dir, zero_shot_blend=weights, zero_shot_dims=8, index=IndexConfig(kind="hnsw"))
    trained = train_and_evaluate(dataset, split, config, name="tiny", progress=False)
    assert isinstance(trained.recommender.user_tower, BlendedHistoryEncoder) == blended
    assert [k for k in built_kinds if k != "flat"] == ["hnsw"]  # not one for the plain towers, then the blend's
    assert trained.recommender.index.config.kind == "hnsw" and trained.index["kind"] == "hnsw"
    width = trained.result.item_vectors.shape[1]
    assert trained.recommender.item_vectors.shape[1] == width + (8 if blended else 0)


@pytest.mark.parametrize("after, shown", [(0.0, True), (600.0, False)])
def test_the_passes_an_epoch_repeats_show_a_bar_only_when_slow(tiny_bert_dir, shop, capsys, monkeypatch, after,
                                                                shown):
    dataset, split = shop
    monkeypatch.setattr(recsys.progress, "SLOW_PASS_SECONDS", after)
    train_and_evaluate(dataset, split, small_config(tiny_bert_dir, zero_shot_blend=(0.0, 0.5)), name="tiny",
                       progress=True)
    captured = capsys.readouterr()
    err = captured.err
    for bar in ("encoding the catalogue (adapted layers)", "validating", "zero-shot blend weight 0.5"):
        assert (bar in err) == shown, bar
    assert "epoch 1:" in captured.out  # the epoch's own line either way
