"""LightGBM re-ranker: learns a planted signal, round-trips through the bundle, refuses a wrong spec,
and serves explanations through the one recommend_batch path."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.config import BuildConfig, EvalConfig
from recsys.data.dataset import Dataset
from recsys.errors import BundleError
from recsys.evaluation import evaluate
from recsys.features import FeatureConfig
from recsys.pipeline import Recommender
from recsys.ranker import RankerConfig
from recsys.ranker_training import evaluate_reranker, train_reranker
from recsys.splits import SplitData, split_dataset

N_ITEMS, N_USERS = 120, 400
SMALL_RANKER = {"n_estimators": 30, "early_stopping_rounds": 5, "candidates": 20}
"""RankerConfig overrides for the probes' cross-fitting on the planted bundle (benchmarks/id_sequence.py, ease.py,
lexical.py): their tests check each report's rows and meta, which do not need the default's up to 400 trees over
200 candidates (9 of 10 s of each probe's test)."""


def planted_dataset(seed: int = 0) -> Dataset:
    """After item i users usually buy its successor (7i+3 mod n); the vectors know nothing about it."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(N_USERS):
        item = int(rng.integers(N_ITEMS))
        for t in range(int(rng.integers(5, 12))):
            rows.append((f"u{u}", f"i{item}", t))
            item = (7 * item + 3) % N_ITEMS if rng.random() < 0.8 else int(rng.integers(N_ITEMS))
    items = pl.DataFrame({"item_id": [f"i{i}" for i in range(N_ITEMS)], "text": [f"item {i}" for i in range(N_ITEMS)]})
    interactions = pl.DataFrame(rows, schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Int64},
                                orient="row")
    return Dataset("planted", items, interactions)


def planted_bundle(root: Path) -> tuple[Path, Path]:
    """(bundle, data directory) under `root`: the planted dataset saved, and a bundle on random item vectors."""
    dataset = planted_dataset()
    dataset.save(root / "data")
    vectors = np.random.default_rng(1).normal(size=(N_ITEMS, 16)).astype(np.float32)
    return Recommender.build(dataset, split_dataset(dataset), vectors, BuildConfig()).save(root / "b" / "v1"), \
        root / "data"


def planted_recommender(seed: int = 0) -> tuple[Recommender, SplitData]:
    """(towers-only recommender on random item vectors, split) of the planted dataset of `seed`: what the re-ranker
    tests fit on."""
    dataset = planted_dataset(seed)
    split = split_dataset(dataset)
    vectors = np.random.default_rng(1).normal(size=(N_ITEMS, 16)).astype(np.float32)
    return Recommender.build(dataset, split, vectors, BuildConfig()), split


@pytest.fixture(scope="module")
def trained():
    recommender, split = planted_recommender()
    config = RankerConfig(candidates=60, n_estimators=60, early_stopping_rounds=10, holdout_users=0.2)
    reranker, report = train_reranker(recommender, split, config, log=lambda *_: None)
    recommender.reranker = reranker
    return recommender, split, report


def test_ranker_learns_the_planted_signal(trained):
    recommender, split, report = trained
    result = evaluate_reranker(recommender, split.test, ks=(10,))
    assert report["stats"]["time_mode"] == "sequence"
    assert result["reranked"]["ndcg@10"] > 2 * result["retrieval"]["ndcg@10"] + 0.1
    assert result["reranked"]["recall@10"] <= result["candidate_recall@60"] + 1e-9  # misses stay misses
    assert next(iter(report["importance_gain"])) in {"trans_last", "trans_last_norm", "trans_recent",
                                                     "cooc_recent", "cooc_max"}
    # the evaluator's path (recommend_histories → recommend_batch) serves the same re-ranked lists
    plain = evaluate(recommender, split.test, EvalConfig(ks=(10,), splits=("test",)))
    assert plain["ndcg@10"] == pytest.approx(result["reranked"]["ndcg@10"])


def test_save_load_gives_identical_scores_and_explanations(trained, tmp_path):
    recommender, split, _ = trained
    path = recommender.save(tmp_path / "planted" / "v1")
    assert (path / "ranker" / "model.txt").is_file() and (path / "ranker" / "features.json").is_file()
    assert (path / "stats" / "ranker_stats" / "cooccurrence.composite.npy").is_file()
    loaded = Recommender.load(path)
    histories = split.test["history"].to_list()[:60]
    before = recommender.recommend_batch(histories, 10, explain=True)
    after = loaded.recommend_batch(histories, 10, explain=True)
    assert [r.item_ids for r in before] == [r.item_ids for r in after]
    assert [r.scores for r in before] == [r.scores for r in after]
    assert [r.explanations for r in before] == [r.explanations for r in after]
    why = after[0].explanations[0]
    assert len(why["top_features"]) == 3 and why["because_item_id"] in histories[0]
    user = split.test["user_id"][0]
    served = loaded.recommend_user(user, 5, explain=True)
    assert served.explanations is not None and len(served.explanations) == len(served.item_ids) == 5
    assert served.reranked and loaded.recommend_user(user, 5).explanations is None  # contributions only when asked
    retrieval_only = loaded.recommend_batch(histories[:3], 10, rerank=False)
    assert all(r.explanations is None and not r.reranked for r in retrieval_only)


@pytest.mark.parametrize("edit", ["rename", "version"])
def test_mismatched_feature_spec_is_refused(trained, tmp_path, edit):
    recommender, _, _ = trained
    path = recommender.save(tmp_path / "planted" / "v1")
    spec_file = path / "ranker" / "features.json"
    spec = json.loads(spec_file.read_text())
    if edit == "rename":
        spec["features"][0] = "something_else"
    else:
        spec["feature_version"] = 999
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="checksum"):
        Recommender.load(path)
    with pytest.raises(BundleError, match="feature"):
        Recommender.load(path, verify=False)


def test_train_ranker_command_writes_a_new_bundle_version(tmp_path):
    from typer.testing import CliRunner

    from jobs.cli import app
    from recsys.artifacts import read_manifest

    dataset = planted_dataset(seed=2)
    data = dataset.save(tmp_path / "data")
    vectors = np.random.default_rng(1).normal(size=(N_ITEMS, 16)).astype(np.float32)
    first = Recommender.build(dataset, split_dataset(dataset), vectors, BuildConfig()).save(
        tmp_path / "models" / "planted" / "v1", {"dataset": {"fingerprint": dataset.fingerprint()}})
    result = CliRunner().invoke(app, ["train-ranker", "--bundle", str(first), "--data", str(data),
                                      "--candidates", "40"])
    assert result.exit_code == 0, result.output
    # never silent while LightGBM fits (one trees bar per fold) and while the test lists are scored (on stderr)
    assert "fitting the re-ranker: fold 1/5" in result.stderr and "evaluating the lists as shown" in result.stderr
    newest = sorted(p for p in first.parent.iterdir() if p.name != "v1")
    assert len(newest) == 1
    manifest = read_manifest(newest[0])
    models = [row["model"] for row in manifest["ranker"]["test"]]
    assert models == ["retrieval-only", "re-ranked"] and "candidate_recall@40" in manifest["ranker"]
    assert manifest["dataset"]["fingerprint"] == dataset.fingerprint()
    assert Recommender.load(newest[0]).reranker is not None
    assert manifest["ranker"]["training"]["examples"] == N_USERS  # under the 50,000 default: every valid example
    assert all("sampled_from" not in row for row in manifest["ranker"]["test"])
    # large shops: learn from and evaluate on seeded samples of users, and say so
    sampled = CliRunner().invoke(app, ["train-ranker", "--bundle", str(first), "--data", str(data), "--candidates",
                                       "40", "--train-users", "300", "--eval-users", "150", "--out",
                                       str(tmp_path / "sampled")])
    assert sampled.exit_code == 0, sampled.output
    assert "a seeded sample of 400" in sampled.output and "150 of 400 (seeded sample)" in sampled.output
    manifest = read_manifest(tmp_path / "sampled")
    assert (manifest["ranker"]["training"]["examples"], manifest["ranker"]["training"]["valid_examples"]) == (300, 400)
    assert [row["n_examples"] for row in manifest["ranker"]["test"]] == [150, 150]
    other = planted_dataset(seed=3).save(tmp_path / "other")
    refused = CliRunner().invoke(app, ["train-ranker", "--bundle", str(first), "--data", str(other)])
    assert refused.exit_code == 2 and "another dataset" in refused.output


def test_train_ranker_config_file_sets_features_and_bad_files_are_refused(tmp_path):
    from typer.testing import CliRunner

    from jobs.cli import app
    from recsys.artifacts import read_manifest

    data, first = saved_planted_bundle(tmp_path)
    overrides = tmp_path / "ranker.json"
    overrides.write_text(json.dumps({"features": {"normalized_pairs": False, "sim_items": 7}, "num_leaves": 7,
                                     "cv_folds": 3}))
    base = ["train-ranker", "--bundle", str(first), "--data", str(data), "--candidates", "40"]
    result = CliRunner().invoke(app, [*base, "--config", str(overrides), "--cv-folds", "0", "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    config = read_manifest(tmp_path / "out")["ranker"]["config"]
    assert (config["num_leaves"], config["cv_folds"], config["candidates"]) == (7, 0, 40)  # the option wins
    assert config["features"] == {**FeatureConfig().model_dump(), "normalized_pairs": False, "sim_items": 7}
    loaded = Recommender.load(tmp_path / "out").reranker
    assert not {"cooc_cos_recent", "cooc_cos_decay"} & set(loaded.builder.names)
    assert loaded.builder.names == loaded.ranker.names and loaded.config.features.sim_items == 7
    # a ranker saved before `normalized_pairs` existed (its spec lacks the field) loads with them off
    spec_path = tmp_path / "out" / "ranker" / "features.json"
    spec = json.loads(spec_path.read_text())
    del spec["ranker"]["features"]["normalized_pairs"]
    spec_path.write_text(json.dumps(spec))
    older = Recommender.load(tmp_path / "out", verify=False).reranker
    assert older.config.features.normalized_pairs is False and older.builder.names == loaded.builder.names
    assert RankerConfig().features.normalized_pairs  # new rankers have them
    for content, message in [("{not json", "cannot read"), ("[1, 2]", "expected a JSON object"),
                             ('{"leaves": 3}', "unknown RankerConfig fields ['leaves']"),
                             ('{"features": {"decay": 2}}', "features.decay")]:
        overrides.write_text(content)
        refused = CliRunner().invoke(app, [*base, "--config", str(overrides)])
        assert refused.exit_code == 2 and message in refused.output and "Traceback" not in refused.output, content
    # one fold is no cross-fitting (it was taken, and fit as 0 folds): named by the option that gave it
    overrides.write_text('{"cv_folds": 1}')
    for extra, option in ((["--cv-folds", "1"], "--cv-folds"), (["--config", str(overrides)], "--config")):
        refused = CliRunner().invoke(app, [*base, *extra])
        flat = " ".join(refused.output.replace("│", " ").split())
        assert refused.exit_code == 2 and f"Invalid value for {option}" in flat and "1 fold is no cross-fitting" in flat


def saved_planted_bundle(tmp_path):
    """(dataset directory, towers-only bundle over it with random item vectors) for the CLI's ranker commands."""
    dataset = planted_dataset(seed=2)
    data = dataset.save(tmp_path / "data")
    vectors = np.random.default_rng(1).normal(size=(N_ITEMS, 16)).astype(np.float32)
    first = Recommender.build(dataset, split_dataset(dataset), vectors, BuildConfig()).save(
        tmp_path / "models" / "v1", {"dataset": {"fingerprint": dataset.fingerprint()}})
    return data, first


def test_train_ranker_takes_candidates_threads_and_seed_from_the_config_file_unless_given(tmp_path):
    """--config's candidates / n_jobs / seed apply when the options are not given (was: the options' defaults,
    200 / 1 / 0, always won, so the file's values were silently ignored); a given option still wins."""
    from typer.testing import CliRunner

    from jobs.cli import app
    from recsys.artifacts import read_manifest

    data, first = saved_planted_bundle(tmp_path)
    overrides = tmp_path / "ranker.json"
    overrides.write_text(json.dumps({"candidates": 30, "seed": 5, "cv_folds": 0}))
    base = ["train-ranker", "--bundle", str(first), "--data", str(data), "--config", str(overrides)]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "from-file")])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "from-file")["ranker"]
    assert (manifest["config"]["candidates"], manifest["config"]["seed"]) == (30, 5)
    assert "candidate_recall@30" in manifest and "re-ranked top-30" in result.output
    given = CliRunner().invoke(app, [*base, "--candidates", "40", "--out", str(tmp_path / "given")])
    assert given.exit_code == 0, given.output
    assert read_manifest(tmp_path / "given")["ranker"]["config"]["candidates"] == 40


def test_reranked_lists_keep_their_retrieval_scores(trained):
    recommender, split, _ = trained
    history = split.test["history"][0].to_list()
    reranked = recommender.recommend_batch([history], 5)[0]
    retrieved = recommender.recommend_batch([history], 60, rerank=False)[0]
    faiss_scores = dict(zip(retrieved.item_ids, retrieved.scores))
    assert reranked.retrieval_scores == pytest.approx([faiss_scores[i] for i in reranked.item_ids])
    assert retrieved.retrieval_scores is None


def test_listwise_objective_is_used_and_learns_the_planted_signal():
    """`objective="rank_xendcg"` reaches LightGBM (the saved model names it) and ranks the planted successor up;
    an unknown loss is refused when the config is made."""
    recommender, split = planted_recommender(3)
    config = RankerConfig(candidates=60, n_estimators=60, early_stopping_rounds=10, objective="rank_xendcg")
    reranker, _ = train_reranker(recommender, split, config, log=lambda *_: None)
    assert "objective=rank_xendcg" in reranker.ranker.booster.model_to_string()
    recommender.reranker = reranker
    result = evaluate_reranker(recommender, split.test, ks=(10,))
    assert result["reranked"]["ndcg@10"] > 2 * result["retrieval"]["ndcg@10"] + 0.1
    with pytest.raises(ValueError, match="objective"):
        RankerConfig(objective="regression")


def test_block_similarity_on_towers_without_a_zero_shot_block_says_so_and_adds_no_feature():
    recommender, split = planted_recommender()
    said: list[str] = []
    config = RankerConfig(candidates=30, n_estimators=10, cv_folds=0, features=FeatureConfig(block_similarity=True))
    reranker, report = train_reranker(recommender, split, config, log=said.append)
    assert any("no zero-shot block" in line for line in said)
    # the slow start (statistics, candidates) is said before it runs, not only its result after
    first = next(i for i, line in enumerate(said) if line.startswith("fitting the statistics on the train split and "
                                                                       "retrieving 30 candidates for"))
    assert first < next(i for i, line in enumerate(said) if line.startswith("valid step:"))
    assert reranker.config.features.trained_dim is None
    assert report["features"] == reranker.builder.names and "sim_last" in report["features"]
    assert not any(name.endswith(("_towers", "_text")) for name in report["features"])


def test_the_trees_bar_redraws_on_its_interval_not_once_per_tree(capsys):
    """The held-out NDCG beside the trees bar forced a redraw per tree (set_postfix refreshes by default)."""
    from recsys.ranker import Ranker

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] > 1).astype(int)
    groups = np.full(200, 20)
    config = RankerConfig(n_estimators=60, min_child_samples=5, early_stopping_rounds=60)
    Ranker.fit((x[:3200], y[:3200], groups[:160]), (x[3200:], y[3200:], groups[160:]), ["a", "b", "c", "d"], config,
               progress=True, desc="trees")
    drawn = capsys.readouterr().err
    assert "trees: 100%" in drawn and "holdout ndcg@10" in drawn  # the final state, with the NDCG
    assert drawn.count("\r") < 20  # 60 trees in well under a second: a few redraws (was one per tree)
