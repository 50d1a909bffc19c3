"""Known users' recommendations through a served API during a catalogue feed. `--users` known users' lists are
asked for first (their query vectors cached, as the API also does at load); then, one connection, one request at a
time, on the client's clock: (1) `--rounds` × `--queries` of those users' lists back to back; (2) the same with a
0.25 s pause before every `--queries` (the control for (3)'s pauses); (3) `--rounds` rounds of one new item upserted
(`PUT /v1/admin/items/{id}`, its text through the item tower), a 0.25 s pause for the worker to apply it, then
`--queries` lists.

    RECSYS_ADMIN_TOKEN=T RECSYS_STATE_DIR=$(mktemp -d) recsys serve --bundle <engine> --port 8011 --workers 1 &
    python benchmarks/results/user-cache-feed/users_api.py --bundle <engine> --url http://127.0.0.1:8011 --token T \\
        --out <dir>
"""

from __future__ import annotations

import random
import time

import httpx

from benchmarks.common import Column, environment, write_report
from benchmarks.phases import LATENCY_COLUMNS, PAUSE_S, arguments, latency_chart, paced_rows, timed_gets

COLUMNS = [Column("phase"), Column("requests", "requests", ","), *LATENCY_COLUMNS]


def known_users(bundle: str, count: int, rng: random.Random) -> list[str]:
    from encoders.loading import load_recommender
    from recsys.artifacts import resolve_bundle

    histories = load_recommender(resolve_bundle(bundle)).histories
    return rng.sample(sorted(u for u, h in histories.items() if h), count)


def run(bundle: str, url: str, token: str, out: str, users: int, rounds: int, queries: int, seed: int) -> dict:
    rng = random.Random(seed)
    chosen = known_users(bundle, users, rng)
    client = httpx.Client(base_url=url, timeout=60)
    admin = {"Authorization": f"Bearer {token}"}
    for user in chosen:  # their query vectors cached (most already were, at load)
        client.get(f"/v1/users/{user}/recommendations").raise_for_status()
    client.put("/v1/admin/items/feed-warm-up", json={"item_id": "feed-warm-up", "text": "warm-up item"},
               headers=admin).raise_for_status()  # the item tower loaded before anything is timed
    time.sleep(PAUSE_S)

    def ask(count: int) -> list[float]:
        return timed_gets(client, (f"/v1/users/{user}/recommendations" for user in rng.choices(chosen, k=count)))

    def new_item(j: int) -> None:
        item = f"feed-{seed}-{j}"
        client.put(f"/v1/admin/items/{item}", json={"item_id": item, "text": f"new product {j} for the feed"},
                   headers=admin).raise_for_status()

    rows, load = paced_rows(ask, new_item, "one new item", rounds, queries)
    meta = {"environment": environment(("numpy", "httpx")), "bundle": bundle, "url": url, "users": users,
            "rounds": rounds, "queries": queries, "seed": seed, "load_average": load}
    notes = [f"{users} known users (GET /v1/users/{{id}}/recommendations, k 10, re-ranked when the bundle has a "
             "re-ranker); one connection, one request at a time, latency on the client's clock",
             f"load average (1, 5, 15 min) at the start / end: {meta['load_average']}"]
    return write_report(out, "users_api", rows, COLUMNS, title="Known users' lists during a catalogue feed",
                        meta=meta, notes=notes, chart=latency_chart("ms per request (client)"))


def main() -> None:
    args = arguments(__doc__, {"bundle": (str, None), "url": (str, None), "token": (str, None), "users": (int, 500),
                               "rounds": (int, 100), "queries": (int, 20), "seed": (int, 0)})
    print(run(args.bundle, args.url, args.token, args.out, args.users, args.rounds, args.queries, args.seed))


if __name__ == "__main__":
    main()
