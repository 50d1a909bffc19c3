"""`recsys diversify`: a bundle's diversification setting changed from the command line (it could be set only from
Python, so README's "near-duplicate collapsing is offered" was not something a shop could turn on)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from jobs.cli import app

runner = CliRunner()


def _run(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    result.flat = " ".join(result.output.replace("│", " ").split())
    return result


def _unit(recommender, ids: list[str]) -> np.ndarray:
    vectors = recommender.catalogue.state.vectors[recommender.catalogue.state.rows(ids)]
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_a_new_version_lists_with_the_setting_given(frozen_bundle: Path, tmp_path: Path) -> None:
    from encoders.loading import load_recommender
    from recsys.config import DiversifyConfig

    model = tmp_path / "shop"
    source = shutil.copytree(frozen_bundle, model / "v1")
    before = load_recommender(source)
    item = str(before.catalogue.state.ids[0])
    plain = before.similar_items(item, 50, diversify=False).item_ids
    to_page = (_unit(before, plain) @ _unit(before, [item]).T)[:, 0]
    threshold = round(float(np.sort(to_page)[-6]), 4)  # the page's 5 or 6 nearest items are its near-duplicates
    out = model / "v2"
    result = _run("diversify", "--bundle", model, "--weight", "0", "--duplicate-threshold", threshold, "--out", out)
    assert result.exit_code == 0, result.output
    assert "diversification (MMR weight 0.3, near-duplicates off, depth 50) → (MMR weight 0, near-duplicates " \
           f"{threshold:g}, depth 50)" in result.flat
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["diversify"] == {"weight": 0.0, "duplicate_threshold": threshold, "depth": 50}
    assert manifest["diversify"]["parent_bundle"] == str(source)
    after = load_recommender(out)
    assert after.config.diversify == DiversifyConfig(weight=0.0, duplicate_threshold=threshold)
    shown = after.similar_items(item, 10).item_ids
    cosines = _unit(after, [item, *shown]) @ _unit(after, [item, *shown]).T  # the page's own item counts as shown
    close = [bool((cosines[i, :i] >= threshold).any()) for i in range(1, len(shown) + 1)]
    assert (to_page[:5] >= threshold).all() and not any(close[:5]), close  # the plain list's first five were the
    # page's near-duplicates; they went behind the others
    assert np.array_equal(before.catalogue.state.vectors, after.catalogue.state.vectors)


def test_bad_settings_are_refused_before_any_work(frozen_bundle: Path, tmp_path: Path) -> None:
    result = _run("diversify", "--bundle", frozen_bundle)
    assert result.exit_code == 2 and "give the setting to change: --weight, --duplicate-threshold or --depth" \
        in result.flat
    result = _run("diversify", "--bundle", frozen_bundle, "--duplicate-threshold", "1.5")
    assert result.exit_code == 2 and "--duplicate-threshold" in result.flat
    assert "'1.5': expected a cosine in (0, 1], or none" in result.flat
    result = _run("diversify", "--bundle", frozen_bundle, "--weight", "2")
    assert result.exit_code == 2 and "--weight" in result.flat
