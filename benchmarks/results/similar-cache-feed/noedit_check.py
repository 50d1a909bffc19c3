"""The no-edits check: p50 / mean of 2 × 3,000 GETs of 500 cached similar-item pages against a running server (started
as in `similar_api.py`, RECSYS_ADMIN_TOKEN=T, port 8011). Usage: python noedit_check.py <label>"""

from __future__ import annotations

import random
import statistics
import sys
import time

import httpx


def main(label: str) -> None:
    client = httpx.Client(base_url="http://127.0.0.1:8011", timeout=30)
    items = client.get("/v1/admin/items", headers={"Authorization": "Bearer T"}).json()["active"]
    rng = random.Random(0)
    chosen = rng.sample(items, 500)
    for anchor in chosen:  # their responses cached
        client.get(f"/v1/items/{anchor}/similar").raise_for_status()
    for _ in range(2):
        ms = []
        for anchor in rng.choices(chosen, k=3000):
            started = time.perf_counter()
            client.get(f"/v1/items/{anchor}/similar").raise_for_status()
            ms.append((time.perf_counter() - started) * 1e3)
        print(label, "p50", round(statistics.median(ms), 3), "mean", round(statistics.mean(ms), 3))


if __name__ == "__main__":
    main(sys.argv[1])
