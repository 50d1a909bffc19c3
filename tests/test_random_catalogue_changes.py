"""Seeded random sequences of catalogue changes (new, replaced, out-of-stock, back-in-stock and deleted items,
compactions) between reads of what the catalogue's incremental parts keep: the neighbour cache's lists must stay
what a search returns, the API's cached pages what a server without caches answers, the re-ranker's features what
the same items imported fresh give, an engine's answers to every kind of request, with events arriving, what it
answers without caches, two workers sharing an event store the same catalogue and answers after they sync as a
third one that replays the store from the start, and an engine compacted while edits land what it answers never
compacted.

Lists are compared exactly, near-ties included: a search orders scores equal to 1e-5 by catalogue row and cuts its
k by that same order (`recsys.retrieval.exact.tied`), and the cache scores the items it places one dot product per
item, as the exact search rescores its candidates (`VectorIndex.similarities`). Pages are compared byte for byte."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.service import Service
from api.settings import Settings
from recsys.catalogue import Catalogue
from recsys.config import BuildConfig
from recsys.errors import UnknownIdError
from recsys.features import FeatureBuilder, FeatureConfig
from recsys.pipeline import Recommender
from recsys.splits import split_dataset
from recsys.stats import InteractionStats, StatsConfig
from recsys.towers import ItemTower
from tests.test_batch import ranked_bundle  # noqa: F401  (module fixture: a bundle with a re-ranker)
from tests.test_pipeline import VECTORS

ADMIN = {"Authorization": "Bearer t"}


def random_change(rng: random.Random, ids: list[str], made: int) -> tuple[str, str | None]:
    """(kind, item id) of a random change: 'add' (a new id), 'replace', 'off', 'on', 'delete' or 'compact'."""
    draw = rng.random()
    if draw < 0.3 or len(ids) < 4:
        return "add", f"n{made + 1}"
    for kind, below in (("replace", 0.5), ("off", 0.67), ("on", 0.84), ("delete", 0.95)):
        if draw < below:
            return kind, rng.choice(ids)
    return "compact", None


def random_vector(rng: random.Random, np_rng: np.random.Generator, dim: int, existing: np.ndarray) -> np.ndarray:
    """A random direction and length, or (a third of the time) an existing item's vector at another length: the
    index scores directions, so such twins tie with the item they copy."""
    if rng.random() < 0.3 and len(existing):
        return existing[rng.randrange(len(existing))] * rng.choice([1.0, 0.5, 3.0])
    return np_rng.normal(size=dim).astype(np.float32) * rng.choice([1.0, 0.3, 2.0])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dim", [2, 8])
def test_cached_neighbour_lists_match_a_search_through_random_changes(toy, seed, dim):
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    base = VECTORS
    if dim != 2:
        base = np_rng.normal(size=(6, dim)).astype(np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
    recommender = Recommender.build(toy, split_dataset(toy), base, BuildConfig())
    catalogue, cache = recommender.catalogue, recommender.neighbours
    cache.depth = rng.choice([3, 4, 6])  # shallower than the catalogue soon is: lists fill, shorten, are re-searched
    made, mismatches, kinds = 0, [], set()
    for step in range(70):
        ids = list(catalogue.state.position)
        kind, item = random_change(rng, ids, made)
        kinds.add(kind)
        if kind in ("add", "replace"):
            made += kind == "add"
            vectors = recommender.item_vectors[[recommender.item_position[i] for i in ids]]
            catalogue.upsert([{"item_id": item}], random_vector(rng, np_rng, dim, vectors)[None, :])
        elif kind in ("off", "on"):
            catalogue.set_active([item], kind == "on")
        elif kind == "delete":
            catalogue.remove([item])
        else:
            catalogue.compact()
        ids = list(catalogue.state.position)
        everything = len(ids)
        for anchor in rng.sample(ids, min(len(ids), 6)):
            for _ in range(3):
                k, exclude = rng.randint(1, 7), rng.sample(ids, rng.randint(0, 2))
                got = recommender.similar_items(anchor, k, exclude, diversify=False).item_ids
                vector = recommender.item_vectors[recommender.item_position[anchor]][None, :]
                want = recommender.search_vectors(vector, everything, [set(exclude) | {anchor}])[0][0][:k]
                if got != want:
                    mismatches.append((step, kind, item, anchor, k, exclude, got, want))
    assert mismatches == []
    assert kinds == {"add", "replace", "off", "on", "delete", "compact"}
    assert cache.hits > cache.misses and cache.updated > 0  # lists were served and changed in place, not re-searched


def serving(bundle, state_dir, cache_mb: float, encoder: ItemTower) -> TestClient:
    """A test server of `bundle` whose caches hold `cache_mb` (0: none), upserts encoded by `encoder`, no compaction
    of its own (so two servers taking the same edits hold the same rows)."""
    settings = Settings(state_dir=state_dir, admin_token="t", cache_mb=cache_mb, compact_share=0.0)
    return TestClient(create_app(bundle, service=Service(settings, item_encoder_loader=lambda _: encoder)))


class NumberEncoder(ItemTower):
    """An item text "v x y" encodes as the vector (x, y)."""

    dim = 2

    def encode_texts(self, texts):
        return np.array([[float(x) for x in t.split()[1:3]] for t in texts], dtype=np.float32).reshape(-1, 2)


@pytest.mark.parametrize("seed", range(2))
def test_cached_similar_pages_match_a_server_without_caches_through_random_changes(toy, tmp_path, seed, monkeypatch):
    import api.cached_similar

    served_from_cache = []
    fresh_body = api.cached_similar.fresh_body

    def counted(*args):
        body = fresh_body(*args)
        served_from_cache.append(body is not None)
        return body

    monkeypatch.setattr(api.cached_similar, "fresh_body", counted)  # the middleware's look-up
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    bundle = Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig()).save(tmp_path / "toy" / "v1")

    mismatches, made = [], 0
    ids = list(toy.items["item_id"])
    with serving(bundle, tmp_path / "cached", 64, NumberEncoder()) as cached, \
            serving(bundle, tmp_path / "plain", 0, NumberEncoder()) as plain:
        for step in range(45):
            kind, item = random_change(rng, ids, made)
            made += kind == "add"
            x, y = random_vector(rng, np_rng, 2, VECTORS).tolist()
            for server in (cached, plain):
                if kind == "compact":
                    server.app.state.service.current.recommender.catalogue.compact()
                    continue
                if kind in ("add", "replace"):
                    response = server.put(f"/v1/admin/items/{item}", json={"text": f"v {x} {y}"}, headers=ADMIN)
                elif kind == "delete":
                    response = server.delete(f"/v1/admin/items/{item}", headers=ADMIN)
                else:
                    response = server.post(f"/v1/admin/items/{item}/{'activate' if kind == 'on' else 'deactivate'}",
                                           headers=ADMIN)
                assert response.status_code == 200, response.text
            ids = ids + [item] if kind == "add" else [i for i in ids if kind != "delete" or i != item]
            for anchor in rng.sample(ids, min(len(ids), 5)):
                for _ in range(3):
                    exclude = rng.sample(ids, 1) if rng.random() < 0.3 else []  # few keys: pages are read again
                    params = {"k": rng.choice([2, 5]), "exclude": exclude}
                    got = cached.get(f"/v1/items/{anchor}/similar", params=params)
                    want = plain.get(f"/v1/items/{anchor}/similar", params=params)
                    if (got.status_code, got.content) != (want.status_code, want.content):
                        mismatches.append((step, kind, item, anchor, params, got.text, want.text))
    assert mismatches == []
    assert sum(served_from_cache) > 100  # pages answered from the cache, across the changes


ITEM_SCHEMA = {"item_id": pl.Utf8, "text": pl.Utf8, "category": pl.Utf8, "brand": pl.Utf8, "price": pl.Float64}


@pytest.mark.parametrize("seed", range(4))
def test_an_edited_catalogues_ranker_features_equal_its_items_imported_fresh(seed):
    """Upserted items (new and replaced, with known and new categories and brands, with and without a price) get
    the per-item arrays an imported item gets, and they follow stock changes, deletions and compactions."""
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)

    def record(item_id: str) -> dict:
        return {"item_id": item_id, "text": item_id, "category": rng.choice(["x", "y", None, f"c{rng.randrange(9)}"]),
                "brand": rng.choice(["p", None, f"b{rng.randrange(9)}"]),
                "price": rng.choice([None, round(rng.uniform(1, 100), 2)])}

    first = [f"i{j}" for j in range(8)]
    current = {i: (record(i), np_rng.normal(size=4).astype(np.float32)) for i in first}  # id → (record, vector)
    events = [(f"u{u}", rng.choice(first + ["gone"]), t) for t, u in enumerate(np_rng.integers(0, 6, 60).tolist())]
    train = pl.DataFrame(events, schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Int64},
                         orient="row")
    stats = InteractionStats.fit(train, StatsConfig(time_mode="absolute", recent_window=3, pair_window=2))
    live = Catalogue(pl.DataFrame([r for r, _ in current.values()], schema=ITEM_SCHEMA),
                     np.stack([v for _, v in current.values()]))
    builder = FeatureBuilder(live, stats, FeatureConfig())
    made, kinds, compared = 0, set(), 0
    for _ in range(50):
        ids = list(current)
        kind, item = random_change(rng, ids, made)
        kinds.add(kind)
        if kind in ("add", "replace"):
            made += kind == "add"
            batch = list(dict.fromkeys([item] + rng.sample(ids, rng.randint(0, 2))))  # with replaced ones
            records, vectors = [record(i) for i in batch], np_rng.normal(size=(len(batch), 4)).astype(np.float32)
            live.upsert(records, vectors)
            for one, vector in zip(records, vectors):
                current.pop(one["item_id"], None)
                current[one["item_id"]] = (one, vector)  # an upserted item's row comes last
        elif kind in ("off", "on"):
            live.set_active([item], kind == "on")
        elif kind == "delete":
            live.remove([item])
            del current[item]
        else:
            live.compact()
        fresh = FeatureBuilder.from_frame(pl.DataFrame([r for r, _ in current.values()], schema=ITEM_SCHEMA),
                                          np.stack([v for _, v in current.values()]), stats, FeatureConfig())
        ids = list(current)
        histories = [rng.sample(ids, min(len(ids), rng.randint(0, 4))) for _ in range(4)]
        candidates = [rng.sample(ids, min(len(ids), 5)) for _ in range(4)]
        scores = [[rng.random() for _ in found] for found in candidates]
        as_of = [rng.choice([None, 10, 40, 100]) for _ in range(4)]
        # an attribute no current item has a value of is no feature of the fresh import: compare the others
        common = [name for name in builder.names if name in fresh.names]
        compared += len(common) == len(builder.names)
        ours = builder.matrix(histories, candidates, scores, as_of)[:, [builder.names.index(n) for n in common]]
        theirs = fresh.matrix(histories, candidates, scores, as_of)[:, [fresh.names.index(n) for n in common]]
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    assert kinds == {"add", "replace", "off", "on", "delete", "compact"} and compared > 40


class HashEncoder(ItemTower):
    """An item text encodes as a random 16-d vector seeded by the text (equal texts, equal vectors)."""

    dim = 16

    def encode_texts(self, texts):
        seeds = [int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) for text in texts]
        return np.array([np.random.default_rng(s).normal(size=16) for s in seeds], np.float32).reshape(-1, 16)


@pytest.mark.parametrize("seed", range(3))
def test_an_engines_answers_with_caches_equal_its_answers_without_through_random_events_and_edits(
        ranked_bundle, tmp_path, seed):  # noqa: F811
    """Known and new users' events, upserts (new and replaced items), stock changes and deletions between known-user,
    session, user-similar and similar-item requests to an engine with a re-ranker: the server with its caches (query
    vectors, neighbour lists, pages) answers byte for byte what a server without them answers."""
    bundle, recommender = ranked_bundle
    rng = random.Random(seed)
    users = sorted(recommender.histories)[:30] + [f"new{j}" for j in range(5)]
    ids = list(recommender.catalogue.state.position)
    clock = 1e9  # event times after the bundle's (explicit: both servers must store the same events)

    mismatches, made, requests = [], 0, 0
    with serving(bundle, tmp_path / "cached", 64, HashEncoder()) as cached, \
            serving(bundle, tmp_path / "plain", 0, HashEncoder()) as plain:
        for step in range(60):
            draw, change = rng.random(), None
            if draw < 0.35:
                clock += 1
                change = ("post", "/v1/events", {"user_id": rng.choice(users), "item_id": rng.choice(ids),
                                                 "kind": rng.choice(["view", "cart", "purchase"]), "timestamp": clock})
            elif draw < 0.5:
                new = rng.random() < 0.5
                made += new
                item = f"n{made}" if new else rng.choice(ids)
                ids += [item] if new else []
                change = ("put", f"/v1/admin/items/{item}", {"text": f"text {rng.randrange(40)}"})
            elif draw < 0.6:
                change = ("post", f"/v1/admin/items/{rng.choice(ids)}/{rng.choice(['activate', 'deactivate'])}", None)
            elif draw < 0.65:
                item = rng.choice(ids)
                ids.remove(item)
                change = ("delete", f"/v1/admin/items/{item}", None)
            if change is not None:
                method, path, body = change
                for server in (cached, plain):
                    response = getattr(server, method)(path, headers=ADMIN, **({"json": body} if body else {}))
                    assert response.status_code in (200, 201), (change, response.text)
            for _ in range(4):
                draw, k = rng.random(), rng.choice([3, 5, 10])
                if draw < 0.4:
                    exclude = {"exclude": [rng.choice(ids)]} if rng.random() < 0.3 else {}
                    request = ("get", f"/v1/users/{rng.choice(users)}/recommendations",
                               {"params": {"k": k, **exclude}})
                elif draw < 0.6:
                    request = ("post", "/v1/sessions/recommendations",
                               {"json": {"item_ids": rng.sample(ids, rng.randint(1, 4)), "k": k}})
                elif draw < 0.8:
                    request = ("get", f"/v1/items/{rng.choice(ids)}/similar",
                               {"params": {"k": k, "user_id": rng.choice(users)}})
                else:
                    request = ("get", f"/v1/items/{rng.choice(ids)}/similar", {"params": {"k": k}})
                method, path, options = request
                got, want = getattr(cached, method)(path, **options), getattr(plain, method)(path, **options)
                requests += got.status_code == 200 and b'"reranked":true' in got.content
                if (got.status_code, got.content) != (want.status_code, want.content):
                    mismatches.append((step, change, request, got.text, want.text))
        vectors = cached.app.state.service.current.recommender.user_tower
        assert vectors.hits > 20  # query vectors were served from the cache
    assert mismatches == [] and requests > 100


WORDS = "black mirrorless camera lens red wool hat running shoe blue bag brown silver compact".split()


def served_catalogue(service: Service) -> dict:
    """item id → (active, vector bytes, record) of a worker's serving catalogue."""
    recommender = service.current.recommender
    state = recommender.catalogue.state
    return {item_id: (state.is_active(item_id), recommender.item_vectors[row].tobytes(),
                      sorted((k, str(v)) for k, v in state.record(item_id).items()))
            for item_id, row in state.position.items()}


def served_answers(service: Service, probe: list[str]) -> list[list[str]]:
    """Similar-item lists (diversified and not) of the probed items a worker holds, and a session of the first."""
    recommender = service.current.recommender
    held = [i for i in probe if i in recommender.item_position]
    lists = [recommender.similar_items(i, 5).item_ids for i in held]
    lists += [recommender.similar_items(i, 3, diversify=False).item_ids for i in held]
    return lists + ([recommender.recommend_session(held[:3], 5).item_ids] if held else [])


@pytest.mark.parametrize("seed", range(3))
def test_workers_sharing_a_store_converge_through_random_edits(frozen_bundle, tmp_path, seed):
    """Random upserts (new items, replaced ones, deleted ones back), stock changes, deletions and batches of them,
    each taken by either of two workers over one store whichever of them has synced, with compactions and syncs
    at random: after syncing, both workers hold the same catalogue (flags, vectors, records) and answer alike, and
    so does a third loaded afterwards, which folds the whole store at once. A change naming an item the worker
    cannot find (deleted by the other) is refused, as the API refuses it."""
    rng = random.Random(seed)
    settings = Settings(state_dir=tmp_path / "state", admin_token="t", warm_similar_items=0, compact_share=0.0)
    workers = [Service(settings), Service(settings)]
    for worker in workers:
        worker.load(frozen_bundle)
    ids = list(workers[0].current.recommender.item_position)
    made, refused, compared = 0, 0, 0

    def record() -> dict:
        nonlocal made
        new = rng.random() < 0.6
        made += new
        item_id = f"N{made}" if new else rng.choice(ids)
        ids.extend([item_id] if new else [])
        return {"item_id": item_id, "text": " ".join(rng.sample(WORDS, 3)), "title": f"Title {item_id}",
                "category": rng.choice(["Cameras", "Hats", None]), "price": rng.choice([None, 10.0, 99.5])}

    for _ in range(150):
        worker, draw = rng.choice(workers), rng.random()
        try:
            if draw < 0.3:
                worker.upsert_item(worker.current, record())
            elif draw < 0.5:
                worker.set_item_active(worker.current, rng.choice(ids), rng.random() < 0.5)
            elif draw < 0.6:
                worker.delete_item(worker.current, rng.choice(ids))
            elif draw < 0.75:
                upserts = list({r["item_id"]: r for r in (record() for _ in range(rng.randint(0, 3)))}.values())
                active = {rng.choice(ids): rng.random() < 0.5 for _ in range(rng.randint(0, 3))}
                deleted = list(dict.fromkeys(rng.choice(ids) for _ in range(rng.randint(0, 2))))
                worker.change_items(worker.current, upserts, active, deleted)
            elif draw < 0.8:
                worker.current.recommender.catalogue.compact()
            elif draw < 0.95:
                worker.sync()
            else:
                for each in workers:
                    each.sync()
                probe = rng.sample(ids, 8)
                assert served_catalogue(workers[0]) == served_catalogue(workers[1])
                assert served_answers(workers[0], probe) == served_answers(workers[1], probe)
                compared += 1
        except UnknownIdError:
            refused += 1
    for worker in workers:
        worker.sync()
    third = Service(settings)
    third.load(frozen_bundle)
    workers.append(third)
    try:
        catalogues = [served_catalogue(worker) for worker in workers]
        assert catalogues[0] == catalogues[1] == catalogues[2]
        probe = rng.sample(ids, 12)
        assert served_answers(workers[0], probe) == served_answers(workers[1], probe) == served_answers(third, probe)
    finally:
        for worker in workers:
            worker.close()
    assert compared > 0 and refused > 0 and len(catalogues[0]) > 90  # edits landed, some raced a deletion


@pytest.mark.parametrize("seed", range(3))
def test_an_engine_compacted_while_edits_land_answers_as_one_never_compacted(
        ranked_bundle, seed, monkeypatch):  # noqa: F811
    """Compactions (with upserts, stock changes and deletions landing while each builds aside, replayed at its swap)
    between known-user and similar-item requests to an engine with a re-ranker: it answers what the same engine
    with the same edits and no compaction answers, and holds the same items, flags and vectors."""
    import recsys.compaction

    bundle, _ = ranked_bundle
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    compacted, never = Recommender.load(bundle), Recommender.load(bundle)
    users, ids = sorted(compacted.histories)[:40], list(compacted.catalogue.state.position)
    made, swaps, edits_during = 0, 0, 0

    def edit() -> None:
        nonlocal made
        draw = rng.random()
        if draw < 0.4:
            new = rng.random() < 0.6
            made += new
            item = f"n{made}" if new else rng.choice(ids)
            ids.extend([item] if new else [])
            vector = np_rng.normal(size=(1, compacted.index.dim)).astype(np.float32)
            for engine in (compacted, never):
                engine.catalogue.upsert([{"item_id": item, "text": f"text {rng.randrange(9)}"}], vector)
        elif draw < 0.7:
            item, active = rng.choice(ids), rng.random() < 0.5
            for engine in (compacted, never):
                engine.catalogue.set_active([item], active)
        else:
            item = rng.choice(ids)
            ids.remove(item)
            for engine in (compacted, never):
                engine.catalogue.remove([item])

    carried_over = recsys.compaction.KeptRows.of

    def edits_while_building(old, keep, step=16_384):
        nonlocal edits_during
        kept = carried_over(old, keep, step)
        for _ in range(rng.randint(0, 4)):  # the rows are built aside: edits land before the swap
            edit()
            edits_during += 1
        return kept

    monkeypatch.setattr(recsys.compaction.KeptRows, "of", edits_while_building)
    for _ in range(80):
        if rng.random() < 0.15:
            swaps += compacted.catalogue.compact() > 0
        else:
            edit()
        for _ in range(3):
            user, item = rng.choice(users), rng.choice(ids)
            ours, theirs = compacted.recommend_user(user, 8), never.recommend_user(user, 8)
            assert ours.item_ids == theirs.item_ids and ours.reranked
            np.testing.assert_allclose(ours.scores, theirs.scores, rtol=1e-6, atol=1e-6)
            assert compacted.similar_items(item, 5).item_ids == never.similar_items(item, 5).item_ids
    ours, theirs = compacted.catalogue.state, never.catalogue.state
    assert ours.position.keys() == theirs.position.keys() and len(ours) < len(theirs)
    for item, row in ours.position.items():
        assert ours.flags[row] == theirs.flags[theirs.position[item]]
        np.testing.assert_array_equal(compacted.item_vectors[row], never.item_vectors[theirs.position[item]])
    assert swaps > 5 and edits_during > 10
