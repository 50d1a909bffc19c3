import io
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from recsys.artifacts import resolve_bundle

runner = CliRunner()


def run(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    result.flat = " ".join(result.output.replace("│", " ").split())  # long messages wrap in the terminal
    return result


@pytest.fixture(scope="module")
def shop_bundle(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("cli")
    result = run("import", "synthetic", "--out", root / "shop", "--users", 60, "--items", 80, "--seed", 3)
    assert result.exit_code == 0, result.output
    assert "imported synthetic-shop: 80 items, 60 users" in result.output
    result = run("build", "--data", root / "shop", "--out", root / "artifacts", "--name", "shop",
                 "--model", tiny_bert_dir)
    assert result.exit_code == 0, result.output
    # what it is doing is said before the slow start (BERT import and load), not after a silence
    assert result.output.index("reading the dataset") < result.output.index("loading BERT") \
        < result.output.index("full ranking over")
    return root, resolve_bundle(root / "artifacts" / "shop")


def test_build_writes_bundle_with_metrics(shop_bundle):
    _, bundle = shop_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    models = {(row["model"], row["split"]) for row in manifest["metrics"]}
    assert models == {("popularity", "valid"), ("bundle", "valid"), ("popularity", "test"), ("bundle", "test")}
    assert manifest["dataset"]["n_items"] == 80
    assert manifest["encoder"]["dim"] == 32
    # the default encoder is ONNX Runtime int8 (benchmarks/results/encoder.md), recorded in the bundle's config,
    # its graph exported into the (test) ONNX cache
    assert json.loads((bundle / "config.json").read_text())["encoder"]["backend"] == "onnx-int8"
    assert list(Path(os.environ["RECSYS_ONNX_CACHE"]).glob("*/item_tower.int8-*.onnx"))


def test_recommend_and_evaluate_commands(shop_bundle, tiny_bert_dir):
    root, bundle = shop_bundle
    result = run("recommend", "--bundle", bundle, "--user", "U00001", "--k", 3)
    assert result.exit_code == 0, result.output
    assert "strategy: personalised" in result.output and "in your history" in result.output
    out = root / "eval.json"
    result = run("evaluate", "--data", root / "shop", "--bundle", bundle, "--model", tiny_bert_dir,
                 "--ks", "5,10", "--splits", "test", "--out", out)
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert [r["model"] for r in payload["results"]] == ["popularity", "zero-shot-bert", f"bundle:{bundle.name}"]
    assert set(payload["results"][0]) >= {"recall@5", "ndcg@10", "mrr@10"}
    # the bundle and the on-the-fly zero-shot model are the same model: same numbers
    assert payload["results"][1]["ndcg@10"] == pytest.approx(payload["results"][2]["ndcg@10"])


@pytest.mark.parametrize("args,message", [
    (("build", "--data", "/no/such/dir"), "no such dataset directory"),
    (("evaluate", "--data", "/no/such/dir", "--ks", "0"),
     "Invalid value for --ks: '0' is not ≥ 1; expected comma-separated whole numbers ≥ 1 (got '0')"),
    (("evaluate", "--data", "/no/such/dir", "--splits", "valid,train"),
     "Invalid value for --splits: unknown split 'train'; choose from valid, test (got 'valid,train')"),
    (("refresh-stats", "--bundle", "/no/such/bundle", "--data", "/no/such/dir", "--store", "--kinds", "view,click"),
     "Invalid value for --kinds: unknown kind 'click'; choose from view, cart, purchase (got 'view,click')"),
    (("recommend", "--bundle", "/no/such/bundle", "--user", "x"), "no bundle here"),
    # repeats were taken in: --ks 10,10 was read as 10, --kinds view,view as view
    (("evaluate", "--data", "/no/such/dir", "--ks", "10,20,10"),
     "Invalid value for --ks: '10' is repeated; expected comma-separated whole numbers ≥ 1 (got '10,20,10')"),
    (("refresh-stats", "--bundle", "/no/such/bundle", "--data", "/no/such/dir", "--store", "--kinds", "view,view"),
     "Invalid value for --kinds: 'view' is repeated; choose from view, cart, purchase (got 'view,view')"),
])
def test_bad_input_is_one_clear_line(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.flat
    assert "Traceback" not in result.output


def test_a_bundle_or_dataset_path_of_the_wrong_kind_is_named_as_such(shop_bundle, tmp_path):
    """--bundle given the dataset's directory, a file or nothing; --data given the export's CSV: each error says
    which (was: "no bundle here (no manifest.json)" for all three, "no such dataset directory" for a file that
    exists)."""
    root, bundle = shop_bundle
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,timestamp\nu1,i1,1\n")
    cases = [
        (("recommend", "--bundle", root / "shop", "--user", "U00001"),
         f"error: {root / 'shop'}: no bundle here: it holds a dataset; make a bundle from it with `recsys build --data "
         f"{root / 'shop'}` or `recsys train --data {root / 'shop'}`"),
        (("batch-score", "--bundle", tmp_path / "nope", "--out", tmp_path / "recs"),
         f"error: {tmp_path / 'nope'}: no bundle here (no such directory)"),
        (("recommend", "--bundle", events, "--user", "U00001"),
         f"error: {events}: no bundle here (a file, not a bundle directory)"),
        (("evaluate", "--data", events, "--bundle", bundle, "--out", tmp_path / "e.json"),
         f"error: {events}: a file, not a dataset directory: make a dataset from a CSV/Parquet export with "
         "`recsys import table`"),
        # --out of `recsys build` given as --bundle, and --data given a bundle or that --out (was: "no bundle here (no
        # manifest.json); build one with `recsys build`", "not a dataset: expected schema.json …")
        (("recommend", "--bundle", root / "artifacts", "--user", "U00001"),
         f"error: {root / 'artifacts'}: no bundle here: it holds the bundles of shop; name one, e.g. "
         f"{root / 'artifacts' / 'shop'} (its newest version)"),
        (("evaluate", "--data", bundle, "--bundle", bundle, "--out", tmp_path / "e.json"),
         f"error: {bundle}: not a dataset: it holds a bundle (of the dataset 'synthetic-shop'), which --bundle takes; "
         "--data takes the directory `recsys import` wrote"),
        (("evaluate", "--data", root / "artifacts", "--out", tmp_path / "e.json"),
         f"error: {root / 'artifacts'}: not a dataset: it holds the bundles of shop, which --bundle takes"),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert message in result.flat, result.output
        assert "Traceback" not in result.output


def test_bad_presets_and_config_files_are_one_clear_line(shop_bundle, tmp_path):
    root, bundle = shop_bundle
    (tmp_path / "broken.json").write_text('{"epochs": ')
    (tmp_path / "list.json").write_text("[1, 2]")
    cases = [
        (("train", "--data", root / "shop", "--preset", "nope"), "Invalid value for --preset: unknown preset 'nope'; "
                                                                "choose from cpu, cpu-text-only"),
        (("train", "--data", root / "shop", "--config", tmp_path / "missing.json"),
         "Invalid value for --config: cannot read"),
        (("train", "--data", root / "shop", "--config", tmp_path / "broken.json"),
         "Invalid value for --config: cannot read"),
        (("train", "--data", root / "shop", "--config", tmp_path / "list.json"),
         "expected a JSON object of TrainConfig overrides"),
        (("bench", "quality", "--data", root / "shop", "--variants", "smoke,nope", "--out", tmp_path / "q"),
         "Invalid value for --variants: unknown preset 'nope'"),
        (("bench", "quality", "--data", root / "shop", "--variants", "smoke", "--config", tmp_path / "broken.json",
          "--out", tmp_path / "q"), "Invalid value for --config: cannot read"),
        (("train-ranker", "--bundle", bundle, "--data", root / "shop", "--config", tmp_path / "list.json"),
         "expected a JSON object of RankerConfig overrides"),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.flat and "Traceback" not in result.output, (args, result.output)
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("args", [
    ("bench", "latency", "--bundle", "/no/such/bundle", "--out", "/tmp/never"),
    ("bench", "engine", "--bundle", "/no/such/bundle", "--out", "/tmp/never"),
    ("bench", "quality", "--data", "/no/such/dir", "--variants", "smoke", "--out", "/tmp/never"),
])
def test_benchmark_commands_report_the_projects_errors_without_a_traceback(args):
    result = run(*args)
    assert result.exit_code == 2 and result.output.startswith("error: /no/such/")
    assert "Traceback" not in result.output and not Path("/tmp/never").exists()


LATENCY, GPU = ("latency", "--bundle", "/no/such/bundle"), ("gpu", "--data", "/no/such/dir")
PROBE = ("--bundle", "/no/such/bundle", "--data", "/no/such/dir")  # bench ranker, diversify, ease
QUALITY = ("quality", "--data", "/no/such/dir", "--variants", "smoke")


@pytest.mark.parametrize("args,message", [  # the whole wording of each kind of item: tests/test_options.py
    # bench latency: these were tracebacks (int(), a ValueError from the plan, wrk failing on 0 connections), some of
    # them after the server had started
    ((*LATENCY, "--concurrency", "1,x"), "Invalid value for --concurrency: 'x' is not a whole number; expected "
                                         "comma-separated whole numbers ≥ 1 (got '1,x')"),
    ((*LATENCY, "--concurrency", "0"), "Invalid value for --concurrency: '0' is not ≥ 1"),
    ((*LATENCY, "--endpoints", "user,bogus"), "Invalid value for --endpoints: unknown 'bogus'; choose from user, "
                                              "similar, similar_user, session (got 'user,bogus')"),
    ((*LATENCY, "--loadgen", "locust"), "Invalid value for '--loadgen'"),
    ((*LATENCY, "--loadgen", "wrk"), "Invalid value for --loadgen: wrk is not on PATH"),
    # bench ann: tracebacks (float(), numpy's negative dimensions, a broadcast error below k=100 vectors, a ValueError
    # from the plan); ivf_pq (a default kind) trains its codebooks on the catalogue: it failed after the other kinds
    (("ann", "--sizes", "x"), "Invalid value for --sizes: 'x' is not a whole number"),
    (("ann", "--sizes", "1000,-5"), "Invalid value for --sizes: '-5' is not ≥ 100; expected comma-separated catalogue "
                                    "sizes ≥ 100 for recall@100 (got '1000,-5')"),
    (("ann", "--sizes", "99"), "Invalid value for --sizes: '99' is not ≥ 100"),
    (("ann", "--sizes", "1000.5"), "Invalid value for --sizes: '1000.5' is not a whole number"),  # was read as 1000
    (("ann", "--kinds", "flat,bogus"), "Invalid value for --kinds: unknown 'bogus'; choose from flat, hnsw, ivf_flat, "
                                       "ivf_pq (got 'flat,bogus')"),
    (("ann", "--sizes", "10000,200"), "Invalid value for --sizes: an ivf_pq index needs at least 256 items, got "
                                      "'10000,200'"),
    # bench gpu: a missing --data failed the train and encode stages, then ran the 1M-vector faiss stage anyway (the
    # stages go on after a failed one); --stages / --concurrency typos were tracebacks
    (GPU, "error: /no/such/dir: no such dataset directory"),
    ((*GPU, "--stages", "encode,ann"), "error: /no/such/dir: no such dataset directory"),
    ((*GPU, "--stages", "train,bogus"), "Invalid value for --stages: unknown 'bogus'; choose from train, encode, ann, "
                                        "latency (got 'train,bogus')"),
    ((*GPU, "--concurrency", "1,x"), "Invalid value for --concurrency: 'x' is not a whole number"),
    # bench ease: nan and inf were accepted: the report's 'EASE alone' row read N@10 1.0000
    (("ease", *PROBE, "--lambdas", "nan"), "Invalid value for --lambdas: 'nan' is not a finite number; expected "
                                           "comma-separated finite numbers > 0 (got 'nan')"),
    (("ease", *PROBE, "--lambdas", "100,inf"), "Invalid value for --lambdas: 'inf' is not a finite number"),
    (("ease", *PROBE, "--lambdas", "-1"), "Invalid value for --lambdas: '-1' is not > 0"),
    (("ease", *PROBE, "--lambdas", "0"), "Invalid value for --lambdas: '0' is not > 0"),
    # --seeds, --weights, --thresholds, --lengths, --engines said 'Invalid value:' without the option
    (("ranker", *PROBE, "--seeds", "0,-1"),
     "Invalid value for --seeds: '-1' is not ≥ 0; expected comma-separated seeds ≥ 0 (got '0,-1')"),
    (("ranker", *PROBE, "--seeds", "0,0"),  # fitted seed 0 twice
     "Invalid value for --seeds: '0' is repeated; expected comma-separated seeds ≥ 0 (got '0,0')"),
    (("diversify", *PROBE, "--weights", "0,1.5"),
     "Invalid value for --weights: '1.5' is not in [0, 1]; expected comma-separated numbers in [0, 1] (got '0,1.5')"),
    (("diversify", *PROBE, "--thresholds", "none,0"),
     "Invalid value for --thresholds: '0' is not in (0, 1]; expected comma-separated numbers in (0, 1], or none "
     "(got 'none,0')"),
    (("store", "--lengths", "0,-1"),
     "Invalid value for --lengths: '-1' is not ≥ 0; expected comma-separated history lengths ≥ 0 (got '0,-1')"),
    (("batch", "--engines", ",", "--work", "w"), "Invalid value for --engines: none given; choose from local, ray "
                                                 "(got ',')"),
    (("batch", "--synthetic-engines", "local,spark", "--work", "w"),
     "Invalid value for --synthetic-engines: unknown engine 'spark'; choose from local, ray (got 'local,spark')"),
    # bench scale ran with no --sizes at all (an empty report); its own run() refused an unknown stage
    (("scale", "--sizes", "10000x5"), "Invalid value for --sizes: '10000x5' is not a shop size; expected "
                                      "comma-separated ITEMSxUSERSxEVENTS, e.g. 10000x100000x1000000"),
    (("scale", "--sizes", ","), "Invalid value for --sizes: none given"),
    (("scale", "--stages", "import,nope"), "Invalid value for --stages: unknown stage 'nope'; choose from import, "
                                           "build, ranker, batch, serve (got 'import,nope')"),
    # bench catalogue: a size per kind (kind:items); ivf_pq trains its codebooks on the catalogue
    (("catalogue", "--kinds", "hnsw:5e4,ivf_pq:100,annoy"),
     "Invalid value for --kinds: 'ivf_pq:100': an ivf_pq index needs at least 256 items, unknown index kind 'annoy'; "
     "expected comma-separated index kinds (flat, hnsw, ivf_flat, ivf_pq), each optionally with :items (got "
     "'hnsw:5e4,ivf_pq:100,annoy')"),
    (("catalogue", "--parts", "edits,towers"), "Invalid value for --parts: unknown part 'towers'; choose from edits, "
                                               "compaction, tower (got 'edits,towers')"),
    # bench quality: --name runs/a trained every variant, then failed writing OUT/runs/a.json
    (("quality", "--data", "/no/such/dir", "--variants", "smoke,nope"),
     "Invalid value for --variants: unknown preset 'nope'; choose from cpu,"),
    *[((*QUALITY, "--name", name), f"Invalid value for --name: {name!r} is not a report name")
      for name in ("runs/a", "", "..", "a\\b")],
])
def test_bench_commands_refuse_bad_options_before_any_work(args, message, tmp_path, monkeypatch):
    """One message (exit code 2, no traceback), most naming the option, before a bundle is opened, a server or a stage
    starts, or anything is written (every default --out / --work is relative: nothing may appear here)."""
    import shutil

    monkeypatch.chdir(tmp_path)
    real_which = shutil.which  # wrk hidden: its row reads the same on every machine
    monkeypatch.setattr(shutil, "which", lambda name, *a, **kw: None if name == "wrk" else real_which(name, *a, **kw))
    result = run("bench", *args)
    assert result.exit_code == 2 and message in result.flat, result.output
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())


def test_bench_ann_refuses_an_out_that_is_a_file_before_any_index_is_built(tmp_path):
    """It ran the whole benchmark, then failed to write its report ('File exists')."""
    taken = tmp_path / "taken.txt"
    taken.write_text("not a directory")
    result = run("bench", "ann", "--sizes", "100", "--kinds", "flat", "--out", taken)
    assert result.exit_code == 2 and f"'{taken}' is a file" in result.flat, result.output
    assert "built in" not in result.output and taken.read_text() == "not a directory"


def test_bench_encoder_refuses_a_missing_dataset_before_encoding(tmp_path):
    """--data was read only after the torch backend's encoding run (10,000 texts by default)."""
    result = run("bench", "encoder", "--data", tmp_path / "nope", "--texts", 100, "--threads", 1,
                 "--out", tmp_path / "enc")
    assert result.exit_code == 2 and result.output.startswith(f"error: {tmp_path / 'nope'}: no such dataset directory")
    assert "Loading weights" not in result.output and not (tmp_path / "enc").exists()


def test_bench_ranker_refuses_an_existing_save_bundle_before_fitting(shop_bundle, tmp_path):
    """It fitted every seed's re-ranker, then failed on 'already exists' when saving."""
    root, bundle = shop_bundle
    taken = tmp_path / "taken"
    taken.mkdir()
    result = run("bench", "ranker", "--bundle", bundle, "--data", root / "shop", "--save-bundle", taken,
                 "--out", tmp_path / "ranker")
    assert result.exit_code == 2 and f"Invalid value for --save-bundle: {taken} already exists" in result.flat
    assert "seed 0" not in result.output and not (tmp_path / "ranker").exists()


def test_output_paths_that_are_files_are_refused_before_any_work_and_os_refusals_are_one_line(shop_bundle):
    root, bundle = shop_bundle
    taken = root / "taken.txt"
    taken.write_text("not a directory")
    for args in (("batch-score", "--bundle", bundle, "--users", "sample:3"),
                 ("bench", "quality", "--data", root / "shop", "--variants", "smoke"),
                 ("train", "--data", root / "shop", "--preset", "smoke")):
        result = run(*args, "--out", taken)
        assert result.exit_code == 2 and f"'{taken}' is a file" in result.flat, result.output
    result = run("evaluate", "--bundle", bundle, "--data", root / "shop", "--out", root)
    assert result.exit_code == 2 and "is a directory" in result.flat
    # below a file: refused when the command line is read (was: once the command wrote, after the work)
    result = run("batch-score", "--bundle", bundle, "--users", "sample:3", "--out", taken / "recs")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"Invalid value for --out: {taken / 'recs'} cannot be written: its parent {taken} is a file, not a " \
        "directory" in result.flat, result.output
    assert taken.read_text() == "not a directory"


def test_a_write_the_file_system_refuses_is_one_line():
    """What the --out check cannot foresee (a full disk, a file system that changed since) is one `error:` line
    naming the path, exit code 2."""
    import typer

    from jobs.app import finish_commands

    demo = typer.Typer()

    @demo.command()
    def write() -> None:
        raise NotADirectoryError(20, "Not a directory", "/data/taken.txt/recs")

    finish_commands(demo)
    result = CliRunner().invoke(demo, [])
    assert result.exit_code == 2 and result.output == "error: /data/taken.txt/recs: Not a directory\n"


def test_commands_with_nothing_to_do_or_an_unused_option_say_so(shop_bundle, tmp_path):
    """bench batch without a bundle and without generated users wrote an empty report (exit 0); batch-score's
    --ray-address was silently ignored by the local engine."""
    result = run("bench", "batch", "--synthetic-users", 0, "--out", tmp_path / "b", "--work", tmp_path / "w")
    assert result.exit_code == 2 and "Invalid value for --synthetic-users: nothing to measure: give a --bundle, or " \
        "--synthetic-users above 0" in result.flat, result.output
    assert not (tmp_path / "b").exists() and not (tmp_path / "w").exists()
    _, bundle = shop_bundle
    result = run("batch-score", "--bundle", bundle, "--users", "sample:3", "--out", tmp_path / "recs",
                 "--ray-address", "auto")
    assert result.exit_code == 2 and "Invalid value for --ray-address: only --engine ray uses a Ray cluster: pass " \
        "--engine ray, or leave --ray-address out" in result.flat, result.output
    assert not (tmp_path / "recs").exists()


def test_bench_batch_scores_the_bundle_alone_and_names_ray_only_when_it_ran(shop_bundle, tmp_path, monkeypatch):
    """batch-score reads the API's event store in the working directory by default: the benchmark scored a user
    known only from an event stored there (61 users of a 60-user bundle) and named Ray's processes in its notes
    when only the local engine ran."""
    from api.service import make_store
    from api.settings import Settings

    _, bundle = shop_bundle
    monkeypatch.chdir(tmp_path)
    store = make_store(Settings(bundle=bundle))  # ./recsys-state, where batch-score looks by default
    store.append("stranger", "P00001", "view")
    result = run("bench", "batch", "--bundle", bundle, "--engines", "local", "--synthetic-users", 0,
                 "--out", tmp_path / "b", "--work", tmp_path / "w")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "b" / "batch.json").read_text())
    assert [(row["engine"], row["users"]) for row in report["rows"]] == [("local", 60)]
    notes = (tmp_path / "b" / "batch.md").read_text()
    assert "raylet" not in notes and "for Ray" not in notes and "scores the bundle alone" in notes


@pytest.mark.parametrize("command", ["train", "encode", "build", "batch-score"])
@pytest.mark.parametrize("option,value,what", [("--workers", "3", "Ray workers"),
                                               ("--ray-address", "auto", "a Ray cluster")])
def test_ray_options_without_engine_ray_are_refused(tmp_path, command, option, value, what):
    """train / encode / build ran in this process, ignoring --workers and --ray-address without --engine ray (so did
    batch-score with --workers); each is refused now, before the dataset or bundle is read (neither exists here)."""
    source = ["--bundle", tmp_path / "no-bundle"] if command == "batch-score" else ["--data", tmp_path / "no-data"]
    result = run(command, *source, "--out", tmp_path / "out", option, value)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for {option}: only --engine ray uses {what}: pass --engine ray, or leave {option} out" \
        in result.flat, result.output
    assert not (tmp_path / "out").exists()


def test_every_registered_command_has_the_friendly_error_handling():
    import typer

    from jobs.app import import_app
    from jobs.bench import bench_app

    checked = 0
    for typer_app in (app, import_app, bench_app):
        for command in typer_app.registered_commands:
            assert getattr(command.callback, "friendly_errors", False), command.name or command.callback.__name__
            checked += 1

    def leaves(command):
        return sum(map(leaves, command.commands.values())) if hasattr(command, "commands") else 1

    assert checked == leaves(typer.main.get_command(app)) > 20  # no command group of the CLI left unchecked


def test_help_groups_the_commands_in_reading_order():
    from jobs.app import HELP_PANELS, command_name

    shown = run("--help")
    assert shown.exit_code == 0
    text = shown.output
    panels = [text.index(title) for title in HELP_PANELS]
    assert panels == sorted(panels)  # Start here, Build and train a bundle, Use a bundle, Measure
    assert text.index(" quickstart ") < text.index(" import ") < text.index(" build ") < text.index(" serve ") \
        < text.index(" bench ")
    listed = {command_name(c) for c in app.registered_commands + app.registered_groups}
    assert listed == {name for names in HELP_PANELS.values() for name in names}
    # a summary is the docstring's first paragraph on one line (the terminal wraps it, not the source's breaks)
    from jobs.bench import bench_app
    ranker = next(c for c in app.registered_commands if command_name(c) == "train-ranker")
    assert ranker.short_help.startswith("Fit the LightGBM lambdarank re-ranker on the validation step")
    commands = app.registered_commands + bench_app.registered_commands
    assert all(c.short_help and "\n" not in c.short_help for c in commands)


def test_the_column_options_of_a_shops_files_say_which_file_they_read():
    # `import table --help` listed --user-col, --item-col and --item-id-col with their defaults alone: which of
    # --item-col and --item-id-col names the item file's column was left to guess
    import typer.main

    commands = typer.main.get_command(app).commands
    for command in (commands["import"].commands["table"], commands["push-items"]):
        options = {param.name: param for param in command.params}
        for name in ("user_col", "item_col", "time_col", "item_id_col", "text_col", "kind_col"):
            if name in options:
                assert options[name].help, (command.name, name)
    table = {param.name: param.help for param in commands["import"].commands["table"].params}
    assert "interactions file" in table["user_col"] and "interactions file" in table["item_col"]
    assert "item file" in table["item_id_col"]


def test_a_dataset_without_valid_and_test_examples_is_a_clear_error(tmp_path, tiny_bert_dir):
    from recsys.data.dataset import Dataset
    import polars as pl

    items = pl.DataFrame({"item_id": ["a", "b", "c"], "text": ["red tent", "blue tent", "sleeping bag"]})
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u2", "b", 1), ("u2", "c", 2)]  # 2 events each: train only
    events = pl.DataFrame(rows, schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Int64}, orient="row")
    Dataset("two-each", items, events).save(tmp_path / "data")
    result = run("evaluate", "--data", tmp_path / "data", "--model", tiny_bert_dir)
    assert result.exit_code == 2 and "the valid and test splits of this dataset are empty, and evaluating on " \
        "valid and test (--splits) needs examples there" in result.flat
    result = run("train", "--data", tmp_path / "data", "--preset", "smoke", "--model", tiny_bert_dir,
                 "--out", tmp_path / "out")
    assert result.exit_code == 2 and "the valid split of this dataset is empty, and training (it keeps the epoch " \
        "that scores best on valid) needs examples there" in result.flat
    assert "at least 3 interactions" in result.flat and not (tmp_path / "out").exists()
    result = run("build", "--data", tmp_path / "data", "--model", tiny_bert_dir, "--out", tmp_path / "built")
    assert result.exit_code == 2 and "the valid and test splits of this dataset are empty, and the bundle's " \
        "evaluation (recsys build) needs examples there" in result.flat and not (tmp_path / "built").exists()


@pytest.mark.parametrize("name", ["../elsewhere", "/tmp/elsewhere", "a/b", "..", " "])
@pytest.mark.parametrize("command", ["build", "train"])
def test_a_bundle_name_is_one_directory_under_out(tmp_path, command, name):
    result = run(command, "--data", tmp_path, "--out", tmp_path / "out", "--name", name)
    assert result.exit_code == 2 and "is not a bundle name: give one directory name" in result.flat
    assert not list(tmp_path.parent.glob("elsewhere*")) and not (tmp_path / "out").exists()


def test_evaluate_warns_when_the_bundle_was_built_on_another_dataset(shop_bundle, tmp_path):
    root, bundle = shop_bundle
    same = run("evaluate", "--data", root / "shop", "--bundle", bundle, "--no-baselines", "--splits", "test",
               "--out", tmp_path / "same.json")
    assert same.exit_code == 0 and "warning" not in same.output
    assert run("import", "synthetic", "--out", tmp_path / "other", "--users", 60, "--items", 80,
               "--seed", 4).exit_code == 0
    other = run("evaluate", "--data", tmp_path / "other", "--bundle", bundle, "--no-baselines", "--splits", "test",
                "--out", tmp_path / "other.json")
    assert other.exit_code == 0, other.output
    assert "warning: the bundle" in other.flat and "was built on another dataset (fingerprint differs" in other.flat
    # and in the JSON, which `--json > results.json` keeps (was: on stderr alone, so the file read as a fair test)
    assert json.loads((tmp_path / "same.json").read_text())["warnings"] == []
    warnings = json.loads((tmp_path / "other.json").read_text())["warnings"]
    assert len(warnings) == 1
    assert "was built on another dataset (fingerprint differs from synthetic-shop's)" in warnings[0]


def test_evaluate_says_an_engine_bundles_valid_rows_are_in_sample(shop_bundle, tmp_path):
    """The re-ranker is fit on the valid step: `evaluate` showed its valid rows beside test's as if held out."""
    root, bundle = shop_bundle
    assert run("train-ranker", "--bundle", bundle, "--data", root / "shop", "--out", tmp_path / "engine").exit_code == 0
    note = "note: the bundle's re-ranker was fit on this dataset's valid step, so its valid rows are in-sample"
    both = run("evaluate", "--data", root / "shop", "--bundle", tmp_path / "engine", "--no-baselines",
               "--out", tmp_path / "both.json")
    assert both.exit_code == 0 and note in both.flat, both.output
    assert json.loads((tmp_path / "both.json").read_text())["notes"][0].startswith(note.removeprefix("note: "))
    for args in (("--bundle", tmp_path / "engine", "--splits", "test"), ("--bundle", bundle)):  # test only; towers
        result = run("evaluate", "--data", root / "shop", *args, "--no-baselines", "--out", tmp_path / "x.json")
        assert result.exit_code == 0 and "in-sample" not in result.output, result.output
        assert json.loads((tmp_path / "x.json").read_text())["notes"] == []


def test_unknown_item_is_reported(shop_bundle):
    _, bundle = shop_bundle
    result = run("recommend", "--bundle", bundle, "--similar", "nope")
    assert result.exit_code == 2
    assert "unknown item id: 'nope'" in result.output


def test_quickstart_end_to_end_and_the_engine_beats_popularity(tmp_path, tiny_bert_dir):
    """The whole path on a small seed with the tiny BERT: training, re-ranker, table, chart, bundle, samples."""
    args = ("quickstart", "--out", tmp_path / "artifacts", "--data-out", tmp_path / "shop", "--results",
            tmp_path / "results", "--model", tiny_bert_dir, "--users", 300, "--items", 120, "--seed", 1,
            "--threads", 1)
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "engine (towers + re-ranker)" in result.output and "recsys serve --bundle" in result.output
    assert "customer U" in result.output and "similar to" in result.output
    bundle = resolve_bundle(tmp_path / "artifacts" / "shop")
    assert (bundle / "ranker" / "model.txt").is_file() and (bundle / "encoder" / "towers.safetensors").is_file()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["train"]["stopped"] in ("early stopping", "epochs") and manifest["train"]["best_epoch"] >= 1
    assert "quickstart" not in manifest  # its copy of `train` (config, best epoch, stop) is gone
    rows = json.loads((tmp_path / "results" / "quickstart.json").read_text())["rows"]
    test = {r["model"]: r for r in rows if r["split"] == "test" and r["slice"] == "all"}
    served = "engine (towers + re-ranker)"
    assert set(test) == {"popularity", "zero-shot BERT", "trained towers", served,
                         f"{served} (statistics through valid)", f"{served} (no diversification)"}
    engine, popularity = test[served], test["popularity"]
    assert not engine.get("no_diversification") and not engine.get("stats_through")  # the list as served
    assert f"the engine vs popularity on test NDCG@10: {engine['ndcg@10']:.4f} vs" in result.output
    assert engine["ndcg@10"] > 1.2 * popularity["ndcg@10"], (engine["ndcg@10"], popularity["ndcg@10"])
    assert engine["recall@10"] > popularity["recall@10"]
    assert (tmp_path / "results" / "quickstart.png").stat().st_size > 10_000
    report = (tmp_path / "results" / "quickstart.md").read_text()
    assert "| engine (towers + re-ranker) |" in report
    assert "| engine (towers + re-ranker) (no diversification) |" in report
    assert "time budget" not in report  # the preset's budget is a safety net, not what ends training
    # its towers can be refit like `recsys train`'s (was: "has no trained towers to refit")
    refit = run("refit", "--bundle", bundle, "--data", tmp_path / "shop", "--through", "test", "--out",
                tmp_path / "refit", "--threads", 1)
    assert refit.exit_code == 0, refit.output
    assert json.loads((tmp_path / "refit" / "manifest.json").read_text())["train"]["refit"]["epochs"] == \
        manifest["train"]["best_epoch"]
    # a rerun replaces its own synthetic shop, never someone else's data
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    result = run("quickstart", "--data-out", other, "--model", tiny_bert_dir, "--users", 40, "--items", 60)
    assert result.exit_code == 2 and "not a dataset directory" in result.output
    assert (other / "notes.txt").read_text() == "keep me"


def test_quickstart_refuses_data_out_naming_its_own_option(tmp_path, tiny_bert_dir):
    """--data-out that holds other files or another dataset is refused before any training, and the message names
    --data-out (quickstart has no --out for data and no --overwrite)."""
    import dataclasses

    from recsys.data.synthetic import generate_shop

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    result = run("quickstart", "--data-out", other, "--model", tiny_bert_dir, "--users", 5, "--items", 32)
    assert result.exit_code == 2 and "exists and is not a dataset directory: choose another --data-out" in result.flat
    movies = tmp_path / "movies"
    dataclasses.replace(generate_shop(n_users=5, n_items=32, seed=0), name="movies").save(movies)
    result = run("quickstart", "--data-out", movies, "--model", tiny_bert_dir, "--users", 5, "--items", 32)
    assert result.exit_code == 2, result.output
    assert "holds another dataset than the synthetic shop: choose another --data-out" in result.flat
    assert "--overwrite" not in result.flat and "loading BERT" not in result.output


def test_quickstart_on_a_shop_too_small_for_the_re_ranker_names_users(tmp_path, tiny_bert_dir):
    """One customer gives the re-ranker no two valid queries: the message said 'give the shop more interactions',
    which quickstart's options do not offer; it names --users."""
    result = run("quickstart", "--out", tmp_path / "a", "--data-out", tmp_path / "shop", "--results", tmp_path / "r",
                 "--model", tiny_bert_dir, "--users", 1, "--items", 32)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "error: the re-ranker needs at least 2 training queries" in result.flat
    assert "the synthetic shop of 1 customer is too small for it: pass a larger --users (the default is 600)" \
        in result.flat and not (tmp_path / "a").exists()


def test_version():
    from importlib.metadata import version

    result = run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"bert-recsys {version('bert-recsys')}"


@pytest.mark.parametrize("k", [0, -5, 101])
def test_recommend_checks_k_like_the_api(shop_bundle, k):
    _, bundle = shop_bundle
    for query in (("--user", "U00001"), ("--similar", "P00001"), ("--items", "P00001")):
        result = run("recommend", "--bundle", bundle, *query, "--k", k)
        assert result.exit_code == 2 and "Invalid value for '--k'" in result.output, result.output
        text = " ".join(result.output.replace("│", " ").split())
        assert ("less than or equal to 100" if k > 0 else "greater than or equal to 1") in text, text


def test_every_numeric_option_has_limits():
    import typing

    import typer

    def numeric(param) -> bool:
        annotation = param.type_descriptor.annotation
        return int in (annotation, *typing.get_args(annotation)) or float in (annotation, *typing.get_args(annotation))

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, path + [name])
            return
        for param in command.params:
            if getattr(param, "type_descriptor", None) is not None and numeric(param):
                yield " ".join(path), param.name, param.min, param.max

    options = list(walk(typer.main.get_command(app), []))
    assert len(options) > 40
    assert [o for o in options if o[2] is None] == []  # every int/float option has at least a lower bound


def test_recommend_json_text_and_unknown_user(shop_bundle):
    _, bundle = shop_bundle
    result = run("recommend", "--bundle", bundle, "--user", "U00001", "--k", 3, "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["strategy"] == "personalised" and len(body["items"]) == 3 and body["model_version"] == bundle.name
    # the bundle's load (5 s for the quickstart's) was a silent start; said on stderr, stdout stays the JSON
    assert f"loading the bundle {bundle} …" in " ".join(result.stderr.split())
    result = run("recommend", "--bundle", bundle, "--text", "camera lens", "--k", 4, "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["strategy"] == "session" and len(body["items"]) == 4
    assert body["items"][0]["reason"] == "matches “camera lens”"
    result = run("recommend", "--bundle", bundle, "--text", "camera lens", "--items", "P00001", "--k", 4, "--json")
    assert result.exit_code == 0 and "P00001" not in [i["item_id"] for i in json.loads(result.stdout)["items"]]
    result = run("recommend", "--bundle", bundle, "--user", "nobody")
    assert result.exit_code == 2 and "unknown user id: 'nobody'" in result.output and "--fallback" in result.output
    result = run("recommend", "--bundle", bundle, "--user", "nobody", "--fallback", "--json", "--k", 2)
    body = json.loads(result.stdout)
    assert body["strategy"] == "popular_fallback" and body["items"][0]["score"] == 1.0
    assert body["items"][0]["popularity"] >= body["items"][1]["popularity"] > 0
    for empty in ("", ", ,"):  # an --items value without an id is bad input, not an empty session of popular items
        result = run("recommend", "--bundle", bundle, "--items", empty)
        assert result.exit_code == 2 and "--items holds no item id" in result.flat, result.output


def test_evaluate_json(shop_bundle, tiny_bert_dir):
    root, bundle = shop_bundle
    result = run("evaluate", "--data", root / "shop", "--bundle", bundle, "--no-baselines", "--ks", "5",
                 "--splits", "test", "--out", root / "e.json", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["results"][0]["model"] == f"bundle:{bundle.name}" and "recall@5" in payload["results"][0]
    assert payload == json.loads((root / "e.json").read_text())


def test_import_table_cli_skip_overwrite_and_errors(tmp_path):
    items = tmp_path / "products.csv"
    items.write_text("sku;title\nS1;Trail Shoe\nS2;Wool Socks\n", encoding="latin-1")
    events = tmp_path / "events.csv"
    events.write_bytes(b"customer;sku;when\nc1;S1;2024-01-01\nc1;SKU-9;2024-01-02\nc2;S2;soon\nc2;S2;2024-01-03\n")
    base = ("import", "table", "--interactions", events, "--items", items, "--out", tmp_path / "ds",
            "--user-col", "customer", "--item-col", "sku", "--time-col", "when", "--item-id-col", "sku",
            "--text-col", "title", "--delimiter", ";", "--encoding", "latin-1")
    result = run(*base)
    assert result.exit_code == 2 and "2 bad rows: row 2: unknown item id 'SKU-9'" in result.flat
    assert "row 3: unparsable timestamp 'soon'" in result.flat and not (tmp_path / "ds").exists()
    result = run(*base, "--on-bad-rows", "skip")
    assert result.exit_code == 0, result.flat
    assert "rejected 2 bad rows" in result.flat and (tmp_path / "ds" / "rejected.csv").is_file()
    result = run(*base, "--on-bad-rows", "skip")
    assert result.exit_code == 2 and "already holds a dataset: pass --overwrite" in result.flat
    result = run(*base, "--on-bad-rows", "skip", "--overwrite")
    assert result.exit_code == 0, result.flat
    result = run(*base, "--on-bad-rows", "maybe")
    assert result.exit_code == 2 and "Invalid value for '--on-bad-rows'" in result.flat
    # pydantic's prefix was left in typer's message for a Literal option: "'--on-bad-rows': Value error, 'maybe' …"
    assert "Invalid value for '--on-bad-rows': 'maybe' is not one of 'fail', 'skip'." in result.flat, result.flat
    mixed = tmp_path / "events-utf8.csv"  # the items file's own separator and encoding beside a UTF-8 comma file
    mixed.write_text("customer,sku,when\nJos\u00e9,S1,2024-01-01\n", encoding="utf-8")
    result = run(*base[:3], mixed, *base[4:-4], "--items-delimiter", ";", "--items-encoding", "latin-1",
                 "--out", tmp_path / "mixed")
    assert result.exit_code == 0 and "imported mixed: 2 items, 1 user, 1 interaction" in result.flat, result.flat
    events.write_text("customer;sku;when\n")
    result = run(*base, "--out", tmp_path / "empty")
    assert result.exit_code == 2 and "no interactions: the file has a header but no rows" in result.flat
    assert not (tmp_path / "empty").exists()


def test_import_table_cli_a_damaged_parquet_file_is_one_line(tmp_path):
    (tmp_path / "items.parquet").write_bytes(b"sku,title\nS1,Trail Shoe\n")
    (tmp_path / "events.csv").write_text("user_id,item_id,timestamp\nc1,S1,1\n")
    result = run("import", "table", "--interactions", tmp_path / "events.csv", "--items", tmp_path / "items.parquet",
                 "--out", tmp_path / "ds")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "items.parquet: not a readable Parquet file (" in result.flat and result.output.startswith("error: ")


def test_import_table_cli_without_a_time_column_says_how_to_go_without(tmp_path):
    # "missing column(s) ['timestamp']" left an export without times stuck: the CLI had no way to say "none"
    (tmp_path / "items.csv").write_text("item_id,text\nS1,Trail Shoe\nS2,Wool Socks\n")
    (tmp_path / "events.csv").write_text("user_id,item_id\nc1,S2\nc1,S1\n")
    base = ("import", "table", "--interactions", tmp_path / "events.csv", "--items", tmp_path / "items.csv",
            "--out", tmp_path / "ds")
    result = run(*base)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert ("events.csv: missing time column 'timestamp'; found ['user_id', 'item_id']: name it with --time-col, "
            "or pass --time-col '' to take each user's events in file order") in result.flat
    result = run(*base, "--time-col", "")
    assert result.exit_code == 0, result.output
    assert "note: no time column: timestamp = row position in the interactions file" in result.flat


def test_import_table_cli_a_missing_column_names_the_option_for_it(tmp_path):
    # "missing column(s) ['item_id']; found ['sku', 'title']" did not say which option names the item file's id column
    # (the README's example passes --item-col sku for the events and --item-id-col sku for the items)
    (tmp_path / "items.csv").write_text("sku,title\nS1,Trail Shoe\nS2,Wool Socks\n")
    (tmp_path / "events.csv").write_text("customer,sku,ts,event_type\nc1,S2,1,view\nc1,S1,2,cart\n")
    base = ("import", "table", "--interactions", tmp_path / "events.csv", "--items", tmp_path / "items.csv",
            "--out", tmp_path / "ds", "--time-col", "ts", "--text-col", "title")
    result = run(*base, "--user-col", "customer", "--item-col", "sku")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert ("items.csv: missing column 'item_id'; found ['sku', 'title']: name the file's column with "
            "--item-id-col") in result.flat
    result = run(*base, "--item-id-col", "sku")
    assert ("events.csv: missing columns 'user_id', 'item_id'; found ['customer', 'sku', 'ts', 'event_type']: "
            "name the file's columns with --user-col, --item-col") in result.flat, result.flat
    result = run(*base, "--item-id-col", "sku", "--user-col", "customer", "--item-col", "sku", "--kind-col", "event")
    assert result.exit_code == 2 and "missing column 'event'" in result.flat
    assert result.flat.rstrip().endswith("name the file's column with --kind-col"), result.flat
    assert not (tmp_path / "ds").exists()


def test_import_synthetic_counts_one_user_in_words(tmp_path):
    # "imported synthetic-shop: 32 items, 1 users, 21 interactions": its line counted by hand, the file imports' by
    # counted()
    result = run("import", "synthetic", "--out", tmp_path / "one", "--users", 1, "--items", 32)
    assert result.exit_code == 0, result.output
    assert "imported synthetic-shop: 32 items, 1 user, " in result.flat and "1 users" not in result.flat
    result = run("import", "synthetic", "--out", tmp_path / "few", "--users", 1, "--items", 32, "--events", 2)
    assert result.exit_code == 2 and "--events 2 is under 3 per user (the minimum sequence length) for 1 user" \
        in result.flat and "1 users" not in result.flat, result.flat


def test_import_summary_adds_up(tmp_path):
    # the summary said how many were kept and dropped but not how many were read (and a blank line or a bad row
    # the reader found was not among the rows read), so the counts did not add up; "1 users", "dropped 1 rows"
    (tmp_path / "products.csv").write_text("item_id,text\nS1,Trail Shoe\nS2,Wool Socks\nS3,\n")
    (tmp_path / "events.csv").write_text("user_id,item_id,timestamp\nc1,S1,1\n\nc1,S1,1\nc1,S2,2\nc1,S3,3\n")
    result = run("import", "table", "--interactions", tmp_path / "events.csv", "--items", tmp_path / "products.csv",
                 "--out", tmp_path / "ds", "--on-bad-rows", "skip")
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert lines[0].startswith("imported ds: 2 items, 1 user, 2 interactions → ")  # named after --out
    assert lines[1:7] == ["read 3 rows of products.csv, 5 rows of events.csv",  # 5 = 1 blank + 1 repeat + 1 bad + 2
                          "dropped 1 row: blank lines (events.csv)",
                          "dropped 1 row: exact duplicate interaction rows (events.csv)",
                          f"rejected 2 bad rows → {tmp_path / 'ds' / 'rejected.csv'}",
                          "1 × item was rejected from products.csv (its row there is bad) (events.csv)",
                          "1 × empty item text for item (products.csv)"]
    assert lines[7] == ("note: 1 of 1 users has fewer than 3 interactions: leave-one-out gives them no valid or test "
                        "example (their events stay in train)")


def test_serve_checks_the_port_before_loading(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("serve", "--bundle", tmp_path / "no-bundle-here", "--port", port)
    assert result.exit_code == 2 and f"cannot serve on 127.0.0.1:{port}" in result.output
    assert "no bundle here" not in result.output  # the port was checked first


@pytest.mark.parametrize("value", ["", "relative"])
def test_serve_reads_its_bundle_from_recsys_bundle(tmp_path, monkeypatch, value):
    """`RECSYS_BUNDLE` names the bundle as `--bundle` does (the API's setting of the same name; was: "Missing option
    '--bundle'"); an empty one counts as unset, as for every path setting."""
    import socket

    monkeypatch.chdir(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = runner.invoke(app, ["serve", "--port", str(port)], env={"RECSYS_BUNDLE": value})
    assert result.exit_code == 2, result.output
    if value:
        assert "relative: no bundle here" in " ".join(result.output.split()), result.output
    else:
        assert "Missing option '--bundle'" in result.output and "RECSYS_BUNDLE" in result.output


@pytest.mark.parametrize("env,message", [
    ({"RECSYS_EVENT_STORE": "redis", "RECSYS_REDIS_URL": "redis://127.0.0.1:{port}/0"},
     "error: RECSYS_REDIS_URL: cannot reach Redis at redis://127.0.0.1:{port}/0"),
    ({"RECSYS_MAX_K": "lots"}, "error: RECSYS_MAX_K: Input should be a valid integer"),
    # an infinite cache budget or wait was accepted: a traceback at load (int(inf)) or a service that never syncs
    ({"RECSYS_CACHE_MB": "inf"}, "error: RECSYS_CACHE_MB: Input should be a finite number"),
    ({"RECSYS_SYNC_INTERVAL_MS": "infinity"}, "error: RECSYS_SYNC_INTERVAL_MS: Input should be a finite number"),
    # a misspelt setting was ignored: the service ran with the default (here: re-ranking on)
    ({"RECSYS_RERANKK": "false"}, "error: RECSYS_RERANKK: not a setting (did you mean RECSYS_RERANK?)"),
    # a bundle root that does not exist was accepted: every reload was then refused as "not under the bundle root"
    ({"RECSYS_BUNDLE_ROOT": "/no/such/models"}, "error: RECSYS_BUNDLE_ROOT: Path does not point to a directory"),
])
def test_serve_misconfigured_is_one_line_and_exit_code_2(toy, tmp_path, env, message):
    import socket

    from recsys.config import BuildConfig
    from recsys.pipeline import Recommender
    from recsys.splits import split_dataset
    from tests.test_pipeline import VECTORS

    bundle = Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig()).save(tmp_path / "toy" / "v1")
    with socket.socket() as sock:  # a port nobody listens on (nor does the server start: it must not get there)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {key: value.format(port=port) for key, value in env.items()}
    result = runner.invoke(app, ["serve", "--bundle", str(bundle), "--port", str(port)],
                           env={**env, "RECSYS_STATE_DIR": str(tmp_path / "state")})
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message.format(port=port)), result.output


def test_serve_refuses_another_shop_s_event_store_in_one_line(toy, tmp_path):
    """The default ./recsys-state of a directory serving two shops: the other shop's catalogue changes were replayed
    into this bundle's catalogue without a word. `serve` now stops before starting, exit code 2."""
    import socket

    from api.service import make_store
    from api.settings import Settings
    from recsys.config import BuildConfig
    from recsys.pipeline import Recommender
    from recsys.splits import split_dataset
    from tests.test_pipeline import VECTORS

    bundle = Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig()).save(tmp_path / "toy" / "v1")
    store = make_store(Settings(state_dir=tmp_path / "state"))
    for item_id in ("P00003", "P00012", "P00017"):  # another shop's stock changes
        store.record_change("active", item_id, active=False)
    store.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = runner.invoke(app, ["serve", "--bundle", str(bundle), "--port", str(port)],
                           env={"RECSYS_STATE_DIR": str(tmp_path / "state")})
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())  # (the console wraps the line at its width)
    assert said == (f"error: RECSYS_STATE_DIR: the event store in {tmp_path / 'state'} holds another shop's "
                    "catalogue: none of the 3 items it names is in this bundle's catalogue (e.g. 'P00003', "
                    "deactivated or deleted there); give each shop its own RECSYS_STATE_DIR")


@pytest.mark.parametrize("command", ["train-ranker", "refresh-stats", "refit"])
def test_an_existing_out_is_refused_before_the_job_starts(command, shop_bundle, tmp_path):
    """train-ranker / refresh-stats / refit write a new bundle at --out after a long job: an --out that exists is
    refused first (was: "… already exists" after the ranker was trained or the towers refit)."""
    data, bundle = shop_bundle
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    result = run(command, "--bundle", bundle, "--data", data, "--out", taken)
    assert result.exit_code == 2, result.output
    assert f"{taken} already exists: choose a new directory" in result.flat
    assert result.flat.startswith("Usage:")  # refused with the options, before any of the job's own output
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("damage,message", [
    ("items.parquet", "items.parquet: cannot read this dataset table (ComputeError"),
    ("schema.json", "schema.json: cannot read the dataset schema (JSONDecodeError"),
])
def test_a_damaged_dataset_is_one_error_line(tmp_path, damage, message):
    """A dataset whose Parquet table or schema.json is damaged was a polars / JSON traceback (a missing table: a
    bare 'No such file or directory'); now one line naming the file, exit code 2."""
    from recsys.data.synthetic import generate_shop

    data = generate_shop(n_users=20, n_items=40, seed=0).save(tmp_path / "shop")
    (data / damage).write_text("{damaged")
    result = run("evaluate", "--data", data)
    assert result.exit_code == 2 and f"error: {data / message}" in result.flat, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["train", "encode"])
def test_help_names_the_distributed_extra(command):
    """Rich markup read '[distributed]' as a style tag: the help said `pip install '.'`."""
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0 and "pip install '.[distributed]'" in result.output, result.output


def test_a_bundle_part_its_checksum_vouches_for_but_its_library_refuses_is_one_error_line(shop_bundle, tmp_path):
    """An index written broken (its checksum recorded after the damage) was a FAISS RuntimeError traceback from
    `recommend` and `batch-score`; a reload already refused it (409)."""
    import hashlib
    import shutil

    _, bundle = shop_bundle
    broken = shutil.copytree(bundle, tmp_path / "shop" / "v9")
    (broken / "index" / "index.faiss").write_bytes(b"garbage")
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"]["index/index.faiss"] = hashlib.sha256(b"garbage").hexdigest()
    (broken / "manifest.json").write_text(json.dumps(manifest))
    for args in (("recommend", "--bundle", broken, "--similar", "P00001"),
                 ("batch-score", "--bundle", broken, "--users", "sample:3", "--out", tmp_path / "recs")):
        result = run(*args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert f"error: cannot load bundle {broken}: RuntimeError:" in result.flat, result.output


SERVE_ONE_WORKER = """
import sys
from jobs.workflows import run_server

async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

run_server(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="info")
"""


def test_one_worker_server_exits_0_after_a_graceful_sigterm(tmp_path):
    """`serve` (one worker) and `quickstart --serve` stopped by SIGTERM exited with status 143 after uvicorn's graceful
    shutdown (uvicorn raises the signal again), while `serve --workers N` and Ctrl-C exited 0."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-c", SERVE_ONE_WORKER, str(port)], stderr=subprocess.PIPE,
                               cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read() == b"ok"
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()
                time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr.decode()
    assert "Finished server process" in stderr.decode() and "Traceback" not in stderr.decode()


BAR_AFTER_A_COMMAND = """
import io
import sys

from jobs.cli import app

try:
    app(["recommend", "--bundle", sys.argv[1], "--user", "u1"])
except SystemExit:
    pass
from tqdm.auto import tqdm

print(tqdm(total=1, file=io.StringIO()).mininterval)
"""


def test_progress_bars_redraw_every_half_minute_when_stderr_is_a_log(tmp_path):
    """A bar drew ten times a second, and the training and re-ranker bars once per step or tree, into a log file or
    pipe (thousands of lines an hour); off a terminal the CLI now sets tqdm's least redraw interval to 30 s (before
    tqdm is imported: it reads TQDM_MININTERVAL once)."""
    import os
    import subprocess
    import sys

    def interval(**env) -> str:
        clean = {k: v for k, v in os.environ.items() if k != "TQDM_MININTERVAL"}
        done = subprocess.run([sys.executable, "-c", BAR_AFTER_A_COMMAND, str(tmp_path / "none")], capture_output=True,
                              text=True, env={**clean, **env}, cwd=Path(__file__).resolve().parents[1], timeout=120)
        assert "no bundle" in done.stderr or "error:" in done.stderr, done.stderr
        return done.stdout.strip()

    assert interval() == "30.0"  # stderr is a pipe here
    assert interval(TQDM_MININTERVAL="2") == "2.0"  # a setting the user made wins


def test_serve_with_several_workers_says_where_it_listens(shop_bundle, tmp_path, monkeypatch):
    """uvicorn logs "Uvicorn running on …" when it binds the workers' shared socket; with a socket per worker
    (SO_REUSEPORT) nothing said where the service listened."""
    import socket

    import uvicorn.supervisors

    from api.listeners import reuse_port_supported

    import logging

    if not reuse_port_supported():
        pytest.skip("one shared socket: uvicorn says it")
    started = []

    class Supervisor:  # stands for uvicorn's: the workers are not started
        def __init__(self, config, sockets):
            started.append(len(sockets))

        def run(self):
            return None

    monkeypatch.setattr(uvicorn.supervisors, "Multiprocess", Supervisor)
    monkeypatch.setenv("RECSYS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RECSYS_BUNDLE", "")  # serve sets it for its workers: restored after the test
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "recsys")]
    before = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    try:
        result = run("serve", "--bundle", shop_bundle[1], "--port", port, "--workers", 2)
    finally:  # uvicorn's logging config (handlers on this test's stderr, recsys not propagating) stays here
        for lg, (handlers, propagate, level) in zip(loggers, before):
            lg.handlers[:], lg.propagate, lg.level = handlers, propagate, level
    assert result.exit_code == 0, result.output
    assert started == [1]
    assert f"Uvicorn running on http://127.0.0.1:{port} with 2 workers (Press CTRL+C to quit)" in result.stderr


def test_a_second_serve_on_a_port_another_serve_holds_is_refused_before_loading(shop_bundle):
    """Two `serve --workers N` started together both passed the bind check (the first was still loading, nothing
    listened yet), then both bound the port through their SO_REUSEPORT sockets and split its requests."""
    import socket

    from jobs.workflows import claim_port
    from recsys.errors import RecsysError

    _, bundle = shop_bundle
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    held = claim_port(port)  # what the first serve holds while it loads and serves
    assert held is not None
    result = run("serve", "--bundle", bundle, "--port", port, "--workers", 2)
    assert result.exit_code == 2, result.output
    assert f"error: cannot serve on port {port}: another `recsys serve` holds it (starting up or serving)" \
        in result.flat
    with pytest.raises(RecsysError, match=f"^cannot serve on port {port}: another"):
        claim_port(port)
    held.close()  # the first serve exits: the port can be claimed again
    claim_port(port).close()


def test_every_bundle_option_says_a_model_directory_is_taken_too():
    """Every command's --bundle resolves a model directory to its newest version (`resolve_bundle`); its help says
    so everywhere (was: `recommend --help` read "bundle directory" alone, though the README's examples pass
    `artifacts/shop`)."""
    import typer.main

    def commands(command, path=()):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from commands(sub, (*path, name))
        else:
            yield " ".join(path), command

    missing = [name for name, command in commands(typer.main.get_command(app)) for p in command.params
               if p.name == "bundle" and name != "bench batch" and "or a model directory: newest version" not in p.help]
    assert missing == []


@pytest.mark.parametrize("width,tables", [(160, 1), (80, 3)])
def test_metric_tables_never_cut_a_figure_on_a_narrow_terminal(width, tables):
    """The nine metric columns need ~115 characters: on an 80-column terminal every figure read "0.12…" and the
    headers "r…". Now a long model name wraps, and a console too narrow for the whole table gets one table per k."""
    from rich.console import Console

    from jobs.output import METRIC_COLUMNS, metrics_table

    figures = {c: 0.12345 + i for i, c in enumerate(METRIC_COLUMNS)}
    rows = [{"model": model, "split": "test", "n_examples": 600, **figures}
            for model in ("popularity", "engine (towers + re-ranker) (statistics through valid)")]
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(metrics_table(rows, "shop: full ranking"))
    text = console.export_text()
    assert "…" not in text
    assert all(f"{0.12345 + i:.4f}" in text and c in text for i, c in enumerate(METRIC_COLUMNS))
    assert text.count("shop: full ranking") == tables


def test_metric_tables_show_every_cut_off_the_rows_were_evaluated_at():
    """`evaluate --ks 10,100` printed the @10 columns only, and `--ks 100000` no metric at all."""
    from jobs.output import markdown_metrics, metric_columns

    row = {"model": "engine", "split": "test", "n_examples": 5, "recall@100": 0.5, "ndcg@100": 0.25, "mrr@100": 0.125,
           "recall@10": 0.3, "ndcg@10": 0.2, "mrr@10": 0.1, "recall@100000": 1.0, "ndcg@100000": 0.3,
           "mrr@100000": 0.1, "ild@10": 0.9}
    assert metric_columns(row) == ["recall@10", "ndcg@10", "mrr@10", "recall@100", "ndcg@100", "mrr@100",
                                   "recall@100000", "ndcg@100000", "mrr@100000"]
    assert "| recall@10 | ndcg@10 | mrr@10 | recall@100 | ndcg@100 | mrr@100 | recall@100000 |" in \
        markdown_metrics([row])


def test_import_table_names_the_dataset_after_its_out_directory(tmp_path):
    """The dataset took the export file's stem, so every shop's was "events" and its bundles "events" /
    "events-peft"; now --out's name (or --name), which `build` and `train` name their bundles after."""
    (tmp_path / "items.csv").write_text("item_id,text\nS1,Trail Shoe\nS2,Wool Socks\nS3,Tent\n")
    (tmp_path / "events.csv").write_text("user_id,item_id,timestamp\nc1,S1,1\nc1,S2,2\nc1,S3,3\n")
    base = ("import", "table", "--interactions", tmp_path / "events.csv", "--items", tmp_path / "items.csv")
    assert run(*base, "--out", tmp_path / "myshop").exit_code == 0
    assert json.loads((tmp_path / "myshop" / "schema.json").read_text())["name"] == "myshop"
    result = run(*base, "--out", tmp_path / "other", "--name", "spring-sale")
    assert result.exit_code == 0 and result.output.startswith("imported spring-sale: 3 items")
    assert json.loads((tmp_path / "other" / "schema.json").read_text())["name"] == "spring-sale"


def test_the_heavy_commands_cap_their_cpu_threads_first(monkeypatch, tmp_path):
    """`--threads N` on build, evaluate, train-ranker and refit caps torch, FAISS and BLAS before any work (here
    the cap is recorded and stops the command); without it they are left as they are."""
    calls = []

    def record(threads: int) -> None:
        calls.append(threads)
        raise KeyboardInterrupt  # stop before the work

    monkeypatch.setattr("jobs.threads.limit_cpu_threads", record)
    commands = [("build", "--data", tmp_path), ("evaluate", "--data", tmp_path),
                ("train-ranker", "--bundle", tmp_path, "--data", tmp_path),
                ("refit", "--bundle", tmp_path, "--data", tmp_path)]
    for command in commands:
        result = run(*command, "--threads", 3)
        assert result.exit_code != 0 and "No such option" not in result.output, command
    assert calls == [3, 3, 3, 3]
    assert run("evaluate", "--data", tmp_path / "none").exit_code != 0 and calls == [3, 3, 3, 3]


def test_bench_ann_refuses_an_embeddings_file_that_is_no_vector_array_before_it_runs(tmp_path):
    """A JSON file or a 1-D array ended in a numpy traceback, after the synthetic catalogues had been benchmarked."""
    import numpy as np

    cases = {"results.json": None, "flat.npy": np.ones(2000, np.float32), "few.npy": np.ones((50, 8), np.float32),
             "nan.npy": np.full((2000, 8), np.nan, np.float32)}
    messages = {"results.json": "not a .npy array of item vectors", "flat.npy": "got shape (2000,) of float32",
                "few.npy": "got shape (50, 8)", "nan.npy": "NaN or infinite values"}
    for name, array in cases.items():
        path = tmp_path / name
        path.write_text('{"rows": []}') if array is None else np.save(path, array)
        result = run("bench", "ann", "--sizes", "1000", "--kinds", "flat", "--embeddings", path, "--out",
                     tmp_path / "out")
        assert result.exit_code == 2 and messages[name] in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output
        assert not (tmp_path / "out" / "ann.json").exists()  # refused before the synthetic catalogue ran


def test_an_import_with_kinds_goes_through_every_command_and_its_purchases_read_bought(tmp_path, tiny_bert_dir):
    """`import table --kind-col` stores the kinds (a new interactions column): every command that reads the dataset
    or the bundle's histories takes it (build, train-ranker, refresh-stats, batch-score, export), the bundles keep
    the kinds, and `recommend` words a known user's imported events as the API does ("because you bought …")."""
    import polars as pl

    from recsys.data.synthetic import generate_shop

    shop = generate_shop(n_users=40, n_items=80, seed=3)
    shop.items.write_csv(tmp_path / "items.csv")
    written = ["View", "purchase", " cart", ""]
    events = shop.interactions.with_columns(type=pl.Series([written[n % 4] for n in range(shop.interactions.height)]))
    events.write_csv(tmp_path / "events.csv")
    data, bundle = tmp_path / "data", tmp_path / "artifacts" / "kinds"
    for args in (("import", "table", "--interactions", tmp_path / "events.csv", "--items", tmp_path / "items.csv",
                  "--out", data, "--text-col", "text", "--kind-col", "type"),
                 ("build", "--data", data, "--out", tmp_path / "artifacts", "--name", "kinds",
                  "--model", tiny_bert_dir),
                 ("train-ranker", "--bundle", bundle, "--data", data, "--out", tmp_path / "ranked"),
                 ("refresh-stats", "--bundle", tmp_path / "ranked", "--data", data, "--out", tmp_path / "refreshed"),
                 ("batch-score", "--bundle", tmp_path / "refreshed", "--out", tmp_path / "recs", "--no-progress"),
                 ("export", "--bundle", tmp_path / "refreshed", "--out", tmp_path / "export", "--no-onnx")):
        result = run(*args)
        assert result.exit_code == 0, (args[0], result.output)
    ordered = events.sort("user_id", "timestamp", maintain_order=True).with_columns(
        kind=pl.col("type").str.strip_chars().str.to_lowercase().replace("", None))
    latest = {(user, item): kind for user, item, kind in ordered.select("user_id", "item_id", "kind").rows()}
    histories = pl.read_parquet(tmp_path / "refreshed" / "stats" / "histories.parquet")
    assert histories.columns == ["user_id", "history", "kinds"]
    first = ordered.filter(pl.col("user_id") == "U00001")
    assert histories.row(0) == ("U00001", first["item_id"].to_list(), first["kind"].to_list())
    verbs = {"view": "because you viewed {}", "cart": "because you added {} to your cart",
             "purchase": "because you bought {}", None: "because of {} in your history"}
    titles = dict(shop.items.select("item_id", "title").rows())
    worded = set()
    for user in ("U00001", "U00002", "U00003"):
        result = run("recommend", "--bundle", tmp_path / "refreshed", "--user", user, "--k", 5, "--json")
        assert result.exit_code == 0, result.output
        for item in json.loads(result.stdout)["items"]:
            if item["because_item_id"] is not None:
                kind = latest[user, item["because_item_id"]]
                assert item["reason"] == verbs[kind].format(titles[item["because_item_id"]]), item
                worded.add(kind)
    assert "purchase" in worded, worded
