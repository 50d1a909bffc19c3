"""`recsys bench gpu` at tiny size on whatever this machine has: every stage runs (on the CPU without CUDA), and
the report names what it skipped."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from benchmarks.latency import ENDPOINTS
from jobs.cli import app
from recsys.data.synthetic import generate_shop


def test_gpu_check_runs_every_stage_and_reports_what_it_skipped(tiny_bert_dir, tmp_path):
    import torch

    from recsys.retrieval import gpu_count

    data = generate_shop(n_users=80, n_items=120, seed=0).save(tmp_path / "shop")
    (tmp_path / "cfg.json").write_text(json.dumps({  # the `gpu` preset, shrunk to the tiny BERT
        "epochs": 1, "tower": {"dim": 32, "id_dim": 8, "seq_heads": 2}, "zero_shot_dims": 8, "batch_size": 64}))
    result = CliRunner().invoke(app, ["bench", "gpu", "--data", str(data), "--out", str(tmp_path / "gpu"),
                                      "--model", str(tiny_bert_dir), "--config", str(tmp_path / "cfg.json"),
                                      "--encode-items", "300", "--encode-batch", "64", "--ann-size", "2000",
                                      "--ann-queries", "50", "--concurrency", "2", "--latency-requests", "20",
                                      "--latency-seconds", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "gpu" / "gpu.json").read_text())
    stages = report["stages"]
    assert list(stages) == ["train", "encode", "ann", "latency"]
    assert (tmp_path / "gpu" / "gpu.png").stat().st_size > 1_000  # a panel per stage
    assert not [s["error"] for s in stages.values() if s.get("error")]
    train = {r["split"]: r for r in stages["train"]["rows"]}
    assert set(train) == {"valid", "test"} and 0 <= train["test"]["ndcg@10"] <= 1
    assert (tmp_path / "gpu" / "bundles" / "gpu-check").is_dir()
    assert report["train_config"]["lora"]["top_layers"] is None  # the gpu preset: adapters in every layer
    encode = {r["precision"]: r for r in stages["encode"]["rows"]}
    assert encode["fp32"]["items"] == 300 and encode["fp32"]["items_per_s"] > 0
    ann = {r["index"] for r in stages["ann"]["rows"]}
    assert {"flat (exact)", "flat fp16"} <= ann and any(i.startswith("IVF") for i in ann)
    latency = stages["latency"]["rows"]
    assert {r["endpoint"] for r in latency} == set(ENDPOINTS)
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in latency)
    markdown = (tmp_path / "gpu" / "gpu.md").read_text()
    assert "no committed `cpu` figure for synthetic-shop" in markdown  # the reference is amazon-scientific's
    if not torch.cuda.is_available():
        assert set(encode) == {"fp32"} and train["test"]["device"] == "cpu"
        assert any(s.startswith("encode fp16: needs a CUDA device") for s in report["skipped"])
        assert "target: fp16 item encoding ≥ 10,000 items/s: not measured (no GPU)" in markdown
    if gpu_count() == 0:
        assert not any(i.startswith("GPU") for i in ann)
        assert any(s.startswith("ann: faiss-gpu flat and IVF need faiss-gpu") for s in report["skipped"])
        assert "skipped: ann: faiss-gpu" in markdown
    assert "## latency" in markdown and re.search(r"^\| user \| [^|]+ \| 2 \|", markdown, re.MULTILINE)
