"""Similar-item lists during a stream of stock changes or of a catalogue feed: how many come from the neighbour
cache, and what one costs. In process, one thread, the engine as `recsys bench engine` loads it. The neighbour lists
of `--anchors` random items are computed first; then each of `--rounds` rounds makes one change to an item that is
not an anchor and asks for `--queries` of those anchors' lists (k 10, diversified as shown). `--changes stock`: a
deactivation (a stock-out), every fourth round a deletion; `--changes feed`: an upsert, even rounds a new item and
odd rounds an existing one replaced, a random item's vector either way (what a product feed sends).

    python benchmarks/results/similar-cache-stockouts/similar_stockouts.py --bundle <engine> --out <dir>
    python benchmarks/results/similar-cache-stockouts/similar_stockouts.py --bundle <engine> --changes feed --out <dir>
"""

from __future__ import annotations

import os
import random
import time
from benchmarks.common import Column, environment, write_report
from benchmarks.engine import one_thread
from benchmarks.phases import LATENCY_COLUMNS, arguments, hit_rate, latency_chart, phase_row

COLUMNS = [Column("phase"), Column("requests", "queries", ","),
           Column("hit_rate", "neighbour cache hit rate", ".3f"), *LATENCY_COLUMNS]


def _row(phase: str, ms: list[float], hits: int, misses: int) -> dict:
    return phase_row(phase, ms, hit_rate=hit_rate(hits, misses))


CHANGES = {"stock": "one stock change (a deactivation; every fourth a deletion)",
           "feed": "one upsert (new and replaced items in turn, a random item's vector)"}


def run(bundle: str, out: str, anchors: int, rounds: int, queries: int, seed: int, changes: str = "stock") -> dict:
    from encoders.loading import load_recommender
    from recsys.artifacts import resolve_bundle

    one_thread()
    recommender = load_recommender(resolve_bundle(bundle))
    rng = random.Random(seed)
    items = list(recommender.catalogue.state.live_ids)
    chosen = rng.sample(items, anchors)
    cache = recommender.neighbours
    cache.fill(chosen, recommender.neighbour_lists)
    others = sorted(set(items) - set(chosen))  # stock changes hit items that are not anchors

    def ask(count: int) -> tuple[list[float], int, int]:
        hits, misses, ms = cache.hits, cache.misses, []
        for anchor in rng.choices(chosen, k=count):
            started = time.perf_counter()
            recommender.similar_items(anchor, 10)
            ms.append((time.perf_counter() - started) * 1e3)
        return ms, cache.hits - hits, cache.misses - misses

    rows = [_row("no edits", *ask(rounds * queries))]
    load_before = os.getloadavg()
    ms, hits, misses = [], 0, 0
    catalogue = recommender.catalogue
    for j in range(rounds):
        item = others.pop(rng.randrange(len(others)))
        if changes == "feed":
            state = catalogue.state
            source = state.vectors[[state.position[rng.choice(items)]]]
            catalogue.upsert([{"item_id": f"feed-{j}" if j % 2 == 0 else item, "text": f"feed item {j}"}], source)
        elif j % 4 == 3:
            catalogue.remove([item])
        else:
            catalogue.set_active([item], False)
        round_ms, round_hits, round_misses = ask(queries)
        ms += round_ms
        hits += round_hits
        misses += round_misses
    rows.append(_row(f"{CHANGES[changes].split(' (')[0]} before every {queries} queries", ms, hits, misses))
    meta = {"environment": environment(("numpy", "polars", "lightgbm", "faiss-cpu", "torch")), "bundle": str(bundle),
            "anchors": anchors, "rounds": rounds, "queries": queries, "seed": seed, "changes": changes,
            "load_average": [list(load_before), list(os.getloadavg())]}
    notes = [f"bundle {bundle}; the neighbour lists of {anchors:,} random items computed first, then {rounds} rounds "
             f"of {CHANGES[changes]} to an item that is not an anchor + {queries} similar-item queries of "
             "those items (k 10, diversified as shown, one at a time, one thread)",
             f"load average (1, 5, 15 min) before / after the changes: {meta['load_average']}"]
    name, what = ("similar_stockouts", "stock changes") if changes == "stock" else ("similar_feed", "a catalogue feed")
    return write_report(out, name, rows, COLUMNS,
                        title=f"Similar-item lists during {what}", meta=meta, notes=notes,
                        chart=latency_chart("ms per similar-items query", "hit_rate"))


def main() -> None:
    args = arguments(__doc__, {"bundle": (str, None), "anchors": (int, 1000), "rounds": (int, 100),
                               "queries": (int, 20), "seed": (int, 0), "changes": (str, "stock", sorted(CHANGES))})
    print(run(args.bundle, args.out, args.anchors, args.rounds, args.queries, args.seed, args.changes))


if __name__ == "__main__":
    main()
