"""The ANN benchmark's plumbing: report files, Markdown formatting, the variant plan, the target verdict."""

from __future__ import annotations

import json

import pytest

from benchmarks.ann import TARGET_RECALL, ivf_shape, plan, run, target_notes
from benchmarks.common import Column, markdown_table, write_report


def test_markdown_table_formats_numbers_and_missing_values():
    rows = [{"name": "hnsw", "qps": 1234.5, "recall": 0.98765, "gpu": None}]
    table = markdown_table(rows, [Column("name"), Column("qps", "QPS", ",.0f"), Column("recall", "R", ".3f"),
                                  Column("gpu")])
    assert table.splitlines() == ["| name | QPS | R | gpu |", "|---|---|---|---|", "| hnsw | 1,234 | 0.988 | – |"]


def test_write_report_writes_json_markdown_per_group_and_chart(tmp_path):
    rows = [{"dataset": "a", "x": 1.0}, {"dataset": "b", "x": 2.0}, {"dataset": "a", "x": 3.0}]
    drawn = []
    paths = write_report(tmp_path, "demo", rows, [Column("dataset"), Column("x", fmt=".1f")], title="Demo",
                         meta={"seed": 1}, group_by="dataset", notes=["one note"],
                         chart=lambda r, path: drawn.append((len(r), path.name)))
    assert json.loads(paths["json"].read_text()) == {"meta": {"seed": 1}, "rows": rows}
    assert paths["md"].read_text().splitlines()[:9] == [
        "# Demo", "", "- one note", "", "## a", "", "| x |", "|---|", "| 1.0 |"]
    assert "## b" in paths["md"].read_text() and drawn == [(3, "demo.png")]


def test_plan_and_ivf_shape_per_size():
    assert ivf_shape(10_000) == {"nlist": 256, "train_size": 10_000, "kmeans_iters": 10}
    assert ivf_shape(1_000_000) == {"nlist": 2048, "train_size": 100_000, "kmeans_iters": 10}
    labels = [v.label for v in plan(1_000_000, ("flat", "hnsw", "ivf_flat", "ivf_pq"))]
    assert labels == ["flat (exact)", "flat fp16", "IVF2048,Flat", "IVF2048,PQ48", "IVF2048,PQ48 + fp16 refine",
                      "HNSW16 (efC 40)"]
    assert "HNSW32 (efC 80)" in [v.label for v in plan(100_000, ("hnsw",))]
    assert all(v.config.gpu == "off" for v in plan(1000, ("flat", "ivf_flat")))


def test_target_verdict_names_the_fastest_qualifying_configuration():
    rows = [{"dataset": "d", "index": "flat (exact)", "search": "exhaustive", "recall@100": 1.0, "speedup": 1.0},
            {"dataset": "d", "index": "hnsw", "search": "ef=64", "recall@100": 0.90, "speedup": 80.0},
            {"dataset": "d", "index": "hnsw", "search": "ef=128", "recall@100": TARGET_RECALL, "speedup": 30.0},
            {"dataset": "d", "index": "ivf", "search": "nprobe=64", "recall@100": 0.97, "speedup": 12.0}]
    assert target_notes(rows) == ["d: target met — hnsw ef=128: R@100 0.950 at 30× the exact index's single-query "
                                  "rate (1 of 4 rows qualify)."]
    assert target_notes(rows[:2] + rows[3:]) == ["d: target missed — fastest with R@100 ≥ 0.95: ivf nprobe=64 at "
                                                 "12.0× (needs 20×)."]


@pytest.mark.slow
def test_tiny_end_to_end_run(tmp_path):
    paths = run([600], tmp_path, n_queries=20, single_queries=5, max_seconds=1, kinds=("flat", "hnsw"))
    rows = json.loads(paths["json"].read_text())["rows"]
    assert rows[0]["index"] == "flat (exact)" and rows[0]["recall@100"] == 1.0 and rows[0]["speedup"] == 1.0
    assert all(r["qps_single_cpu"] > 0 and r["qps_batch"] > 0 for r in rows)
    assert {r["index"] for r in rows} == {"flat (exact)", "flat fp16", "HNSW16 (efC 40)", "HNSW32 (efC 80)"}
    assert paths["png"].stat().st_size > 10_000
