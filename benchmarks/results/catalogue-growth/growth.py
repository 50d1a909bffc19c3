"""Single-row upserts into a catalogue of N 384-d vectors (read with room, as a bundle loads them): how often the
vectors move to a larger buffer, the total and the worst upsert times. No index attached: the catalogue's own
storage only.

    python benchmarks/results/catalogue-growth/growth.py 100000 100000
"""

import sys
import time

import numpy as np
import polars as pl

from recsys.append_only import AppendOnly
from recsys.catalogue import Catalogue

n, adds = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
vectors = AppendOnly.with_room(rng.normal(size=(n, 384)).astype(np.float32))
catalogue = Catalogue(pl.DataFrame({"item_id": [f"i{j}" for j in range(n)], "text": ["t"] * n}), vectors)
new = rng.normal(size=(adds, 384)).astype(np.float32)
moves, times, last = 0, [], catalogue.state.vectors.ctypes.data
for j in range(adds):
    started = time.perf_counter()
    catalogue.upsert([{"item_id": f"new{j}", "text": "t"}], new[j:j + 1])
    times.append(time.perf_counter() - started)
    moves += catalogue.state.vectors.ctypes.data != last
    last = catalogue.state.vectors.ctypes.data
assert np.array_equal(catalogue.state.vectors[n:], new)
times = np.array(times) * 1e3
print(f"{n} rows + {adds} single-row upserts: {moves} buffer moves, total {times.sum():.0f} ms, "
      f"p50 {np.median(times):.2f} ms, worst {times.max():.0f} ms, "
      f"sum of the 10 worst {np.sort(times)[-10:].sum():.0f} ms")
