"""How many cached product pages a fed item really enters, against how many the page cache counts as changed:
500 random items' pages cached (in process, the API app), then four new items upserted through `PUT
/v1/admin/items/{id}` (a random item's text + " New"); after each, how many cached pages are still valid
(`fresh_body`), and at the end, of how many of the 500 items each new item is among the top 50 neighbours.

    python benchmarks/results/similar-cache-feed/entered_check.py --bundle <engine>
"""

from __future__ import annotations

import argparse
import random
import tempfile


def main(bundle: str) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.cached_similar import fresh_body, similar_key
    from api.settings import Settings

    settings = Settings(admin_token="T", state_dir=tempfile.mkdtemp())
    with TestClient(create_app(bundle, settings=settings)) as client:
        admin = {"Authorization": "Bearer T"}
        items = client.get("/v1/admin/items", headers=admin).json()["active"]
        rng = random.Random(0)
        chosen = rng.sample(items, 500)
        for anchor in chosen:
            client.get(f"/v1/items/{anchor}/similar").raise_for_status()
        loaded = client.app.state.service.current
        neighbours = loaded.recommender.neighbours
        for j in range(4):
            text = client.get(f"/v1/items/{rng.choice(items)}").json()["text"]
            client.put(f"/v1/admin/items/feed-{j}", json={"text": text + " New"}, headers=admin).raise_for_status()
            state = neighbours.catalogue.state
            valid = sum(fresh_body(loaded.similar_responses, similar_key(a, 10, []), neighbours, state) is not None
                        for a in chosen)
            print(f"after feed-{j}: {valid} of 500 cached pages still valid")
        for j in range(4):
            entered = sum(f"feed-{j}" in loaded.recommender.neighbour_lists([a])[0][0][:50] for a in chosen)
            print(f"feed-{j} is among the top 50 of {entered} of the 500 items")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    main(parser.parse_args().bundle)
