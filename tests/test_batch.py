"""Batch scoring: output layout, determinism, resume, unknown users, API parity, --from-batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.settings import Settings
from jobs.batch import BatchError, BatchOptions, read_shards, run_job
from jobs.batch.evaluate import evaluate_batch
from jobs.batch.scoring import ChunkScorer, results_table
from jobs.cli import app
from recsys.config import BuildConfig, EvalConfig
from recsys.data.dataset import Dataset
from recsys.data.synthetic import generate_shop
from recsys.errors import DataError, UnknownIdError
from recsys.evaluation import evaluate
from recsys.pipeline import RecommendationList, Recommender
from recsys.splits import split_dataset

N_USERS = 60


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """(dataset dir, bundle dir, recommender): a 60-user shop with seeded random 16-d item vectors."""
    root = tmp_path_factory.mktemp("batch")
    dataset = generate_shop(n_users=N_USERS, n_items=80, seed=5)
    dataset.save(root / "shop")
    vectors = np.random.default_rng(0).standard_normal((dataset.items.height, 16)).astype(np.float32)
    recommender = Recommender.build(dataset, split_dataset(dataset), vectors, BuildConfig())
    return root / "shop", recommender.save(root / "artifacts" / "shop" / "v1"), recommender


def options(shop, out: Path, **kwargs) -> BatchOptions:
    return BatchOptions(out=out, **{"bundle": shop[1], "k": 5, "chunk_size": 16, "progress": False, **kwargs})


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*.parquet"))}


def test_output_layout_and_manifest(shop, tmp_path):
    manifest = run_job(options(shop, tmp_path / "out"))
    assert manifest["n_users"] == N_USERS and manifest["n_chunks"] == 4 and manifest["n_rows"] == N_USERS * 5
    assert [s["file"] for s in manifest["shards"]] == [f"part-0000{i}.parquet" for i in range(4)]
    assert manifest["bundle_version"] == "v1" and manifest["has_ranker"] is False and manifest["k"] == 5
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["input_fingerprint"] == \
        manifest["input_fingerprint"]
    frame = read_shards(tmp_path / "out")
    assert frame.columns == ["user_id", "rank", "item_id", "score", "retrieval_score", "reason", "strategy"]
    assert frame["user_id"].to_list()[::5] == sorted(shop[2].histories)  # stable order: sorted ids
    assert frame["rank"].to_list()[:5] == [1, 2, 3, 4, 5]
    assert frame["retrieval_score"].null_count() == frame["reason"].null_count() == frame.height  # no ranker
    # exclude_seen (the API's default): nobody is recommended an item they already have
    seen = frame.join(pl.DataFrame({"user_id": list(shop[2].histories), "item_id": list(shop[2].histories.values())})
                      .explode("item_id"), on=["user_id", "item_id"])
    assert seen.height == 0


def test_k_above_the_catalogue_is_a_warning(shop, tmp_path):
    """k above the catalogue: the lists are shorter, and the manifest says why (was: silently fewer rows)."""
    manifest = run_job(options(shop, tmp_path / "out", users="sample:3", k=100, exclude_seen=False))
    assert manifest["n_rows"] == 3 * 80
    assert manifest["warnings"] == ["k 100 is above the bundle's catalogue of 80 items: each list holds at most 80 "
                                    "(fewer with --exclude-seen, the default, which leaves out the user's history)"]
    assert run_job(options(shop, tmp_path / "k80", users="sample:3", k=80))["warnings"] == []


def test_reasons_without_a_re_ranker_is_a_warning(shop, tmp_path):
    manifest = run_job(options(shop, tmp_path / "out", users="sample:2", reasons=True))
    assert read_shards(tmp_path / "out")["reason"].null_count() == 2 * 5
    assert manifest["warnings"] == ["--reasons: the bundle has no re-ranker, whose feature contributions the reasons "
                                    "are, so `reason` stays empty (null); add one with `recsys train-ranker`"]


def test_same_input_gives_identical_shards(shop, tmp_path):
    run_job(options(shop, tmp_path / "a"))
    run_job(options(shop, tmp_path / "b"))
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b") and len(shard_bytes(tmp_path / "a")) == 4


def test_resume_after_interrupted_run(shop, tmp_path):
    out = tmp_path / "out"

    def crash_after_two(result):
        if result.chunk == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(options(shop, out), on_chunk=crash_after_two)
    assert sorted(p.name for p in out.glob("part-*")) == ["part-00000.parquet", "part-00001.parquet"]
    assert not (out / "manifest.json").exists()
    with pytest.raises(BatchError, match="did not finish: rerun"):
        read_shards(out)
    (out / ".part-00002.parquet.tmp-deadbeef").write_bytes(b"half a shard")  # a kill mid-write
    kept = (out / "part-00000.parquet").stat().st_mtime_ns
    manifest = run_job(options(shop, out))
    assert manifest["run"]["resumed"] and manifest["run"]["chunks_skipped"] == 2
    assert manifest["run"]["chunks_scored"] == 2 and manifest["run"]["users_scored"] == N_USERS - 32
    assert (out / "part-00000.parquet").stat().st_mtime_ns == kept and not list(out.glob(".*tmp*"))
    run_job(options(shop, tmp_path / "fresh"))
    assert shard_bytes(out) == shard_bytes(tmp_path / "fresh")


def test_ctrl_c_says_what_was_kept(shop, tmp_path, monkeypatch):
    """`batch-score` interrupted said "completed shards are kept in OUT; rerun … to resume" also before its first
    shard, when the job had removed the directory it created (a walk-through's Ctrl-C 20 s into 40,000 users)."""
    import jobs.batch
    import jobs.batch.job

    real = jobs.batch.run_job

    def interrupt_after_two_shards(options, **kwargs):
        def stop(result):
            if result.chunk == 1:
                raise KeyboardInterrupt
        return real(options, on_chunk=stop)

    def interrupt_before_the_first_shard(*args, **kwargs):
        raise KeyboardInterrupt

    def run(out: Path) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["batch-score", "--bundle", str(shop[1]), "--out", str(out), "--k", "5",
                                          "--chunk-size", "16", "--no-progress", "--no-store"],
                                    env={"COLUMNS": "400"})
        return result.exit_code, " ".join(result.output.split())

    monkeypatch.setattr(jobs.batch, "run_job", interrupt_after_two_shards)
    code, output = run(tmp_path / "two")
    assert code == 130 and f"interrupted: 2 completed shards kept in {tmp_path / 'two'}; rerun the same command " \
                              "to resume" in output, output
    monkeypatch.setattr(jobs.batch, "run_job", real)
    monkeypatch.setattr(jobs.batch.job, "_engine", interrupt_before_the_first_shard)
    code, output = run(tmp_path / "none")
    assert code == 130 and f"interrupted: before the first shard was written: nothing kept in {tmp_path / 'none'}; " \
                           "rerun the same command to start again" in output, output
    assert not (tmp_path / "none").exists()  # the job removes a directory it created and wrote no shard to


def test_a_finished_job_run_again_says_there_is_nothing_to_score(shop, tmp_path):
    """Was "scored 60 users → 300 rows in 4 shards, 4 shards kept from a previous run; 0.0 s (0.0 users/s, local)",
    as `recsys encode` said before it got its "nothing to encode" line."""
    args = ["batch-score", "--bundle", str(shop[1]), "--out", str(tmp_path / "out"), "--k", "5", "--chunk-size", "16",
            "--no-progress", "--no-store"]
    first = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert first.exit_code == 0 and "scored 60 users → 300 rows in 4 shards;" in first.output, first.output
    again = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert again.exit_code == 0, again.output
    assert " ".join(again.output.split()) == f"nothing to score: all 4 shards of 60 users were written by a previous " \
                                             f"run → {tmp_path / 'out'}"


def test_rerun_after_a_kill_before_the_job_file(shop, tmp_path):
    """A run killed while it wrote its inputs (before _job/job.json) leaves `_job/` alone: the rerun starts afresh
    (was: refused for good, 'not empty and holds no batch job')."""
    for leftover in ("users.parquet", ".users.parquet.tmp-deadbeef", ".job.json.tmp-deadbeef"):
        out = tmp_path / leftover
        (out / "_job").mkdir(parents=True)
        (out / "_job" / leftover).write_bytes(b"half a file")
        assert run_job(options(shop, out))["n_rows"] == N_USERS * 5
        assert read_shards(out)["user_id"].n_unique() == N_USERS and not list((out / "_job").glob(".*tmp*"))
    (tmp_path / "mine" / "_job").mkdir(parents=True)
    (tmp_path / "mine" / "_job" / "notes.txt").write_text("mine")
    with pytest.raises(BatchError, match="not empty and holds no batch job"):
        run_job(options(shop, tmp_path / "mine"))


def test_damaged_job_files(shop, tmp_path):
    """A damaged _job/job.json is one BatchError that --overwrite gets past, and a damaged _job/users.parquet is
    written again on resume (was: a JSONDecodeError / ArrowInvalid traceback, with --overwrite too)."""
    out = tmp_path / "out"
    run_job(options(shop, out))
    (out / "_job" / "job.json").write_text('{"format": "recsys-ba')
    with pytest.raises(BatchError, match="job.json is damaged \\(not a job file\\); use a new --out, or --overwrite"):
        run_job(options(shop, out))
    assert run_job(options(shop, out, overwrite=True))["n_rows"] == N_USERS * 5
    shards = shard_bytes(out)
    (out / "part-00001.parquet").unlink()
    (out / "_job" / "users.parquet").write_bytes(b"PAR1 half a file")
    manifest = run_job(options(shop, out))
    assert manifest["run"]["resumed"] and manifest["run"]["chunks_scored"] == 1 and shard_bytes(out) == shards


def test_a_bundle_missing_or_damaging_its_histories_is_one_bundle_error(shop, tmp_path):
    """The users to score come from the bundle's stats/histories.parquet, read before the engines verify the bundle:
    missing or damaged, it was polars' "No such file or directory (os error 2)" / "out of specification"."""
    import shutil

    from recsys.errors import BundleError

    bundle = Path(shutil.copytree(shop[1], tmp_path / "bundle"))
    histories = bundle / "stats" / "histories.parquet"
    histories.unlink()
    with pytest.raises(BundleError, match="file stats/histories.parquet listed in the manifest is missing"):
        run_job(options(shop, tmp_path / "out", bundle=bundle))
    histories.write_bytes(b"PAR1 half a file")
    with pytest.raises(BundleError, match="file stats/histories.parquet cannot be read [(]"):
        run_job(options(shop, tmp_path / "out", bundle=bundle))
    assert not (tmp_path / "out").exists()


def test_resume_with_different_inputs_is_refused(shop, tmp_path):
    run_job(options(shop, tmp_path / "out"))
    with pytest.raises(BatchError, match="different inputs \\(k: 5 → 6\\)"):
        run_job(options(shop, tmp_path / "out", k=6))
    assert run_job(options(shop, tmp_path / "out", k=6, overwrite=True))["n_rows"] == N_USERS * 6
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(BatchError, match="not empty and holds no batch job"):
        run_job(options(shop, tmp_path / "other", overwrite=True))


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".parquet"])
def test_unknown_users_are_reported_not_dropped(shop, tmp_path, suffix):
    known = sorted(shop[2].histories)[:3]
    ids = [known[2], "ghost-1", known[0], known[2], "ghost-2"]
    path = tmp_path / f"users{suffix}"
    if suffix == ".txt":
        path.write_text("# users to mail\n" + "\n".join(ids) + "\n\n")
    elif suffix == ".csv":
        pl.DataFrame({"user_id": ids}).write_csv(path)
    else:
        pl.DataFrame({"user_id": ids}).write_parquet(path)
    manifest = run_job(options(shop, tmp_path / "out", users=str(path)))
    assert manifest["input"] == {"source": str(path), "n_requested": 5, "n_duplicates": 1, "n_unknown": 2,
                                 "unknown_file": "unknown_users.txt"}
    assert (tmp_path / "out" / "unknown_users.txt").read_text() == "ghost-1\nghost-2\n"
    assert any("2 of 5 requested users are unknown" in w and "'ghost-1'" in w for w in manifest["warnings"])
    assert "1 duplicate user id in the input was scored once" in manifest["warnings"]  # (was: "1 … ids … were")
    assert read_shards(tmp_path / "out")["user_id"].unique(maintain_order=True).to_list() == [known[2], known[0]]
    with pytest.raises(UnknownIdError, match="unknown user ids: 'ghost-1', 'ghost-2'"):
        run_job(options(shop, tmp_path / "strict", users=str(path), strict=True))


def test_no_known_user_is_an_error(shop, tmp_path):
    (tmp_path / "users.txt").write_text("ghost-1\nghost-2\n")
    with pytest.raises(DataError, match="none of the 2 user ids is known to the bundle"):
        run_job(options(shop, tmp_path / "out", users=str(tmp_path / "users.txt")))


def test_user_lists_are_read_as_a_shop_writes_them(tmp_path):
    from jobs.batch.users import read_user_file, select_users

    (tmp_path / "spaced.csv").write_text("user_id\n U1 \nU2\t\n")
    assert read_user_file(tmp_path / "spaced.csv")[0].to_list() == ["U1", "U2"]  # as .txt lists and `import`
    pl.DataFrame({"user_id": [7.0, 8.0, None]}).with_columns(pl.col("user_id").fill_null(9.5)).write_parquet(
        tmp_path / "floats.parquet")  # pandas' integers with a missing value
    assert read_user_file(tmp_path / "floats.parquet")[0].to_list() == ["7", "8", "9.5"]
    (tmp_path / "latin1.txt").write_bytes(b"U1\nCaf\xe9\n")
    with pytest.raises(DataError, match="not UTF-8 text"):
        read_user_file(tmp_path / "latin1.txt")
    pl.DataFrame({"user_id": [["U1"], ["U2"]]}).write_parquet(tmp_path / "lists.parquet")
    with pytest.raises(DataError, match="column 'user_id' holds List.String. values"):
        read_user_file(tmp_path / "lists.parquet")
    (tmp_path / "header.csv").write_text("user_id\n")
    with pytest.raises(DataError, match="the user list holds no ids"):
        select_users(tmp_path / "header.csv", pl.DataFrame({"user_id": ["U1"]}))


def test_a_csv_list_skips_blank_lines_and_an_error_names_the_column_it_read(shop, tmp_path):
    known = sorted(u for u, h in shop[2].histories.items() if h)
    (tmp_path / "mail.csv").write_text(f"user_id\n{known[0]}\n\n{known[1]}\n\n")
    run_job(options(shop, tmp_path / "out", users=str(tmp_path / "mail.csv")))
    assert read_shards(tmp_path / "out")["user_id"].unique(maintain_order=True).to_list() == known[:2]
    (tmp_path / "wrong.csv").write_text("order,total\n1001,19.5\n")
    with pytest.raises(DataError, match="e.g. '1001'.*read from column 'order': the file has no `user_id` column"):
        run_job(options(shop, tmp_path / "wrong", users=str(tmp_path / "wrong.csv")))
    (tmp_path / "holes.csv").write_text(f"user_id,segment\n{known[0]},a\n,b\n")
    with pytest.raises(DataError, match="1 empty user id"):  # a row with other fields but no id is still an error
        run_job(options(shop, tmp_path / "holes", users=str(tmp_path / "holes.csv")))


def test_a_seeded_sample_of_users_is_scored_in_id_order(shop, tmp_path):
    everybody = sorted(u for u, h in shop[2].histories.items() if h)
    manifest = run_job(options(shop, tmp_path / "a", users="sample:7:3"))
    scored = read_shards(tmp_path / "a")["user_id"].unique(maintain_order=True).to_list()
    assert len(scored) == 7 and scored == sorted(scored) and set(scored) <= set(everybody)
    assert manifest["input"]["source"] == "sample:7:3" and manifest["input"]["n_requested"] == 7
    run_job(options(shop, tmp_path / "b", users="sample:7:3"))         # the same seed: the same users
    assert read_shards(tmp_path / "b")["user_id"].unique(maintain_order=True).to_list() == scored
    run_job(options(shop, tmp_path / "c", users="sample:7"))           # another seed (0): other users
    assert read_shards(tmp_path / "c")["user_id"].unique(maintain_order=True).to_list() != scored
    larger = run_job(options(shop, tmp_path / "d", users="sample:100000"))  # more than there are: everybody,
    n_all = run_job(options(shop, tmp_path / "e"))["n_users"]
    assert read_shards(tmp_path / "d")["user_id"].n_unique() == n_all
    # and said (was: silently fewer users than asked for)
    assert f"sample:100000 asks for more users than the bundle knows: all {n_all:,} of them were scored" \
        in larger["warnings"]
    assert not manifest["warnings"]
    for bad in ("sample:", "sample:0", "sample:x", "sample:5:-1", "sample:1:2:3"):
        with pytest.raises(DataError, match="sample:N"):
            run_job(options(shop, tmp_path / "bad", users=bad))


def test_api_and_batch_give_the_same_lists(shop, tmp_path):
    run_job(options(shop, tmp_path / "out", k=7))
    batch = read_shards(tmp_path / "out")
    with TestClient(create_app(shop[1], Settings(state_dir=tmp_path / "state"))) as client:
        for user in sorted(shop[2].histories)[::7]:
            body = client.get(f"/v1/users/{user}/recommendations", params={"k": 7}).json()
            rows = batch.filter(pl.col("user_id") == user)
            assert [i["item_id"] for i in body["items"]] == rows["item_id"].to_list()
            assert [i["score"] for i in body["items"]] == pytest.approx(rows["score"].to_list(), rel=1e-5)
            assert {body["strategy"]} == set(rows["strategy"].to_list())


def test_optional_ranker_fields_are_written_when_present():
    class Ranked(RecommendationList):
        pass

    plain = RecommendationList(["a", "b"], [0.9, 0.5], "personalised")
    ranked = Ranked(["c"], [2.0], "personalised")
    object.__setattr__(ranked, "retrieval_scores", [0.7])
    object.__setattr__(ranked, "explanations", [{"same_brand": 1.0}])
    table = results_table(["u1", "u2"], [plain, ranked])
    assert table.column("retrieval_score").to_pylist() == [None, None, 0.7]
    assert table.column("reason").to_pylist() == [None, None, '{"same_brand": 1.0}']
    assert table.column("rank").to_pylist() == [1, 2, 1]


def test_from_batch_evaluation_equals_the_evaluator(shop, tmp_path):
    data, bundle, recommender = shop
    config = EvalConfig(ks=(5, 10), splits=("test",))
    manifest = run_job(options(shop, tmp_path / "eval", k=10, data=data, split="test", exclude_seen=False))
    assert manifest["split"] == "test" and manifest["dataset_fingerprint"]
    from jobs.workflows import load_dataset
    dataset = load_dataset(data)
    split = split_dataset(dataset)
    rows = evaluate_batch(tmp_path / "eval", dataset, split, config)
    expected = evaluate(recommender, split.test, config)
    assert rows[0]["model"] == "batch:eval" and rows[0]["n_examples"] == expected["n_examples"] == N_USERS
    assert {k: rows[0][k] for k in expected} == pytest.approx(expected)
    with pytest.raises(BatchError, match="mask_history=False; rerun batch-score with --keep-seen"):
        run_job(options(shop, tmp_path / "masked", k=10, data=data, split="test"))
        evaluate_batch(tmp_path / "masked", dataset, split, config)
    run_job(options(shop, tmp_path / "stored"))
    with pytest.raises(BatchError, match="stored histories, which contain the held-out items"):
        evaluate_batch(tmp_path / "stored", dataset, split, config)


def test_evaluation_mode_warns_of_another_dataset_and_refuses_an_empty_split(shop, tmp_path):
    from jobs.workflows import load_dataset
    fingerprint = load_dataset(shop[0]).fingerprint()
    stamped = shop[2].save(tmp_path / "stamped" / "v1", {"dataset": {"fingerprint": fingerprint}})
    assert run_job(options(shop, tmp_path / "own", bundle=stamped, data=shop[0], split="test"))["warnings"] == []
    generate_shop(n_users=N_USERS, n_items=80, seed=6).save(tmp_path / "other")
    manifest = run_job(options(shop, tmp_path / "other-out", bundle=stamped, data=tmp_path / "other", split="test"))
    assert [w for w in manifest["warnings"] if w.startswith("the bundle was built on another dataset")]
    items = generate_shop(n_users=N_USERS, n_items=80, seed=5).items  # two events a user: no test example
    ids = items["item_id"].to_list()
    events = {"user_id": ["u1", "u1", "u2", "u2"], "item_id": [ids[0], ids[1], ids[2], ids[0]],
              "timestamp": [1, 2, 3, 4]}
    Dataset("two", items, pl.DataFrame(events)).save(tmp_path / "two")
    with pytest.raises(DataError, match="the test split of this dataset is empty, and batch scoring in evaluation"):
        run_job(options(shop, tmp_path / "two-out", data=tmp_path / "two", split="test", exclude_seen=False))
    assert not (tmp_path / "two-out").exists()


def test_a_reranked_bundle_is_scored_at_each_examples_time_in_batch_and_evaluator_alike(shop, tmp_path):
    """The shop's timestamps are real times, so the re-ranker's statistics are point-in-time: evaluation mode
    scores each example at its own time, as `recsys evaluate` does (the same lists, to the item), and those
    lists differ from the ones the same histories get "now" (after every event)."""
    data = shop[0]
    dataset, split, engine = shop_engine(shop)
    assert engine.reranker.stats.config.time_mode == "absolute"
    bundle = engine.save(tmp_path / "engine" / "v1")
    run_job(BatchOptions(bundle=bundle, out=tmp_path / "eval", k=10, chunk_size=16, progress=False, data=data,
                         split="test", exclude_seen=False))
    batch = read_shards(tmp_path / "eval").group_by("user_id", maintain_order=True).agg("item_id")
    lists = dict(zip(batch["user_id"].to_list(), batch["item_id"].to_list()))
    histories = split.test["history"].to_list()
    at_own_time = engine.recommend_histories(histories, 10, as_of=split.test["timestamp"].to_list())
    assert [lists[u] for u in split.test["user_id"].to_list()] == at_own_time
    now = engine.recommend_histories(histories, 10)
    assert sum(a != b for a, b in zip(at_own_time, now)) >= N_USERS // 4
    config = EvalConfig(ks=(5, 10), splits=("test",))
    rows = evaluate_batch(tmp_path / "eval", dataset, split, config)
    expected = evaluate(engine, split.test, config)
    assert {k: rows[0][k] for k in expected} == pytest.approx(expected)


def test_cli_batch_score_and_evaluate_from_batch(shop, tmp_path):
    data, bundle, _ = shop
    runner = CliRunner()
    result = runner.invoke(app, ["batch-score", "--bundle", str(bundle.parent), "--out", str(tmp_path / "out"),
                                 "--k", "10", "--chunk-size", "25", "--data", str(data), "--split", "test",
                                 "--keep-seen", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"scored {N_USERS} users → {N_USERS * 10} rows in 3 shards" in result.output
    result = runner.invoke(app, ["evaluate", "--data", str(data), "--from-batch", str(tmp_path / "out"),
                                 "--ks", "5,10", "--splits", "test", "--out", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    assert "batch:out" in result.output
    assert json.loads((tmp_path / "eval.json").read_text())["results"][0]["n_examples"] == N_USERS
    result = runner.invoke(app, ["batch-score", "--bundle", str(bundle), "--out", str(tmp_path / "x"),
                                 "--engine", "spark"])
    assert result.exit_code == 2 and "--engine must be local or ray" in result.output


def test_evaluate_from_batch_reads_only_the_split_the_batch_was_scored_for(shop, tmp_path):
    """`evaluate --from-batch DIR --splits valid` on a batch scored for test reported test figures as if they were
    valid's: now one `error:` line naming the batch's split; with --splits naming it among others (the default
    valid,test), that split alone is evaluated and a note says so."""
    data, bundle, _ = shop
    runner = CliRunner()
    result = runner.invoke(app, ["batch-score", "--bundle", str(bundle), "--out", str(tmp_path / "test-batch"),
                                 "--k", "10", "--data", str(data), "--split", "test", "--keep-seen",
                                 "--no-progress", "--no-store"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "test-batch" / "manifest.json").read_text())["split"] == "test"
    args = ["evaluate", "--data", str(data), "--from-batch", str(tmp_path / "test-batch"), "--ks", "5,10"]
    refused = runner.invoke(app, [*args, "--splits", "valid", "--out", str(tmp_path / "valid.json")])
    flat = " ".join(refused.output.split())
    assert refused.exit_code == 2, refused.output
    assert f"error: {tmp_path / 'test-batch'} was scored for the test split, not valid (--splits valid): pass " \
           "--splits test, or score the valid split into another directory with `recsys batch-score --data D " \
           "--split valid --keep-seen --k 50`" in flat
    assert "Traceback" not in refused.output and not (tmp_path / "valid.json").exists()
    both = runner.invoke(app, [*args, "--out", str(tmp_path / "both.json")])  # --splits valid,test (the default)
    assert both.exit_code == 0, both.output
    payload = json.loads((tmp_path / "both.json").read_text())
    assert [(row["model"], row["split"], row["n_examples"]) for row in payload["results"]] == \
        [("batch:test-batch", "test", N_USERS)]
    note = f"{tmp_path / 'test-batch'} was scored for the test split only: its row is the test split's, with none " \
           "for valid (--splits valid,test)"
    assert payload["notes"] == [note]
    assert f"note: {note}" in " ".join(both.output.split())


def shop_engine(shop):
    """(the shop's dataset, its split, random item vectors with a re-ranker fit on its valid step)."""
    from jobs.workflows import load_dataset
    from recsys.ranker import RankerConfig
    from recsys.ranker_training import train_reranker

    dataset = load_dataset(shop[0])
    split = split_dataset(dataset)
    vectors = np.random.default_rng(0).standard_normal((dataset.items.height, 16)).astype(np.float32)
    engine = Recommender.build(dataset, split, vectors, BuildConfig())
    engine.reranker, _ = train_reranker(engine, split, RankerConfig(candidates=40, n_estimators=30,
                                                                    early_stopping_rounds=5, cv_folds=0),
                                        log=lambda *_: None)
    return dataset, split, engine


@pytest.fixture
def stamped_engine(shop, tmp_path):
    """A bundle with a re-ranker fit on the shop's valid step, its manifest naming the shop's fingerprint."""
    dataset, _, engine = shop_engine(shop)
    return engine.save(tmp_path / "engine" / "v1", {"dataset": {"fingerprint": dataset.fingerprint()}})


def test_evaluate_from_a_valid_batch_of_an_engine_notes_its_rows_are_in_sample(shop, stamped_engine, tmp_path):
    """A batch scored for valid by a bundle whose re-ranker was fit on that step: its N@10 is in-sample, and
    `evaluate --from-batch` now says so, as `evaluate --bundle` does (was: no note)."""
    data = shop[0]
    manifest = run_job(BatchOptions(bundle=stamped_engine, out=tmp_path / "valid-batch", k=10, chunk_size=16,
                                    progress=False, data=data, split="valid", exclude_seen=False))
    assert manifest["has_ranker"] and manifest["bundle_dataset_fingerprint"] == manifest["dataset_fingerprint"]
    args = ["evaluate", "--data", str(data), "--from-batch", str(tmp_path / "valid-batch"), "--ks", "5,10",
            "--splits", "valid", "--out", str(tmp_path / "eval.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    note = f"the re-ranker of the bundle that scored {tmp_path / 'valid-batch'} was fit on this dataset's valid " \
           "step, so the batch's valid rows are in-sample (optimistic); a batch scored for the test split is held " \
           "out. `recsys bench ranker-folds` gives a cross-fitted valid figure."
    assert f"note: {note}" in " ".join(result.output.split())
    payload = json.loads((tmp_path / "eval.json").read_text())
    assert payload["notes"] == [note] and [row["split"] for row in payload["results"]] == ["valid"]
    # a manifest written before the bundle's fingerprint was recorded: read from the bundle while it is there …
    from jobs.batch.evaluate import batch_notes, ranker_fit_on_batch_dataset
    old = {k: v for k, v in manifest.items() if k != "bundle_dataset_fingerprint"}
    assert ranker_fit_on_batch_dataset(old) is True
    assert batch_notes(old, tmp_path / "valid-batch", ("valid",)) == [note]
    # … unknowable once it is gone (or replaced): said, not guessed
    (stamped_engine / "manifest.json").rename(tmp_path / "moved.json")
    assert ranker_fit_on_batch_dataset(old) is None
    assert batch_notes(old, tmp_path / "valid-batch", ("valid",)) == [
        f"{tmp_path / 'valid-batch'} was scored by a bundle with a re-ranker, and neither the batch's manifest "
        f"(written before batch-score recorded the bundle's dataset) nor the bundle (no longer at {stamped_engine}) "
        "says which dataset it was fit on: if it was fit on this dataset's valid step, the batch's valid rows are "
        "in-sample (optimistic)"]
    # a re-ranker fit on another dataset, none at all, or a test batch: no in-sample note
    assert ranker_fit_on_batch_dataset({**manifest, "bundle_dataset_fingerprint": "other"}) is False
    assert ranker_fit_on_batch_dataset({**manifest, "has_ranker": False}) is False
    assert batch_notes({**manifest, "split": "test"}, tmp_path / "valid-batch", ("test",)) == []


def test_evaluation_mode_without_keep_seen_says_before_scoring_what_evaluate_will_need(shop, tmp_path):
    """`batch-score --data D --split test` keeps the API's --exclude-seen default, which `evaluate --from-batch`
    refuses under the published protocol: a note says so before the work (was: learnt only from evaluate's error,
    after the whole job); a handful of users' rate reads e.g. "2.5 users/s", not "0 users/s"."""
    data, bundle, _ = shop
    runner = CliRunner()
    args = ["batch-score", "--bundle", str(bundle), "--k", "10", "--data", str(data), "--split", "test",
            "--no-progress"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "seen")])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "note: evaluation mode with --exclude-seen (the default): `recsys evaluate --from-batch` reads this " \
           "output only with --mask-history; pass --keep-seen" in flat
    assert flat.index("note: evaluation mode") < flat.index("scored")
    result = runner.invoke(app, [*args, "--keep-seen", "--out", str(tmp_path / "kept")])
    assert result.exit_code == 0 and "note:" not in result.output, result.output


def test_the_summary_rate_keeps_a_decimal_below_ten_users_a_second():
    from jobs.batch_cmd import rate

    assert (rate(0.31), rate(2.54), rate(12.6), rate(1234.4)) == ("0.3", "2.5", "13", "1,234")


def test_ray_hint_names_the_extra_and_failures_leave_no_directory(shop, tmp_path, monkeypatch):
    import sys

    data, bundle, _ = shop
    runner = CliRunner()
    help_text = runner.invoke(app, ["batch-score", "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"}).output
    assert "bert-recsys[distributed]" in " ".join(help_text.replace("│", " ").split())  # Rich kept the extra's name
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    out = tmp_path / "no-ray"
    result = runner.invoke(app, ["batch-score", "--bundle", str(bundle), "--out", str(out), "--engine", "ray"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "pip install 'bert-recsys[distributed]'" in result.output
    assert "pip install -e '.[distributed]'" in result.output
    assert not out.exists()


def test_a_failed_ray_start_leaves_no_directory(shop, tmp_path, monkeypatch):
    pytest.importorskip("ray")

    def refuse(*args, **kwargs):
        raise ConnectionError("could not start Ray")

    monkeypatch.setattr("ray.init", refuse)
    monkeypatch.setattr("ray.is_initialized", lambda: False)
    with pytest.raises(ConnectionError):
        run_job(options(shop, tmp_path / "ray-failed", engine="ray"))
    assert not (tmp_path / "ray-failed").exists()  # no _job/ folder left behind
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(ConnectionError):
        run_job(options(shop, kept / "sub", engine="ray"))
    assert kept.is_dir() and not (kept / "sub").exists()


def test_explicit_histories_win_over_the_store(shop):
    from jobs.batch.layout import JobDir
    job = JobDir(Path("/nonexistent"), {"k": 3, "exclude_seen": True})
    recommender, user = shop[2], sorted(shop[2].histories)[0]
    given = [recommender.item_ids[0]]
    assert given[0] not in recommender.histories[user]
    table = ChunkScorer(shop[1], job, recommender).score([user], [given])
    expected = recommender.recommend_batch([given], 3, exclude_seen=True)[0].item_ids
    assert table.column("item_id").to_pylist() == expected and given[0] not in expected
    assert expected != recommender.recommend_batch([recommender.histories[user]], 3, exclude_seen=True)[0].item_ids
    assert table.column("user_id").to_pylist() == [user] * 3 and table.column("rank").to_pylist() == [1, 2, 3]


@pytest.fixture(scope="module")
def ranked_bundle(tmp_path_factory):
    """A bundle with a small LightGBM re-ranker trained on the planted-successor data set."""
    from recsys.ranker import RankerConfig
    from recsys.ranker_training import train_reranker
    from tests.test_ranker import N_ITEMS, planted_dataset

    dataset = planted_dataset()
    split = split_dataset(dataset)
    vectors = np.random.default_rng(1).normal(size=(N_ITEMS, 16)).astype(np.float32)
    recommender = Recommender.build(dataset, split, vectors, BuildConfig())
    config = RankerConfig(candidates=40, n_estimators=30, early_stopping_rounds=5, holdout_users=0.2)
    recommender.reranker, _ = train_reranker(recommender, split, config, log=lambda *_: None)
    return recommender.save(tmp_path_factory.mktemp("ranked") / "planted" / "v1"), recommender


def test_reranked_batch_matches_the_api_and_carries_reasons(ranked_bundle, tmp_path):
    bundle, recommender = ranked_bundle
    users = sorted(recommender.histories)[:90]
    (tmp_path / "users.txt").write_text("\n".join(users))
    common = {"bundle": bundle, "users": str(tmp_path / "users.txt"), "k": 8, "chunk_size": 32, "progress": False}
    manifest = run_job(BatchOptions(out=tmp_path / "plain", **common))
    assert manifest["has_ranker"] and manifest["reasons"] is False
    run_job(BatchOptions(out=tmp_path / "why", reasons=True, **common))
    plain, why = read_shards(tmp_path / "plain"), read_shards(tmp_path / "why")
    assert plain["reason"].null_count() == plain.height  # reasons are opt-in (they cost ~8× the scoring)
    assert why.drop("reason").equals(plain.drop("reason")) and why["reason"].null_count() == 0
    assert json.loads(why["reason"][0])["top_features"]
    with TestClient(create_app(bundle, Settings(state_dir=tmp_path / "state"))) as client:
        for user in users[::9]:
            body = client.get(f"/v1/users/{user}/recommendations", params={"k": 8}).json()
            rows = plain.filter(pl.col("user_id") == user)
            assert [i["item_id"] for i in body["items"]] == rows["item_id"].to_list()
            assert [i["score"] for i in body["items"]] == pytest.approx(rows["score"].to_list(), rel=1e-6)


def test_the_local_engine_loads_the_bundle_when_called_so_the_progress_bar_times_the_scoring_alone(monkeypatch):
    import jobs.batch.local_engine as local_engine

    calls: list[str] = []

    class Scorer:
        def __init__(self, bundle, job, recommender, threads):
            calls.append(f"load {bundle}")

        def run_chunk(self, chunk):
            calls.append(f"chunk {chunk}")
            return chunk

    monkeypatch.setattr(local_engine, "ChunkScorer", Scorer)
    results = local_engine.run_local("b", None, [0, 1])
    assert calls == ["load b"]  # before the first chunk is asked for (was: inside the bar's first tick)
    assert list(results) == [0, 1] and calls == ["load b", "chunk 0", "chunk 1"]


def test_a_chunk_is_scored_with_the_jobs_threads_in_faiss_and_torch_alike(shop, monkeypatch):
    """torch (a trained tower's user encoding) ran with every core in the local engine and one thread in a Ray
    actor: `retrieval_score` then differed in the last bit between the engines at the same --threads."""
    import faiss
    import torch

    from jobs.batch.layout import JobDir

    job = JobDir(Path("/nonexistent"), {"k": 3, "exclude_seen": True})
    recommender, user = shop[2], sorted(shop[2].histories)[0]
    seen = []
    scored = recommender.recommend_batch

    def recommend_batch(*args, **kwargs):
        seen.append((torch.get_num_threads(), faiss.omp_get_max_threads()))
        return scored(*args, **kwargs)

    monkeypatch.setattr(recommender, "recommend_batch", recommend_batch)
    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(2)
    try:
        for threads in (1, 3):
            ChunkScorer(shop[1], job, recommender, threads=threads).score([user])
            assert seen[-1] == (threads, threads)
            assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before[0])
        faiss.omp_set_num_threads(before[1])
