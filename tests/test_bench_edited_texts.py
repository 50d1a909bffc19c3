"""`recsys bench edited-texts`: a bundle as built, then a feed's edit of its items' texts encoded text-only (how
upserts were served before stop 58), with each trained item's ID block kept (stop 58) and, for towers that keep
their items' own neighbour shares, with those too (tests/test_own_neighbours.py); JSON + Markdown + PNG."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from benchmarks.edited_texts import AS_BUILT, ID_KEPT, TEXT_ONLY, edited_records
from jobs.cli import app
from recsys.data.synthetic import generate_shop


def test_edited_records_are_a_seeded_share_with_the_suffix():
    items = generate_shop(n_users=20, n_items=40, seed=2).items
    first, again = edited_records(items, 0.25, " (new)", seed=3), edited_records(items, 0.25, " (new)", seed=3)
    assert len(first) == 10 and [r["item_id"] for r in first] == [r["item_id"] for r in again]
    texts = dict(zip(items["item_id"].to_list(), items["text"].to_list()))
    assert all(r["text"] == texts[r["item_id"]] + " (new)" for r in first)
    assert [r["item_id"] for r in first] != [r["item_id"] for r in edited_records(items, 0.25, " (new)", seed=4)]


def test_the_benchmark_reports_the_three_variants_of_one_seeded_edit(tmp_path, trained_bundle):
    data = generate_shop(n_users=60, n_items=90, seed=2).save(tmp_path / "shop")  # the bundle's own dataset
    out = tmp_path / "results"
    result = CliRunner().invoke(app, ["bench", "edited-texts", "--bundle", str(trained_bundle), "--data", str(data),
                                      "--out", str(out), "--share", "0.5"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "edited_texts.json").read_text())
    rows = {r["variant"]: r for r in report["rows"]}
    assert list(rows) == [AS_BUILT, TEXT_ONLY, ID_KEPT]  # towers without neighbour features: no own-neighbours row
    assert report["meta"]["own_neighbours"] is False
    assert rows[AS_BUILT]["edited"] == 0 and rows[TEXT_ONLY]["edited"] == rows[ID_KEPT]["edited"] == 45
    assert rows[AS_BUILT]["ndcg_change"] == 0.0
    for row in rows.values():
        assert row["n_examples"] == 60 and 0.0 <= row["ndcg@10"] <= 1.0
        assert np.isclose(row["ndcg_change"], row["ndcg@10"] / rows[AS_BUILT]["ndcg@10"] - 1)
    assert report["meta"]["share"] == 0.5 and report["meta"]["suffix"] == " (2026 edition)"
    markdown = (out / "edited_texts.md").read_text()
    assert f"| {ID_KEPT} | 45 | {rows[ID_KEPT]['ndcg@10']:.4f} |" in markdown
    assert "so there is no own-neighbours row" in markdown
    assert (out / "edited_texts.png").stat().st_size > 5_000


def test_an_empty_suffix_is_refused_before_any_work(tmp_path):
    result = CliRunner().invoke(app, ["bench", "edited-texts", "--bundle", str(tmp_path / "none"), "--data",
                                      str(tmp_path / "none"), "--out", str(tmp_path / "r"), "--suffix", "  "])
    assert result.exit_code == 2
    said = " ".join(result.output.replace("│", " ").split())
    assert "an edit must change the text: give a --suffix with a visible character" in said, said
    assert not (tmp_path / "r").exists()
