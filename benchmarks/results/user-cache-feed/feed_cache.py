"""Known users' queries during a catalogue feed: how many find their query vector in the cache, and what a query
costs. In process, one thread, the engine as `recsys bench engine` loads it, its user tower wrapped in the query
vector cache as the API wraps it. After the cache is warmed with `--users` known users, each of `--rounds` rounds
upserts one item (even rounds a new item, odd rounds an existing one replaced, a random item's vector either way:
what a product feed sends) and then asks for `--queries` of those users' lists, one query at a time.

    python benchmarks/results/user-cache-feed/feed_cache.py --bundle <engine> --out <dir>
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Column, environment, write_report
from benchmarks.engine import one_thread

COLUMNS = [Column("phase"), Column("queries", "queries", ","), Column("hit_rate", "cache hit rate", ".3f"),
           Column("p50_ms", "p50 ms", ".2f"), Column("mean_ms", "mean ms", ".2f"), Column("p99_ms", "p99 ms", ".2f")]


def _row(phase: str, ms: list[float], hits: int, misses: int) -> dict:
    return {"phase": phase, "queries": len(ms), "hit_rate": hits / max(hits + misses, 1),
            "p50_ms": float(np.percentile(ms, 50)), "mean_ms": float(np.mean(ms)),
            "p99_ms": float(np.percentile(ms, 99))}


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
                        meta=meta, notes=notes, chart=_chart)


def _chart(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar([r["phase"] for r in rows], [r["mean_ms"] for r in rows], color=["#4c72b0", "#dd8452"])
    for x, r in enumerate(rows):
        ax.text(x, r["mean_ms"], f"hit rate {r['hit_rate']:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("mean ms per known-user query")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(run(args.bundle, args.out, args.users, args.rounds, args.queries, args.seed))


if __name__ == "__main__":
    main()
