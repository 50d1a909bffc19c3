"""`recsys bench catalogue` writes its report (the figures themselves: benchmarks/results/catalogue-edits/)."""

import json

from benchmarks.catalogue import MEASURES, OPS, run


def test_catalogue_benchmark_times_edits_alone_during_a_compaction_and_before_a_tower_encode(tmp_path,
                                                                                            tiny_bert_dir):
    paths = run(tmp_path / "out", [("hnsw", 1_000)], 8, edits=3, interval_ms=1, tower_items=(200,),
                tower_modes=("sequence",), rounds=2, bert_dir=tiny_bert_dir, log=lambda *_: None)
    report = json.loads(paths["json"].read_text())
    rows = {(r["measure"], r["op"]): r for r in report["rows"]}
    assert [op for measure, op in rows if measure == MEASURES["edits"]] == list(OPS)
    assert all(rows[MEASURES["edits"], op]["n"] == 3 and 0 < rows[MEASURES["edits"], op]["median_ms"]
               <= rows[MEASURES["edits"], op]["max_ms"] for op in OPS)
    during = rows[MEASURES["compaction"], "all"]
    assert during["n"] >= 1 and during["compaction_s"] > 0 and "rows reclaimed" in during["note"]
    assert (during["index"], during["items"], during["dim"]) == ("hnsw", 1_000, 8)
    index = report["meta"]["indexes"]["hnsw:1000"]
    assert index["index_rows_match"] and index["reclaimed"] > 0 and len(index["edit_timeline"]) == during["n"]
    tower = rows[MEASURES["tower"], "upsert + encode"]
    assert (tower["index"], tower["items"], tower["n"]) == ("sequence tower", 200, 2) and tower["median_ms"] > 0
    assert len(report["meta"]["load_start"]) == 3 and report["meta"]["environment"]["cpu_count"]
    markdown = paths["md"].read_text()
    assert f"## {MEASURES['compaction']}" in markdown and "| hnsw | 1,000 | 8 | upsert | 3 |" in markdown
    assert paths["png"].stat().st_size > 0

