"""`recsys encode`: the catalogue's vectors as resumable shards, equal across engines (Ray needs the
distributed extra) and to the in-process encoder that `recsys build` uses."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from encoders.text_encoder import TextEncoder
from jobs.batch import BatchError
from jobs.batch.encode import EncodeOptions, read_vectors, run_encode
from jobs.cli import app
from recsys.config import EncoderConfig
from recsys.data.synthetic import generate_shop


@pytest.fixture(scope="module")
def items():
    return generate_shop(n_users=40, n_items=90, seed=3).items


def test_local_encode_resumes_and_matches_the_in_process_encoder(items, tiny_bert_dir, tmp_path):
    config = EncoderConfig(model=str(tiny_bert_dir), batch_size=16)
    options = EncodeOptions(out=tmp_path / "vectors", encoder=config, chunk_size=40, progress=False)

    def interrupt(result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # dies after its first shard …
        run_encode(items, options, on_chunk=interrupt)
    manifest = run_encode(items, options)  # … and the rerun resumes it
    assert manifest["run"]["chunks_skipped"] == 1 and manifest["run"]["chunks_encoded"] == 2
    assert [s["rows"] for s in manifest["shards"]] == [40, 40, 10] and manifest["dim"] == 32
    ids, vectors = read_vectors(tmp_path / "vectors")
    assert ids == items["item_id"].to_list() and vectors.dtype == np.float32
    expected = TextEncoder.from_config(config).encode(items["text"].to_list())
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)  # 90 texts, 90 vectors (not one per length)
    assert distances[~np.eye(len(vectors), dtype=bool)].min() > 1e-3
    # another model into the same directory; named an encode job (was: "holds a batch job")
    with pytest.raises(BatchError, match="holds an encode job with different inputs"):
        run_encode(items, EncodeOptions(out=tmp_path / "vectors", encoder=config.model_copy(update={"max_length": 16}),
                                        chunk_size=40, progress=False))


def test_encode_command_writes_vectors_and_refuses_fp16_on_cpu(items, tiny_bert_dir, tmp_path):
    data = generate_shop(n_users=40, n_items=90, seed=3).save(tmp_path / "shop")
    args = ["encode", "--data", str(data), "--out", str(tmp_path / "vectors"), "--model", str(tiny_bert_dir),
            "--chunk-size", "50", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "encoded 90 items → 32-d vectors in 2 shards" in " ".join(result.output.split())
    again = CliRunner().invoke(app, args)  # a finished job run again: says so (was "0.0 s (0 items/s)")
    assert again.exit_code == 0 and "nothing to encode: all 2 shards of 90 items were written by a previous run" \
        in " ".join(again.output.split())
    manifest = json.loads((tmp_path / "vectors" / "manifest.json").read_text())
    assert manifest["format"] == "recsys-item-vectors" and manifest["n_rows"] == 90
    assert pq.read_table(tmp_path / "vectors" / "part-00001.parquet").num_rows == 40
    bad = CliRunner().invoke(app, args[:4] + [str(tmp_path / "half"), "--precision", "fp16", "--model",
                                              str(tiny_bert_dir)])
    assert bad.exit_code == 2 and "fp16 encoding needs a CUDA device" in bad.output


def test_ray_encode_equals_local_and_build_uses_it(items, tiny_bert_dir, tmp_path, local_ray):
    config = EncoderConfig(model=str(tiny_bert_dir), batch_size=16)
    common = {"encoder": config, "chunk_size": 30, "progress": False}
    run_encode(items, EncodeOptions(out=tmp_path / "local", **common))
    manifest = run_encode(items, EncodeOptions(out=tmp_path / "ray", engine="ray", workers=2, **common))
    assert manifest["run"]["engine"] == "ray" and manifest["run"]["chunks_encoded"] == 3
    local_ids, local = read_vectors(tmp_path / "local")
    ray_ids, on_ray = read_vectors(tmp_path / "ray")
    assert ray_ids == local_ids == items["item_id"].to_list()
    np.testing.assert_allclose(on_ray, local, atol=1e-6)
    data = generate_shop(n_users=40, n_items=90, seed=3).save(tmp_path / "shop")
    result = CliRunner().invoke(app, ["build", "--data", str(data), "--out", str(tmp_path / "art"), "--name", "shop",
                                      "--model", str(tiny_bert_dir), "--batch-size", "16", "--encoder", "torch",
                                      "--engine", "ray",
                                      "--workers", "2"])
    assert result.exit_code == 0, result.output
    bundle = next((tmp_path / "art" / "shop").glob("2*"))
    np.testing.assert_allclose(np.load(bundle / "embeddings" / "items.npy"), local, atol=1e-6)
    assert (tmp_path / "art" / "shop" / "runs" / "encode" / "manifest.json").is_file()


def test_an_encode_that_cannot_start_leaves_no_job_behind(items, tiny_bert_dir, tmp_path):
    """A mistyped --model, or fp16 on a machine without CUDA: one `error:` line (fp16 was a ValueError traceback),
    and the corrected rerun into the same --out runs (was: refused as "a batch job with different inputs")."""
    import torch

    data = generate_shop(n_users=40, n_items=90, seed=3).save(tmp_path / "shop")
    args = ["encode", "--data", str(data), "--out", str(tmp_path / "vectors"), "--no-progress"]
    runner = CliRunner()
    typo = runner.invoke(app, args + ["--model", str(tmp_path / "no-such-bert")])
    assert typo.exit_code == 2 and "not a Hugging Face model directory" in typo.output
    assert not (tmp_path / "vectors").exists()
    if not torch.cuda.is_available():
        half = runner.invoke(app, args + ["--model", str(tiny_bert_dir), "--precision", "fp16"])
        assert half.exit_code == 2, half.output
        assert "error: fp16 encoding needs a CUDA device and this machine has none" in " ".join(half.output.split())
        assert not (tmp_path / "vectors").exists()
    fixed = runner.invoke(app, args + ["--model", str(tiny_bert_dir)])
    assert fixed.exit_code == 0, fixed.output


def _tree(out) -> dict[str, bytes]:
    """Every file under `out` (relative path → bytes)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_outputs(tiny_bert_dir, tmp_path_factory):
    """(root, encode args, batch-score args): a finished `recsys encode` output in root/vectors and a finished
    `recsys batch-score` output in root/scores (each command's args lack --out)."""
    from recsys.config import BuildConfig
    from recsys.pipeline import Recommender
    from recsys.splits import split_dataset

    root = tmp_path_factory.mktemp("two-outputs")
    dataset = generate_shop(n_users=40, n_items=90, seed=3)
    data = dataset.save(root / "shop")
    vectors = np.random.default_rng(0).standard_normal((dataset.items.height, 16)).astype(np.float32)
    bundle = Recommender.build(dataset, split_dataset(dataset), vectors, BuildConfig()).save(root / "art" / "v1")
    encode = ["encode", "--data", str(data), "--model", str(tiny_bert_dir), "--chunk-size", "50", "--no-progress"]
    score = ["batch-score", "--bundle", str(bundle), "--k", "5", "--no-store", "--no-progress"]
    assert CliRunner().invoke(app, encode + ["--out", str(root / "vectors")]).exit_code == 0
    assert CliRunner().invoke(app, score + ["--out", str(root / "scores")]).exit_code == 0
    return root, encode, score


def test_one_commands_output_is_never_anothers_job_even_with_overwrite(two_outputs):
    """batch-score into a finished encode output, and encode --overwrite into a finished batch-score output: one
    `error:` line naming what the directory holds, exit code 2, every file kept (was: batch-score offered
    --overwrite "to discard it", and encode --overwrite deleted the batch scores and exited 0)."""
    root, encode, score = two_outputs
    runner = CliRunner()
    vectors_before, scores_before = _tree(root / "vectors"), _tree(root / "scores")
    for args, kept in ((score + ["--out", str(root / "vectors")], "vectors"),
                       (score + ["--out", str(root / "vectors"), "--overwrite"], "vectors"),
                       (encode + ["--out", str(root / "scores")], "scores"),
                       (encode + ["--out", str(root / "scores"), "--overwrite"], "scores")):
        result = runner.invoke(app, args)
        line = " ".join(result.output.split())
        assert result.exit_code == 2, result.output
        if kept == "vectors":
            assert f"error: {root / 'vectors'} holds `recsys encode` output (item vectors), not a batch-score " \
                   "job: choose another --out (--overwrite replaces only this command's own earlier output)" in line
        else:
            assert f"error: {root / 'scores'} holds `recsys batch-score` output (batch scores), not an encode " \
                   "job: choose another --out" in line
    assert _tree(root / "vectors") == vectors_before and _tree(root / "scores") == scores_before


@pytest.mark.parametrize(("name", "held"), [("scores", "`recsys batch-score` output (batch scores)"),
                                            ("vectors", "`recsys encode` output (item vectors)")])
def test_recommend_on_a_job_output_says_what_it_holds(two_outputs, name, held):
    """`recommend --bundle` given a batch-score or encode output (was: "bundle schema version None is not
    supported")."""
    root = two_outputs[0]
    result = CliRunner().invoke(app, ["recommend", "--bundle", str(root / name), "--user", "U00001"])
    assert result.exit_code == 2, result.output
    assert f"error: {root / name}: no bundle here: it holds {held}, not a bundle" in " ".join(result.output.split())


def test_an_unfinished_job_of_another_command_is_named_so(items, tmp_path):
    """A directory with another command's job.json and no manifest yet is named an unfinished job of it."""
    from jobs.batch.layout import refuse_foreign

    (tmp_path / "half" / "_job").mkdir(parents=True)
    (tmp_path / "half" / "_job" / "job.json").write_text(json.dumps({"format": "recsys-batch-scores"}))
    with pytest.raises(BatchError, match="half holds an unfinished `recsys batch-score` job \\(batch scores\\), "
                                         "not an encode job"):
        run_encode(items, EncodeOptions(out=tmp_path / "half", encoder=EncoderConfig(model="no-such"),
                                        progress=False))
    refuse_foreign(tmp_path / "half", "recsys-batch-scores")  # its own format: no complaint


def test_encode_interrupted_before_its_first_shard_says_nothing_was_kept(tiny_bert_dir, tmp_path, monkeypatch):
    """Was "completed shards are kept in OUT; rerun the same command to resume" with no shard in OUT."""
    import jobs.batch.encode

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs.batch.encode, "_engine", interrupt)
    data = generate_shop(n_users=40, n_items=90, seed=3).save(tmp_path / "shop")
    out = tmp_path / "vectors"
    result = CliRunner().invoke(app, ["encode", "--data", str(data), "--out", str(out), "--model", str(tiny_bert_dir),
                                      "--chunk-size", "50", "--no-progress"], env={"COLUMNS": "400"})
    assert result.exit_code == 130, result.output
    assert f"interrupted: before the first shard was written: nothing kept in {out}; rerun the same command to " \
           "start again" in " ".join(result.output.split())
