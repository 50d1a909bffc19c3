"""`recsys bench scale` at a tiny size: every stage runs through the CLI and is measured, the report is written."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.scale import STAGES, Size, growth
from jobs.cli import app


def test_sizes_parse_and_growth_is_the_log_log_slope():
    assert Size.parse("10k x 100k x 1M".replace(" ", "")) == Size(10_000, 100_000, 1_000_000)
    with pytest.raises(ValueError, match="ITEMSxUSERSxEVENTS"):
        Size.parse("10000x5")
    rows = [{"stage": "build", "n": n, "wall_s": 3.0 * n ** 1.5} for n in (10, 100, 1000)]
    assert growth(rows) == {"build": pytest.approx(1.5)}


def test_bench_scale_runs_every_stage_at_a_tiny_size(tiny_bert_dir, tmp_path):
    runner = CliRunner()
    common = ["bench", "scale", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--encoder", "torch",
              "--model", str(tiny_bert_dir), "--eval-users", "30", "--requests", "5"]
    result = runner.invoke(app, [*common, "--sizes", "64x60x400"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "scale.json").read_text())
    assert [r["stage"] for r in report["rows"]] == list(STAGES)
    for row in report["rows"]:
        assert row["wall_s"] > 0 and row["cpu_s"] > 0 and row["peak_rss_mb"] > 50, row
    serve = report["rows"][-1]
    assert serve["ready_s"] > 0 and serve["p99_ms"] >= serve["p50_ms"] > 0
    assert (tmp_path / "work" / "64x60x400" / "batch").is_dir()
    # a second size for one stage only: the earlier rows stay, the import stage gets its growth exponent
    result = runner.invoke(app, [*common, "--sizes", "64x120x800", "--stages", "import"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "scale.json").read_text())
    assert len(report["rows"]) == len(STAGES) + 1
    assert np.isfinite(report["meta"]["exponents"]["import"])
    assert "import" in (tmp_path / "out" / "scale.md").read_text()
    assert (tmp_path / "out" / "scale.png").stat().st_size > 0
    bad = runner.invoke(app, [*common, "--sizes", "64x60x400", "--stages", "nope"])
    assert bad.exit_code == 2 and "unknown stage" in bad.output


def test_bench_scale_refuses_an_unknown_encoder_before_the_first_stage(tmp_path):
    """It ran the import stage (minutes at the default sizes), then the build stage's process failed on it."""
    result = CliRunner().invoke(app, ["bench", "scale", "--sizes", "64x60x400", "--encoder", "bogus", "--stages",
                                      "import,build", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Invalid value for '--encoder'" in result.output, result.output
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def test_bench_scale_says_each_stage_as_it_starts_and_ends(tmp_path):
    """It printed nothing until every stage had run (over an hour at the README's sizes; a walk-through's 2,000-item
    run was silent for minutes), the stages' own bars going to their logs."""
    common = ["bench", "scale", "--sizes", "64x60x400", "--stages", "import", "--work", str(tmp_path / "work"),
              "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, common, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    log = tmp_path / "work" / "64x60x400" / "import.log"
    assert lines[0] == f"64 items × 60 users × 400 events: import … (its output: {log})", lines[:3]
    assert lines[1].startswith("64 items × 60 users × 400 events: import took ") and lines[1].endswith(" events/s)")
    again = CliRunner().invoke(app, [*common, "--reuse"], env={"COLUMNS": "400"})
    assert again.exit_code == 0, again.output
    assert again.output.splitlines()[0] == "64 items × 60 users × 400 events: import kept from an earlier run (--reuse)"
