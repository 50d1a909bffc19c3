"""Known users' queries during a catalogue feed: how many find their query vector in the cache, and what a query
costs. In process, one thread, the engine as `recsys bench engine` loads it, its user tower wrapped in the query
vector cache as the API wraps it. After the cache is warmed with `--users` known users, each of `--rounds` rounds
upserts one item (even rounds a new item, odd rounds an existing one replaced, a random item's vector either way:
what a product feed sends) and then asks for `--queries` of those users' lists, one query at a time.

    python benchmarks/results/user-cache-feed/feed_cache.py --bundle <engine> --out <dir>
"""

from __future__ import annotations

import os
import random
import time
from benchmarks.common import Column, environment, write_report
from benchmarks.engine import one_thread
from benchmarks.phases import LATENCY_COLUMNS, arguments, hit_rate, latency_chart, phase_row

COLUMNS = [Column("phase"), Column("requests", "queries", ","), Column("hit_rate", "cache hit rate", ".3f"),
           *LATENCY_COLUMNS]


def _row(phase: str, ms: list[float], hits: int, misses: int) -> dict:
    return phase_row(phase, ms, hit_rate=hit_rate(hits, misses))


def run(bundle: str, out: str, users: int, rounds: int, queries: int, seed: int) -> dict:
    from encoders.loading import load_recommender
    from recsys.artifacts import resolve_bundle
    from recsys.query import Query
    from recsys.user_tower import CachedHistoryEncoder

    one_thread()
    recommender = load_recommender(resolve_bundle(bundle))
    tower = recommender.user_tower = CachedHistoryEncoder(recommender.user_tower, maxsize=1_000_000)
    rng = random.Random(seed)
    known = rng.sample(sorted(u for u, h in recommender.histories.items() if h), users)
    histories = {u: list(recommender.histories[u][-50:]) for u in known}
    tower.warm(list(histories.values()))
    catalogue = recommender.catalogue

    def ask(count: int) -> tuple[list[float], int, int]:
        hits, misses, ms = tower.hits, tower.misses, []
        for user in rng.choices(known, k=count):
            started = time.perf_counter()
            recommender.recommend(Query(history=histories[user], k=10))
            ms.append((time.perf_counter() - started) * 1e3)
        return ms, tower.hits - hits, tower.misses - misses

    rows = [_row("no edits", *ask(rounds * queries))]
    load_before = os.getloadavg()
    ms, hits, misses = [], 0, 0
    item_ids = list(catalogue.state.live_ids)
    for j in range(rounds):
        state = catalogue.state
        source = rng.choice(item_ids)
        item_id = f"feed-{j}" if j % 2 == 0 else rng.choice(item_ids)
        catalogue.upsert([{"item_id": item_id, "text": f"feed item {j}"}], state.vectors[[state.position[source]]])
        round_ms, round_hits, round_misses = ask(queries)
        ms += round_ms
        hits += round_hits
        misses += round_misses
    rows.append(_row("one upsert before every " + str(queries) + " queries", ms, hits, misses))
    meta = {"environment": environment(("numpy", "polars", "lightgbm", "faiss-cpu", "torch")), "bundle": str(bundle),
            "users": users, "rounds": rounds, "queries": queries, "seed": seed,
            "load_average": [list(load_before), list(os.getloadavg())]}
    notes = [f"bundle {bundle}; {users:,} known users' query vectors cached first (their last 50 items), then "
             f"{rounds} rounds of one upsert (new and replaced items in turn) + {queries} known-user queries "
             "(re-ranked, k 10, one at a time, one thread)",
             f"load average (1, 5, 15 min) before / after the feed: {meta['load_average']}"]
    return write_report(out, "feed_cache", rows, COLUMNS, title="Known users' queries during a catalogue feed",
                        meta=meta, notes=notes,
                        chart=latency_chart("ms per known-user query", "hit_rate"))


def main() -> None:
    args = arguments(__doc__, {"bundle": (str, None), "users": (int, 2000), "rounds": (int, 100),
                               "queries": (int, 20), "seed": (int, 0)})
    print(run(args.bundle, args.out, args.users, args.rounds, args.queries, args.seed))


if __name__ == "__main__":
    main()
