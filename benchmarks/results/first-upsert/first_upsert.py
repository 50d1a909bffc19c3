"""The first product page after a catalogue's first upsert. In process, one thread, the bundle as `recsys bench
engine` loads it: `--anchors` random items' similar-item lists are cached and read once (k 10, diversified as
shown), then read again (timed), then one new item is upserted (a random item's vector; timed), then the same
anchors are read again: the first read after the upsert and the rest. That upsert moves the catalogue's vectors to
a larger buffer (a copy of every vector), and a bundle without a re-ranker's per-item arrays used to normalise every
item vector again for the diversification in the next read.

    python benchmarks/results/first-upsert/first_upsert.py --bundle <bundle> --out <dir>
"""

from __future__ import annotations

import os
import random
import time

from benchmarks.common import Column, environment, write_report
from benchmarks.engine import one_thread
from benchmarks.phases import LATENCY_COLUMNS, arguments, latency_chart, phase_row

COLUMNS = [Column("phase"), Column("requests", "operations", ","), *LATENCY_COLUMNS]


def run(bundle: str, out: str, anchors: int, seed: int) -> dict:
    from encoders.loading import load_recommender
    from recsys.artifacts import resolve_bundle

    one_thread()
    recommender = load_recommender(resolve_bundle(bundle))
    catalogue = recommender.catalogue
    rng = random.Random(seed)
    items = list(catalogue.state.live_ids)
    chosen = rng.sample(items, anchors)

    def read(anchor_ids) -> list[float]:
        ms = []
        for anchor in anchor_ids:
            started = time.perf_counter()
            recommender.similar_items(anchor, 10)
            ms.append((time.perf_counter() - started) * 1e3)
        return ms

    read(chosen)  # lists cached, unit vectors computed
    load = [os.getloadavg()]
    before = read(chosen)
    state = catalogue.state
    started = time.perf_counter()
    catalogue.upsert([{"item_id": "first-upsert", "text": "a new item"}],
                     state.vectors[[state.position[rng.choice(items)]]])
    upsert = [(time.perf_counter() - started) * 1e3]
    after = read(chosen)
    load.append(os.getloadavg())
    rows = [phase_row("reads before the upsert", before), phase_row("the first upsert", upsert),
            phase_row("the first read after it", after[:1]), phase_row("the reads after that", after[1:])]
    meta = {"environment": environment(("numpy", "faiss-cpu", "torch")), "bundle": str(bundle), "anchors": anchors,
            "seed": seed, "items": len(items), "dim": int(state.vectors.shape[1]),
            "load_average": [list(v) for v in load]}
    notes = [f"bundle {bundle} ({len(items):,} items, {meta['dim']}-d); {anchors} random items' similar-item lists "
             "cached and read once, then read again, one upsert, and read again (k 10, diversified as shown, one "
             "thread)", f"load average (1, 5, 15 min) at the start / end: {meta['load_average']}"]
    return write_report(out, "first_upsert", rows, COLUMNS, title="The first product page after the first upsert",
                        meta=meta, notes=notes, chart=latency_chart("ms per operation"))


def main() -> None:
    args = arguments(__doc__, {"bundle": (str, None), "anchors": (int, 20), "seed": (int, 0)})
    print(run(args.bundle, args.out, args.anchors, args.seed))


if __name__ == "__main__":
    main()
