"""Reload frees the old bundle: no reference cycle keeps it (or its micro-batcher thread) alive, so it goes as soon
as its last request is done, without waiting for a full garbage collection; 20 reloads keep a worker's RSS within
10 % of what it was after one."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import api.service
from api.service import Service
from api.settings import Settings
from recsys.config import BuildConfig
from recsys.pipeline import Recommender
from recsys.popularity import Popularity
from recsys.query import Query
from tests.test_api_ranker import FixedTextEncoder


def rss_mb() -> float:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024


def parts_of(loaded) -> dict:
    """Weak references to a loaded bundle and everything it owns that must go with it."""
    recommender = loaded.recommender
    parts = {"loaded": loaded, "recommender": recommender, "catalogue": recommender.catalogue,
             "index": recommender.index, "user tower": recommender.user_tower, "neighbours": recommender.neighbours,
             "state": recommender.catalogue.state}
    inner = getattr(recommender.user_tower, "tower", None)
    if inner is not None:
        parts["inner tower"] = inner
    return {name: weakref.ref(obj) for name, obj in parts.items()}


def alive(parts: dict) -> list[str]:
    out = []
    for name, ref in parts.items():
        obj = ref()
        if obj is not None:
            holders = [type(r).__name__ for r in gc.get_referrers(obj) if r is not parts]
            out.append(f"{name} (held by {holders[:6]})")
    return out


@pytest.mark.parametrize("kind", ["frozen", "trained"])
def test_a_replaced_bundle_is_freed_by_reference_counting_alone(kind, frozen_bundle, trained_bundle, tmp_path,
                                                                monkeypatch):
    bundle = frozen_bundle if kind == "frozen" else trained_bundle
    service = Service(Settings(state_dir=tmp_path / "state", warm_similar_items=20))
    monkeypatch.setattr(api.service, "release_memory", lambda: None)  # no collector pass after the swap
    try:
        first = service.load(bundle)
        history = next(iter(first.recommender.histories.values()))
        first.recommender.recommend(Query(history, k=3))
        first.recommender.recommend(Query(text="a black camera", k=3))  # loads the item tower too
        micro = [t for t in threading.enumerate() if t.name == "micro-batcher"]
        parts = parts_of(first)
        del first
        gc.collect()
        gc.disable()  # from here on only reference counting frees anything
        service.load(bundle)
        assert not alive(parts), alive(parts)
        if kind == "trained":
            assert micro and not any(t.is_alive() for t in micro)  # the old micro-batcher's thread has ended
    finally:
        gc.enable()
        service.close()


def big_bundle(root: Path, n_items: int = 20_000, dim: int = 32) -> Path:
    rng = np.random.default_rng(0)
    ids = [f"P{i:06d}" for i in range(n_items)]
    items = pl.DataFrame({"item_id": ids, "text": [f"product {i}" for i in ids], "category": [f"c{i % 40}" for i in
                                                                                             range(n_items)]})
    histories = {f"U{u:05d}": [ids[j] for j in rng.integers(0, n_items, 8)] for u in range(3000)}
    vectors = rng.normal(size=(n_items, dim)).astype(np.float32)
    recommender = Recommender.from_parts(BuildConfig(), items, vectors, Popularity(ids, rng.integers(0, 50, n_items)),
                                         histories)
    return recommender.save(root / "big" / "v1")


def twenty_reloads(root: Path) -> list[float]:
    """RSS (MB) after each of 21 loads of one big bundle, each followed by a user, a text and a similar-items
    query, with the loaded objects frozen out of the collector as the app does after its first load."""
    bundle = big_bundle(root)
    service = Service(Settings(state_dir=root / "state", warm_similar_items=500, warm_user_cache=1000),
                      item_encoder_loader=lambda recommender: FixedTextEncoder(recommender.index.dim))
    gc.collect()
    gc.freeze()  # as the app does after its first load: the collector never visits these objects again
    try:
        rss = []
        for _ in range(21):
            loaded = service.load(bundle)
            user = next(iter(loaded.recommender.histories))
            loaded.recommender.recommend(Query(loaded.recommender.histories[user], k=10))
            loaded.recommender.recommend(Query(text="a free-text query", k=10))
            loaded.recommender.similar_items(loaded.recommender.item_ids[0], 10)
            del loaded
            rss.append(rss_mb())
        return rss
    finally:
        service.close()


def test_twenty_reloads_keep_the_rss_within_ten_percent_of_one(tmp_path):
    # in a process of its own, as a worker is: this one's heap (every test's imports and leftovers) is not what a
    # worker holds, and each reload's full collection pass (api.service.release_memory) would walk all of it
    code = ("import json, sys; from pathlib import Path; from tests.test_reload_memory import twenty_reloads; "
            "print(json.dumps(twenty_reloads(Path(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    growth = rss[-1] / rss[1]
    assert len(rss) == 21 and growth < 1.10, (f"RSS after reload 1: {rss[1]:.0f} MB, after reload 20: "
                                              f"{rss[-1]:.0f} MB ({rss})")
