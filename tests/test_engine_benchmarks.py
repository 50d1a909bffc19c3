"""The engine benchmarks measure what is served: the in-process cost table (ranker on and off, by query
kind and stage) and the API latency table (engine first, towers only beside it, a reload mid-run)."""

import json

from benchmarks import engine, latency
from tests.test_batch import ranked_bundle  # noqa: F401  (module fixture: the planted bundle with a ranker)


def test_engine_cost_table_covers_each_query_kind_with_the_ranker_on_and_off(ranked_bundle, tmp_path):  # noqa: F811
    bundle, _ = ranked_bundle
    paths = engine.run(bundle, tmp_path, n_queries=40, batch=8, log=lambda *_: None)
    report = json.loads(paths["json"].read_text())
    kinds = {(r["query"], r["ranker"], r["batch"]) for r in report["rows"]}
    for ranker in ("on", "off"):
        assert {("known user", ranker, 1), ("known user", ranker, 8), ("session (items)", ranker, 1),
                ("session (items)", ranker, 8), ("similar + user", ranker, 1)} <= kinds
    assert all(r["queries"] == 40 for r in report["rows"] if r["batch"] == 1)
    assert {("diversify (shown_lists)", "–", 1), ("diversify (shown_lists)", "–", 8)} <= kinds
    assert "near-duplicate collapsing + MMR alone" in paths["md"].read_text()
    assert [s["stage"] for s in report["meta"]["stages"]][:3] == [
        "FAISS search (top candidates)", "re-ranker features", "LightGBM predict"]
    assert paths["png"].stat().st_size > 0 and "trees over the top 40 candidates" in paths["md"].read_text()


def test_latency_benchmark_serves_the_engine_and_reports_towers_only_beside_it(ranked_bundle, tmp_path):  # noqa: F811
    bundle, _ = ranked_bundle
    result = latency.run(bundle, tmp_path / "out", concurrencies=(2,), endpoints=("user", "similar_user"),
                         requests=20, seconds=5, warmup=4, loadgen="httpx", command="recsys bench latency …")
    rows = result["rows"]
    assert [(r["endpoint"], r["ranker"]) for r in rows] == [
        ("user", "on"), ("similar_user", "on"), ("user+reload", "on"), ("user", "off"), ("similar_user", "off")]
    assert all(r["errors"] == 0 and r["requests"] >= 20 for r in rows)
    assert "HTTP 200" in rows[2]["note"]
    text = (tmp_path / "out" / "latency.md").read_text()
    assert "RECSYS_RERANK=false" in text and "| ranker |" in text
    startup = json.loads((tmp_path / "out" / "latency.json").read_text())["meta"]["startup_s"]
    assert list(startup) == ["ranker on", "ranker off"] and all(0 < s < 300 for s in startup.values())
    assert f"ranker on {startup['ranker on']} s" in text
    assert "RECSYS_* settings from the environment: " in text and "RECSYS_ADMIN_TOKEN" not in text
