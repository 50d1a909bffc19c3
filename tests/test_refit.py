"""`recsys refit`: the towers trained again with the bundle's own settings on the events through a later step,
for exactly its chosen number of epochs (the last state kept), with the re-ranker's statistics refreshed alike."""

import pytest
from typer.testing import CliRunner

from encoders.refit import refit_config, refit_split
from jobs.cli import app
from recsys.artifacts import read_manifest
from recsys.data.synthetic import generate_shop
from recsys.errors import BundleError
from recsys.splits import split_dataset
from tests.test_lora import small_config


def test_refit_split_adds_each_steps_targets_and_keeps_the_examples():
    split = split_dataset(generate_shop(n_users=40, n_items=60, seed=1))
    valid = refit_split(split, "valid")
    assert valid.train.height == split.train.height + split.valid.height and valid.train.schema == split.train.schema
    assert valid.valid.equals(split.valid) and valid.test.equals(split.test)
    assert refit_split(split, "test").train.height == split.train.height + split.valid.height + split.test.height
    with pytest.raises(ValueError, match="through must be one of"):
        refit_split(split, "train")


def test_refit_config_repeats_the_chosen_run(tiny_bert_dir):
    config = small_config(tiny_bert_dir, epochs=30, zero_shot_blend=(0.0, 0.1, 0.3))
    train = {"config": config.model_dump(mode="json"), "best_epoch": 22, "zero_shot_blend": {"weight": 0.3}}
    refit = refit_config(train)
    assert (refit.refit_epochs, refit.epochs, refit.zero_shot_blend) == (22, 30, (0.3,))
    assert refit.model_copy(update={"refit_epochs": None, "zero_shot_blend": (0.0, 0.1, 0.3)}) == config
    assert refit_config({**train, "zero_shot_blend": {"weight": 0.0}}).zero_shot_blend == ()
    for broken, message in (({"config": {**train["config"], "ensemble": 3}}, "seed ensemble"),
                            ({"best_epoch": 0}, "no best epoch")):
        with pytest.raises(BundleError, match=message):
            refit_config({**train, **broken})


def test_a_refit_trains_exactly_its_epochs_and_keeps_the_last_state(tiny_bert_dir):
    from encoders.training import Trainer

    shop = generate_shop(n_users=60, n_items=90, seed=2)
    trainer = Trainer(shop, split_dataset(shop), small_config(tiny_bert_dir, epochs=5, refit_epochs=2, patience=1),
                      progress=False)
    result = trainer.fit()
    assert [row["epoch"] for row in result.history] == [1, 2] and result.best_epoch == 2
    assert result.best_valid_ndcg == result.history[-1]["valid_ndcg@10"]  # the last state, whatever validation says


@pytest.fixture(scope="module")
def engine(trained_bundle, tmp_path_factory):
    """(dataset dir, the trained tiny bundle with a small re-ranker, that dataset's split)."""
    from encoders.loading import load_recommender
    from recsys.ranker import RankerConfig
    from recsys.ranker_training import train_reranker

    root = tmp_path_factory.mktemp("refit")
    dataset = generate_shop(n_users=60, n_items=90, seed=2)  # the trained bundle's data
    split = split_dataset(dataset)
    recommender = load_recommender(trained_bundle)
    recommender.reranker, _ = train_reranker(recommender, split, RankerConfig(candidates=30, n_estimators=20,
                                                                              early_stopping_rounds=5, cv_folds=0),
                                             log=lambda *_: None)
    manifest = {k: v for k, v in read_manifest(trained_bundle).items() if k in ("name", "dataset", "train")}
    return dataset.save(root / "shop"), recommender.save(root / "models" / "v1", manifest), split


def test_refit_command_writes_an_engine_that_has_seen_the_valid_step(engine, trained_bundle, tmp_path):
    from encoders.loading import load_recommender

    data, bundle, split = engine
    runner = CliRunner()
    result = runner.invoke(app, ["refit", "--bundle", str(bundle), "--data", str(data), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "r")
    record = manifest["train"]["refit"]
    assert (record["through"], record["epochs"]) == ("valid", read_manifest(bundle)["train"]["best_epoch"])
    # what ended the refit is kept and printed, as `train.stopped` is for a run (was: the first run's reason only)
    assert record["stopped"] == "refit epochs"
    assert manifest["train"]["stopped"] == read_manifest(bundle)["train"]["stopped"]  # the first run's, kept
    said = " ".join(result.output.split())
    assert "stopped: refit epochs)" in said and "the valid figures printed after each epoch are in-sample" in said
    assert (record["events_before"], record["events"]) == (split.train.height, split.train.height + split.valid.height)
    assert [row["model"] for row in record["test"]] == ["bundle: towers", "bundle: engine",
                                                        "refit through valid: towers", "refit through valid: engine"]
    assert "refit through valid: engine: 100%" in result.stderr  # a bar while the test lists are scored
    for part in ("towers", "engine"):
        diff = record["test"][2 + (part == "engine")]["ndcg@10"] - record["test"][part == "engine"]["ndcg@10"]
        assert record[f"{part}_n@10_diff"]["diff"] == pytest.approx(diff)
    assert {row["split"] for row in manifest["metrics"]} == {"test"}  # valid is training data now
    refit = load_recommender(tmp_path / "r")
    assert refit.reranker.stats.config.through == "valid"
    assert refit.reranker.stats.events() == split.train.height + split.valid.height
    assert (refit.item_vectors != load_recommender(bundle).item_vectors).any()  # new towers
    refused = runner.invoke(app, ["evaluate", "--data", str(data), "--bundle", str(tmp_path / "r"), "--no-baselines",
                                  "--splits", "valid", "--out", str(tmp_path / "no.json")])
    assert refused.exit_code == 2 and "its valid targets are among them" in " ".join(refused.output.split())
    assert "`recsys refresh-stats` or `recsys refit`" in " ".join(refused.output.split())
    assert "in-sample" not in refused.output  # refused before the note about in-sample valid rows
    for target, message in ((tmp_path / "r", "already counts the events through the valid step"),
                            (trained_bundle, "has no re-ranker")):
        bad = runner.invoke(app, ["refit", "--bundle", str(target), "--data", str(data)])
        assert bad.exit_code == 2 and message in bad.output and "Traceback" not in bad.output, bad.output
    bad = runner.invoke(app, ["refit", "--bundle", str(bundle), "--data", str(data), "--through", "train"])
    assert bad.exit_code == 2 and "must be valid or test" in bad.output
    served = runner.invoke(app, ["refit", "--bundle", str(bundle), "--data", str(data), "--through", "test",
                                 "--out", str(tmp_path / "all")])
    assert served.exit_code == 0, served.output
    record = read_manifest(tmp_path / "all")["train"]["refit"]
    assert record["events"] == split.train.height + split.valid.height + split.test.height and "test" not in record
    assert load_recommender(tmp_path / "all").reranker.stats.config.through == "test"


def test_a_refit_keeps_the_bundles_diversification_and_refuses_a_new_ranker(engine, tmp_path):
    """A bundle diversified with `recsys diversify` keeps its setting through a refit (the refit's towers were
    assembled with the default one: the shop's MMR weight, near-duplicate threshold and depth were silently lost,
    while the manifest's `diversify` record still named them)."""
    from encoders.loading import load_recommender

    data, bundle, _ = engine
    runner = CliRunner()
    set_ = runner.invoke(app, ["diversify", "--bundle", str(bundle), "--weight", "0.1", "--duplicate-threshold",
                               "0.95", "--depth", "40", "--out", str(tmp_path / "div")])
    assert set_.exit_code == 0, set_.output
    result = runner.invoke(app, ["refit", "--bundle", str(tmp_path / "div"), "--data", str(data), "--through", "test",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    kept = load_recommender(tmp_path / "r").config.diversify
    assert (kept.weight, kept.duplicate_threshold, kept.depth) == (0.1, 0.95, 40)
    assert read_manifest(tmp_path / "r")["diversify"]["after"]["depth"] == 40
    # the refit towers learned the valid (here: every) target, so a re-ranker learning on the valid step over them
    # would read its answers, and its train-split statistics dropped the evaluation guard: refused, naming the parent
    ranker = runner.invoke(app, ["train-ranker", "--bundle", str(tmp_path / "r"), "--data", str(data),
                                 "--out", str(tmp_path / "rr")])
    said = " ".join(ranker.output.replace("│", " ").split())
    assert ranker.exit_code == 2 and "were refit through the test step" in said, said
    assert str(tmp_path / "div") in said and "Traceback" not in said and not (tmp_path / "rr").exists()
