"""The lexical probe (benchmarks/lexical.py): TF-IDF cosines to the last history items, newest first, NaN without a
history; the benchmark cross-fits the default re-ranker with and without them."""

import functools
import json

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from benchmarks.lexical import FEATURES, lexical_features, recent_rows, tfidf_rows
from recsys.splits import split_dataset
from tests.test_ranker import SMALL_RANKER, planted_bundle, planted_dataset


def test_rows_are_unit_tfidf_vectors_and_shared_words_make_the_cosine():
    texts = ["red copper wire", "red copper wire", "blue steel bolt", None, "copper bolt"]
    rows = tfidf_rows(texts, "word", (1, 1))
    cosine = (rows @ rows.T).toarray()
    assert cosine[0, 1] == pytest.approx(1.0) and cosine[0, 2] == 0.0
    assert rows[3].nnz == 0  # a missing text: no terms
    assert 0.0 < cosine[0, 4] < 1.0 and 0.0 < cosine[2, 4] < 1.0  # copper with 0, bolt with 2
    assert rows.shape[1] == 4  # min_df 2: red, copper, wire, bolt (blue and steel are in one text each)


def test_recent_rows_are_the_last_known_items_newest_first():
    position = {"a": 0, "b": 1, "c": 2}
    recent = recent_rows([["a", "x", "b", "c"], [], ["c"]], position, depth=2)
    assert recent.tolist() == [[2, 1], [-1, -1], [2, -1]]


def test_features_are_the_cosine_to_the_last_the_largest_and_the_mean_of_the_history():
    # unit rows: 0 = (1, 0), 1 = (0, 1), 2 = (0.6, 0.8), 3 = empty
    matrix = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.0, 0.0]]))
    recent = np.array([[0, 1, -1], [-1, -1, -1]])  # query 0: last item 0, then 1; query 1: no history
    query = np.array([0, 0, 0, 1, 0])
    candidates = np.array([2, 1, 3, 2, -1])
    values = lexical_features(matrix, recent, query, candidates)
    assert values.shape == (5, len(FEATURES))
    np.testing.assert_allclose(values[0], [0.6, 0.8, 0.7])
    np.testing.assert_allclose(values[1], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(values[2], [0.0, 0.0, 0.0])  # a candidate without terms
    assert np.isnan(values[3]).all() and np.isnan(values[4]).all()  # no history; not in the catalogue


def test_benchmark_and_command_cross_fit_the_default_ranker_with_and_without_the_features(tmp_path, monkeypatch):
    import benchmarks.lexical
    from jobs.cli import app

    # the command as typed; the probe's re-ranker the small one (the id-sequence test's), as the report is checked
    monkeypatch.setattr(benchmarks.lexical, "run",
                        functools.partial(benchmarks.lexical.run, ranker_overrides=SMALL_RANKER))

    bundle, data = planted_bundle(tmp_path)
    dataset = planted_dataset()
    result = CliRunner().invoke(app, ["bench", "lexical", "--bundle", str(bundle), "--data", str(data),
                                      "--out", str(tmp_path / "out"), "--outer", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "lexical.json").read_text())
    first, *others = report["rows"]
    assert [r["scheme"] for r in others] == ["+ TF-IDF similarity, character 3–5-grams",
                                             "+ TF-IDF similarity, word 1–2-grams"]
    assert first["diff"] == 0.0 and all(r["n_users"] == split_dataset(dataset).valid.height for r in report["rows"])
    assert others[0]["diff"] == pytest.approx(others[0]["ndcg@10"] - first["ndcg@10"])
    # "item {i}": the word "item" is in every text (min_df 2 keeps it) and each number once (dropped)
    assert report["meta"]["vectorisers"]["word 1–2-grams"]["terms"] == 1
    assert (tmp_path / "out" / "lexical.png").exists() and "TF-IDF" in (tmp_path / "out" / "lexical.md").read_text()
