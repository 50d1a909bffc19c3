"""`Bundle.own_vectors` before stop 59 (items.parquet read on every call) against now (the ids and texts read once
per bundle, kept as hashes): milliseconds per call on a bundle, and a check that both give the same vectors.

    python benchmarks/results/own-texts/own.py <bundle>
"""

import sys
import time

import numpy as np
import polars as pl

from recsys.bundle import Bundle


def before(path, texts):
    """The lookup as it was: a filtered read of items.parquet, then the rows of items.npy."""
    items = (pl.scan_parquet(path / "embeddings" / "items.parquet").select("item_id", "text")
             .with_row_index("row").filter(pl.col("item_id").cast(pl.Utf8).is_in(list(texts))).collect())
    rows = [(row, str(i)) for row, i, t in items.iter_rows() if texts[str(i)] == t]
    vectors = np.load(path / "embeddings" / "items.npy", mmap_mode="r", allow_pickle=False)
    return {i: np.array(vectors[r], dtype=np.float32) for r, i in rows}


def timed(call, *args):
    started = time.perf_counter()
    out = call(*args)
    return out, (time.perf_counter() - started) * 1e3


bundle = Bundle.open(sys.argv[1], verify=False)
saved = pl.read_parquet(bundle.path / "embeddings" / "items.parquet", columns=["item_id", "text"])
picks = np.random.default_rng(0).choice(saved.height, 100, replace=False)
for n in (1, 100):
    texts = {str(saved["item_id"][int(p)]): saved["text"][int(p)] for p in picks[:n]}
    old, _ = timed(before, bundle.path, texts)
    new_times = [timed(bundle.own_vectors, texts)[1] for _ in range(5)]
    new = bundle.own_vectors(texts)
    assert sorted(old) == sorted(new) and all(np.array_equal(old[k], new[k]) for k in old)
    old_times = [timed(before, bundle.path, texts)[1] for _ in range(5)]
    print(f"{saved.height} items, batch of {n} given-back texts: old per call {np.median(old_times):.1f} ms "
          f"(min {min(old_times):.1f}); new first call {new_times[0]:.1f} ms, then {np.median(new_times[1:]):.3f} ms "
          f"median; {len(new)} own vectors, identical")
own = bundle._own_texts
print("hashes held:", own.ids.nbytes + own.texts.nbytes + own.rows.nbytes, "bytes")
