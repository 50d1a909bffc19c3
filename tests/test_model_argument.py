"""A `--model` that is no model directory: a local path (a file, a relative typo under an existing directory) is one
immediate error, never a hub lookup; a hub name that cannot be fetched also says no local directory has that name."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from encoders.backbone import check_model_directory, declared_pooling, load_backbone
from jobs.cli import app
from recsys.data.synthetic import generate_shop
from recsys.errors import RecsysError


@pytest.fixture
def no_hub(monkeypatch):
    """Every hub lookup (transformers' cached_file, the Auto classes) recorded and refused."""
    import transformers
    import transformers.utils

    lookups: list[str] = []

    def refused(name, *args, **kwargs):
        lookups.append(str(name))
        raise OSError("no hub in this test")

    monkeypatch.setattr(transformers.utils, "cached_file", refused)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refused)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refused)
    return lookups


def test_a_file_is_one_error_before_any_hub_lookup(tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results.json").write_text("{}")
    for call in (check_model_directory, declared_pooling, load_backbone):
        with pytest.raises(RecsysError, match=r"^results.json: is a file, not a model directory$"):
            call("results.json")
    assert no_hub == []


def test_a_relative_path_under_a_local_directory_is_one_error_before_any_hub_lookup(tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    hub = "; as a hub name it is not looked up while a directory 'models' lies here: run from another directory to " \
        "fetch it"  # "models/my-bert" could be a hub name (org/name): the message says how to get that
    for model, said in (("models/my-bert", hub), ("./my-bert", ""), ("a/b/c", "")):
        for call in (check_model_directory, declared_pooling, load_backbone):
            with pytest.raises(RecsysError) as raised:
                call(model)
            assert str(raised.value) == f"{model}: no such model directory (relative to {tmp_path}){said}"
    assert no_hub == []


def test_hub_names_still_go_to_the_hub_and_a_failure_says_no_local_directory_has_the_name(tmp_path, monkeypatch,
                                                                                          no_hub):
    monkeypatch.chdir(tmp_path)
    assert check_model_directory("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert check_model_directory("bert-base-uncased") == "bert-base-uncased"
    assert check_model_directory("default").endswith("model")  # the shipped MiniLM directory
    with pytest.raises(RecsysError) as raised:
        load_backbone("org/my-bert")
    assert str(raised.value) == ("could not load model 'org/my-bert' from org/my-bert: no hub in this test; there is "
                                 f"no local directory 'org/my-bert' either (looked in {tmp_path})")
    assert no_hub == ["org/my-bert"]


def test_build_with_a_file_or_a_relative_typo_as_model_is_one_line_at_once(tmp_path, monkeypatch, no_hub):
    data = generate_shop(n_users=30, n_items=40, seed=1).save(tmp_path / "shop")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "models").mkdir()
    runner = CliRunner()
    for model, problem in (("results.json", "results.json: is a file, not a model directory"),
                           ("models/my-bert", f"models/my-bert: no such model directory (relative to {tmp_path}); as a "
                            "hub name it is not looked up while a directory 'models' lies here: run from another "
                            "directory to fetch it")):
        result = runner.invoke(app, ["build", "--data", str(data), "--out", str(tmp_path / "art"), "--model", model])
        assert result.exit_code == 2, result.output
        said = " ".join(result.output.split())  # after "reading the dataset … loading BERT (…) …"
        assert said.endswith(f"… error: {problem}") and said.count("error") == 1, said
    assert no_hub == []
    assert not (tmp_path / "art").exists()
