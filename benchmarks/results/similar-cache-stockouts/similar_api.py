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

import os
import random
import httpx

from benchmarks.common import Column, environment, write_report
from benchmarks.phases import LATENCY_COLUMNS, arguments, latency_chart, paced_phases, phase_row, timed_gets

COLUMNS = [Column("phase"), Column("requests", "requests", ","), *LATENCY_COLUMNS]


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
        return timed_gets(client, (f"/v1/items/{anchor}/similar" for anchor in rng.choices(chosen, k=count)))

    def stock_change(j: int) -> None:
        item = others.pop(rng.randrange(len(others)))
        response = client.delete(f"/v1/admin/items/{item}", headers=admin) if j % 4 == 3 else \
            client.post(f"/v1/admin/items/{item}/deactivate", headers=admin)
        response.raise_for_status()

    load = [os.getloadavg()]
    phases = paced_phases(ask, stock_change, "one stock change", rounds, queries)
    load.append(os.getloadavg())
    rows = [phase_row(name, ms) for name, ms in phases.items()]
    meta = {"environment": environment(("numpy", "httpx")), "url": url, "anchors": anchors, "rounds": rounds,
            "queries": queries, "seed": seed, "load_average": [list(v) for v in load]}
    notes = [f"{anchors} random items' similar-item responses cached first (GET /v1/items/{{id}}/similar, no user, "
             "k 10); one connection, one request at a time, latency on the client's clock",
             f"load average (1, 5, 15 min) at the start / end: {meta['load_average']}"]
    return write_report(out, "similar_api", rows, COLUMNS, title="Similar-item pages during a stream of stock changes",
                        meta=meta, notes=notes,
                        chart=latency_chart("ms per request (client)"))


def main() -> None:
    args = arguments(__doc__, {"url": (str, None), "token": (str, None), "anchors": (int, 500), "rounds": (int, 100),
                               "queries": (int, 20), "seed": (int, 0)})
    print(run(args.url, args.token, args.out, args.anchors, args.rounds, args.queries, args.seed))


if __name__ == "__main__":
    main()
