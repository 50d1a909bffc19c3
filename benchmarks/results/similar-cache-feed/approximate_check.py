"""With an approximate index (IVF-PQ, HNSW), what similar-item lists kept up to date through a feed hold, against
the exact top 10 and against a fresh search of the index: 1,000 random items' lists cached (in process, no
diversification), then 200 upserts (a random item's vector plus a little noise, half of them new ids, half
replacing an item), then for every cached item its list from the cache, from a fresh search of the same index, and
the exact top 10 over the active items (brute force over the catalogue's vectors, normalised as the index
normalises them). The cache searches `NeighbourCache.depth` neighbours, so a fresh search of that depth is the
like-for-like comparison; past the change log's reach (its last 256 changes) a list is searched again.

    python benchmarks/results/similar-cache-feed/approximate_check.py --bundle <bundle> [--upserts 200]
"""

from __future__ import annotations

import argparse
import random

import numpy as np


def main(bundle: str, upserts: int, anchors: int, seed: int) -> None:
    from encoders.loading import load_recommender

    recommender = load_recommender(bundle)
    catalogue = recommender.catalogue
    print(f"index: {type(recommender.index.index).__name__}, {len(catalogue.state.position):,} items")
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    ids = list(catalogue.state.position)
    chosen = rng.sample(ids, anchors)
    for anchor in chosen:
        recommender.similar_items(anchor, 10, diversify=False)
    noise = 0.05
    for j in range(upserts):
        source = rng.choice(ids)
        vector = recommender.item_vectors[recommender.item_position[source]]
        vector = vector + noise * np.linalg.norm(vector) / np.sqrt(len(vector)) * np_rng.normal(size=len(vector))
        item = f"feed-{j}" if j % 2 == 0 else rng.choice([i for i in ids if i not in chosen])
        catalogue.upsert([{"item_id": item, "text": f"feed item {j}"}], vector[None, :].astype(np.float32))
    hits, misses, updated = recommender.neighbours.hits, recommender.neighbours.misses, recommender.neighbours.updated
    state = catalogue.state
    unit = state.vectors / np.linalg.norm(state.vectors, axis=1, keepdims=True)
    active = state.flags == 0
    cached_recall, fresh_recall, deep_recall, agree, with_feed_cached, with_feed_fresh = [], [], [], [], 0, 0
    depth = recommender.neighbours.depth
    for anchor in chosen:
        query = recommender.item_vectors[recommender.item_position[anchor]]
        cached = recommender.similar_items(anchor, 10, diversify=False).item_ids
        fresh = recommender.search_vectors(query[None, :], 10, [{anchor}])[0][0]
        deep = recommender.search_vectors(query[None, :], depth, [{anchor}])[0][0][:10]
        scores = np.where(active, unit @ query, -np.inf)
        scores[state.position[anchor]] = -np.inf
        exact = set(state.ids[np.argpartition(-scores, 10)[:10]].tolist())
        cached_recall.append(len(exact & set(cached)) / 10)
        fresh_recall.append(len(exact & set(fresh)) / 10)
        deep_recall.append(len(exact & set(deep)) / 10)
        agree.append(len(set(cached) & set(fresh)) / 10)
        with_feed_cached += any(i.startswith("feed-") for i in cached)
        with_feed_fresh += any(i.startswith("feed-") for i in fresh)
    cache = recommender.neighbours
    new = upserts // 2 + upserts % 2
    print(f"{anchors:,} cached lists, {upserts} upserts ({new} new ids, the rest replacing items)")
    print(f"reads after the feed: {cache.hits - hits} from the cache ({cache.updated - updated} lists changed in "
          f"place), {cache.misses - misses} searched again")
    print(f"recall@10 against the exact top 10: cached lists {np.mean(cached_recall):.4f}; a fresh search of the "
          f"index for 10 {np.mean(fresh_recall):.4f}, for the cache's depth ({depth}), its first 10 "
          f"{np.mean(deep_recall):.4f}")
    print(f"overlap of the cached list and the fresh search: {np.mean(agree):.4f}")
    print(f"lists holding a fed item: cached {with_feed_cached}, fresh search {with_feed_fresh}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--upserts", type=int, default=200)
    parser.add_argument("--anchors", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.bundle, args.upserts, args.anchors, args.seed)
