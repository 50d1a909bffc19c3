"""The re-ranker's trees compiled to native code (`recsys.compiled_trees`, lleaves): the same scores as LightGBM,
compiled once per model into the cache, and LightGBM kept whenever compiling is unavailable, fails or disagrees."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from recsys import compiled_trees
from recsys.compiled_trees import CompiledTrees, load_compiled
from recsys.ranker import Ranker, RankerConfig

needs_lleaves = pytest.mark.skipif(not compiled_trees.available(), reason="the fast-ranker extra is not installed")


@pytest.fixture(scope="module")
def saved_ranker(tmp_path_factory) -> tuple[Ranker, Path, np.ndarray]:
    """A lambdarank model on 200 queries × 20 candidates (4 features, 10 % missing), saved; + 500 feature rows."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 4))
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) > 1).astype(int)
    groups = np.full(200, 20)
    config = RankerConfig(n_estimators=40, min_child_samples=5)
    ranker = Ranker.fit((x[:3200], y[:3200], groups[:160]), (x[3200:], y[3200:], groups[160:]),
                        ["a", "b", "c", "d"], config)
    directory = tmp_path_factory.mktemp("ranker")
    ranker.save(directory)
    rows = rng.normal(size=(500, 4))
    rows[rng.random(rows.shape) < 0.1] = np.nan
    return ranker, directory, rows


@needs_lleaves
def test_loaded_ranker_scores_through_compiled_trees_with_lightgbms_scores(saved_ranker, tmp_path, monkeypatch):
    ranker, directory, rows = saved_ranker
    monkeypatch.setenv("RECSYS_RANKER_CACHE", str(tmp_path / "cache"))
    loaded = Ranker.load(directory)
    assert isinstance(loaded.compiled, CompiledTrees)
    np.testing.assert_allclose(loaded.predict(rows), ranker.booster.predict(rows), rtol=0, atol=1e-12)
    assert loaded.predict(rows[:0]).shape == (0,)
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".o"  # published whole: no temporary file left
    stamp = cached[0].stat().st_mtime_ns
    again = Ranker.load(directory)  # read from the cache, not compiled again
    assert list((tmp_path / "cache").iterdir()) == cached and cached[0].stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.predict(rows), loaded.predict(rows))
    assert Ranker.load(directory, compile_trees=False).compiled is None


@needs_lleaves
def test_compiled_scores_that_disagree_with_lightgbm_are_not_used(saved_ranker, tmp_path, monkeypatch, caplog):
    _, directory, rows = saved_ranker
    monkeypatch.setenv("RECSYS_RANKER_CACHE", str(tmp_path / "cache"))
    real = CompiledTrees.predict
    monkeypatch.setattr(CompiledTrees, "predict", lambda self, x: real(self, x) + 1e-6)
    with caplog.at_level(logging.WARNING, logger="recsys.compiled_trees"):
        loaded = Ranker.load(directory)
    assert loaded.compiled is None and "differ from LightGBM" in caplog.text
    np.testing.assert_array_equal(loaded.predict(rows), loaded.booster.predict(rows, num_threads=1))


@needs_lleaves
def test_a_failed_compile_keeps_lightgbm(saved_ranker, tmp_path, monkeypatch, caplog):
    import lleaves

    ranker, directory, rows = saved_ranker
    monkeypatch.setenv("RECSYS_RANKER_CACHE", str(tmp_path / "cache"))

    def broken(self, cache=None):
        raise RuntimeError("no LLVM target")

    monkeypatch.setattr(lleaves.Model, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="recsys.compiled_trees"):
        assert load_compiled(directory / "model.txt", Ranker.load(directory, compile_trees=False).booster) is None
    assert "no LLVM target" in caplog.text
    loaded = Ranker.load(directory)  # the same failure when a bundle loads: it scores with LightGBM
    assert loaded.compiled is None
    np.testing.assert_array_equal(loaded.predict(rows), ranker.booster.predict(rows, num_threads=1))


def test_without_lleaves_the_ranker_scores_with_lightgbm(saved_ranker, tmp_path, monkeypatch):
    ranker, directory, rows = saved_ranker
    monkeypatch.setenv("RECSYS_RANKER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(compiled_trees, "available", lambda: False)
    loaded = Ranker.load(directory)
    assert loaded.compiled is None and not (tmp_path / "cache").exists()
    np.testing.assert_array_equal(loaded.predict(rows), ranker.booster.predict(rows, num_threads=1))
