"""Similar-item pages through a served API during a stream of stock changes or of a catalogue feed. The responses
of `--anchors` random items are cached first (no user, k 10: the path a product page takes); then, one connection,
one request at a time, on the client's clock: (1) `--rounds` × `--queries` of those pages back to back; (2) the same
with a 0.25 s pause before every `--queries` (the control for (3)'s pauses); (3) `--rounds` rounds of one change to
an item that is not an anchor, a 0.25 s pause for the worker to apply it (RECSYS_SYNC_INTERVAL_MS 200), then
`--queries` pages. `--changes stock`: a deactivation, every fourth round a deletion; `--changes feed`: `PUT
/v1/admin/items/{id}` (the text through the item tower), even rounds a new item and odd rounds an existing one
replaced, with a random item's text and a word more.

    RECSYS_ADMIN_TOKEN=T RECSYS_STATE_DIR=$(mktemp -d) recsys serve --bundle <engine> --port 8011 --workers 1 &
    python benchmarks/results/similar-cache-stockouts/similar_api.py --url http://127.0.0.1:8011 --token T --out <dir>
"""

from __future__ import annotations

import random
import httpx

from benchmarks.common import Column, environment, write_report
from benchmarks.phases import LATENCY_COLUMNS, arguments, latency_chart, paced_rows, timed_gets

COLUMNS = [Column("phase"), Column("requests", "requests", ","), *LATENCY_COLUMNS]


def run(url: str, token: str, out: str, anchors: int, rounds: int, queries: int, seed: int,
        changes: str = "stock") -> dict:
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

    def change(j: int) -> None:
        item = others.pop(rng.randrange(len(others)))
        if changes == "feed":
            text = client.get(f"/v1/items/{rng.choice(items)}").json()["text"]
            item = f"feed-{j}" if j % 2 == 0 else item
            response = client.put(f"/v1/admin/items/{item}", json={"text": f"{text} New"}, headers=admin)
        elif j % 4 == 3:
            response = client.delete(f"/v1/admin/items/{item}", headers=admin)
        else:
            response = client.post(f"/v1/admin/items/{item}/deactivate", headers=admin)
        response.raise_for_status()

    label = "one upsert" if changes == "feed" else "one stock change"
    rows, load = paced_rows(ask, change, label, rounds, queries)
    meta = {"environment": environment(("numpy", "httpx")), "url": url, "anchors": anchors, "rounds": rounds,
            "queries": queries, "seed": seed, "changes": changes, "load_average": load}
    notes = [f"{anchors} random items' similar-item responses cached first (GET /v1/items/{{id}}/similar, no user, "
             "k 10); one connection, one request at a time, latency on the client's clock",
             f"load average (1, 5, 15 min) at the start / end: {meta['load_average']}"]
    what = "a catalogue feed" if changes == "feed" else "a stream of stock changes"
    return write_report(out, "similar_api", rows, COLUMNS, title=f"Similar-item pages during {what}",
                        meta=meta, notes=notes,
                        chart=latency_chart("ms per request (client)"))


def main() -> None:
    args = arguments(__doc__, {"url": (str, None), "token": (str, None), "anchors": (int, 500), "rounds": (int, 100),
                               "queries": (int, 20), "seed": (int, 0), "changes": (str, "stock", ["feed", "stock"])})
    print(run(args.url, args.token, args.out, args.anchors, args.rounds, args.queries, args.seed, args.changes))


if __name__ == "__main__":
    main()
