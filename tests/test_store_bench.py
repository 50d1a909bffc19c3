"""`recsys bench store` writes its report (the figures themselves live in benchmarks/results/store.md)."""

import json

from benchmarks.store import run


def test_store_benchmark_writes_json_markdown_and_chart(tmp_path):
    paths = run(tmp_path / "out", [0, 2_000], inserts=10, log=lambda *_: None)
    report = json.loads(paths["json"].read_text())
    assert [(r["store"], r["history_events"]) for r in report["rows"]] == [("sqlite", 0), ("sqlite", 2_000)]
    assert all(r["insert_p50_ms"] > 0 and r["previous_insert_p50_ms"] > 0 for r in report["rows"])
    assert all(0 < r["history_p50_ms"] <= r["history_p99_ms"] for r in report["rows"])
    assert "history read p50 ms" in paths["md"].read_text()
    assert "| sqlite | 2,000 |" in paths["md"].read_text() and paths["png"].stat().st_size > 0


def test_an_unreachable_redis_is_refused_before_the_sqlite_runs(tmp_path):
    """It was reached only after every SQLite length had run (minutes at a million events)."""
    from typer.testing import CliRunner

    from jobs.cli import app

    result = CliRunner().invoke(app, ["bench", "store", "--lengths", "0", "--inserts", "10", "--redis-url", "notaurl",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.startswith("error: cannot reach Redis at notaurl"), result.output
    assert "sqlite" not in result.output and not (tmp_path / "out").exists()
