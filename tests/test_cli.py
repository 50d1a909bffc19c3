import json

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from recsys.artifacts import resolve_bundle

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def shop_bundle(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("cli")
    result = run("import", "synthetic", "--out", root / "shop", "--users", 60, "--items", 80, "--seed", 3)
    assert result.exit_code == 0, result.output
    assert "imported synthetic-shop: 80 items, 60 users" in result.output
    result = run("build", "--data", root / "shop", "--out", root / "artifacts", "--name", "shop",
                 "--model", tiny_bert_dir)
    assert result.exit_code == 0, result.output
    return root, resolve_bundle(root / "artifacts" / "shop")


def test_build_writes_bundle_with_metrics(shop_bundle):
    _, bundle = shop_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    models = {(row["model"], row["split"]) for row in manifest["metrics"]}
    assert models == {("popularity", "valid"), ("bundle", "valid"), ("popularity", "test"), ("bundle", "test")}
    assert manifest["dataset"]["n_items"] == 80
    assert manifest["encoder"]["dim"] == 32


def test_recommend_and_evaluate_commands(shop_bundle, tiny_bert_dir):
    root, bundle = shop_bundle
    result = run("recommend", "--bundle", bundle, "--user", "U00001", "--k", 3)
    assert result.exit_code == 0, result.output
    assert "strategy: personalised" in result.output
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
    (("evaluate", "--data", "/no/such/dir", "--ks", "0"), "k values must be positive"),
    (("recommend", "--bundle", "/no/such/bundle", "--user", "x"), "no bundle here"),
])
def test_bad_input_is_one_clear_line(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_unknown_item_is_reported(shop_bundle):
    _, bundle = shop_bundle
    result = run("recommend", "--bundle", bundle, "--similar", "nope")
    assert result.exit_code == 2
    assert "unknown item id: 'nope'" in result.output


def test_quickstart_end_to_end(tmp_path, tiny_bert_dir):
    result = run("quickstart", "--out", tmp_path / "artifacts", "--data-out", tmp_path / "shop",
                 "--model", tiny_bert_dir, "--users", 40, "--items", 60)
    assert result.exit_code == 0, result.output
    assert "bundle written" in result.output and "recsys serve --bundle" in result.output
    assert (resolve_bundle(tmp_path / "artifacts" / "shop") / "index" / "index.faiss").is_file()
