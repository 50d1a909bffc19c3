"""Similar-item pages through a served API during a stream of stock changes. The responses of `--anchors` random
items are cached first (no user, k 10: the path a product page takes); then, one connection, one request at a time,
on the client's clock: (1) `--rounds` × `--queries` of those pages back to back; (2) the same with a 0.25 s pause
before every `--queries` (the control for (3)'s pauses); (3) `--rounds` rounds of one stock change (a deactivation
of an item that is not an anchor; every fourth round a deletion), a 0.25 s pause for the worker to apply it
(RECSYS_SYNC_INTERVAL_MS 200), then `--queries` pages.

    RECSYS_ADMIN_TOKEN=T RECSYS_STATE_DIR=$(mktemp -d) recsys serve --bundle <engine> --port 8011 --workers 1 &
    python benchmarks/results/similar-cache-stockouts/similar_api.py --url http://127.0.0.1:8011 --token T --out <dir>
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import Column, environment, write_report

COLUMNS = [Column("phase"), Column("requests", "requests", ","), Column("p50_ms", "p50 ms", ".2f"),
           Column("mean_ms", "mean ms", ".2f"), Column("p99_ms", "p99 ms", ".2f")]
PAUSE_S = 0.25


def run(url: str, token: str, out: str, anchors: int, rounds: int, queries: int, seed: int) -> dict:
    rng = random.Random(seed)
    client = httpx.Client(base_url=url, timeout=30)
    admin = {"Authorization": f"Bearer {token}"}
    items = client.get("/v1/admin/items", headers=admin).json()["active"]
    chosen = rng.sample(items, anchors)
    others = sorted(set(items) - set(chosen))
    for anchor in chosen:  # their responses cached
        client.get(f"/v1/items/{anchor}/similar").raise_for_status()

    def ask(count: int) -> list[float]:
        ms = []
        for anchor in rng.choices(chosen, k=count):
            started = time.perf_counter()
            client.get(f"/v1/items/{anchor}/similar").raise_for_status()
            ms.append((time.perf_counter() - started) * 1e3)
        return ms

    load = [os.getloadavg()]
    phases = {"no edits": ask(rounds * queries)}
    paused: list[float] = []
    for _ in range(rounds):
        time.sleep(PAUSE_S)
        paused += ask(queries)
    phases[f"no edits, a {PAUSE_S} s pause before every {queries}"] = paused
    changed: list[float] = []
    for j in range(rounds):
        item = others.pop(rng.randrange(len(others)))
        response = client.delete(f"/v1/admin/items/{item}", headers=admin) if j % 4 == 3 else \
            client.post(f"/v1/admin/items/{item}/deactivate", headers=admin)
        response.raise_for_status()
        time.sleep(PAUSE_S)
        changed += ask(queries)
    phases[f"one stock change and a {PAUSE_S} s pause before every {queries}"] = changed
    load.append(os.getloadavg())
    rows = [{"phase": name, "requests": len(ms), "p50_ms": float(np.percentile(ms, 50)),
             "mean_ms": float(np.mean(ms)), "p99_ms": float(np.percentile(ms, 99))} for name, ms in phases.items()]
    meta = {"environment": environment(("numpy", "httpx")), "url": url, "anchors": anchors, "rounds": rounds,
            "queries": queries, "seed": seed, "load_average": [list(v) for v in load]}
    notes = [f"{anchors} random items' similar-item responses cached first (GET /v1/items/{{id}}/similar, no user, "
             "k 10); one connection, one request at a time, latency on the client's clock",
             f"load average (1, 5, 15 min) at the start / end: {meta['load_average']}"]
    return write_report(out, "similar_api", rows, COLUMNS, title="Similar-item pages during a stream of stock changes",
                        meta=meta, notes=notes, chart=_chart)


def _chart(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    names = [r["phase"] for r in rows]
    ax.barh(names, [r["mean_ms"] for r in rows], color="#4c72b0", label="mean")
    ax.scatter([r["p50_ms"] for r in rows], names, color="#dd8452", zorder=3, label="p50")
    ax.set_xlabel("ms per request (client)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--anchors", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(run(args.url, args.token, args.out, args.anchors, args.rounds, args.queries, args.seed))


if __name__ == "__main__":
    main()
