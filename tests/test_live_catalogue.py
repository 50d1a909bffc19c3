"""A living shop: catalogue edits and events go through the event store and every worker (here: two services
sharing one store, as two worker processes do) converges to it; a reload never loses an edit; deletion and
compaction; batch scoring reads the same store and gives the API's lists."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.service import Service
from api.settings import Settings
from jobs.batch import BatchOptions, read_shards, run_job
from jobs.batch.store import StoreSource
from recsys.config import BuildConfig
from recsys.data.synthetic import generate_shop
from recsys.pipeline import Recommender
from recsys.splits import split_dataset
from recsys.store import SQLiteEventStore
from recsys.towers import ItemTower

TOKEN = "s3cret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def settings(tmp_path, **overrides) -> Settings:
    return Settings(**{"state_dir": tmp_path / "state", "admin_token": TOKEN, "warm_similar_items": 0, **overrides})


def record(item_id: str, text: str = "black mirrorless camera with a lens", **fields) -> dict:
    return {"item_id": item_id, "text": text, "title": f"Title {item_id}", "category": "Cameras", "brand": "Lumora",
            "price": 199.0, **fields}


@pytest.fixture()
def two_workers(frozen_bundle, tmp_path):
    """Two services over one SQLite store, each with its own loaded bundle (what `--workers 2` runs)."""
    services = [Service(settings(tmp_path)) for _ in range(2)]
    for service in services:
        service.load(frozen_bundle)
    yield services
    for service in services:
        service.close()


def test_edits_and_events_reach_the_other_worker_through_the_store(two_workers):
    first, second = two_workers
    first.upsert_item(first.current, record("NEW1"))
    anchor = first.current.recommender.item_ids[0]
    first.set_item_active(first.current, anchor, False)
    first.record_event(first.current, "fresh-user", "NEW1", "purchase", None)
    assert "NEW1" in first.current.recommender.item_position  # the worker that took it: at once
    assert second.history(second.current, "fresh-user") == ["NEW1"]  # events: read from the store per request
    assert second.pending() and "NEW1" not in second.current.recommender.item_position
    second.sync()  # what its background task does every sync_interval_ms
    assert not second.pending() and second.current.applied_seq == first.current.applied_seq == 2
    mine, theirs = first.current.recommender, second.current.recommender
    np.testing.assert_array_equal(theirs.item_vectors[theirs.item_position["NEW1"]],
                                  mine.item_vectors[mine.item_position["NEW1"]])
    assert not theirs.catalogue.state.is_active(anchor)
    assert theirs.item_records(["NEW1"])[0]["title"] == "Title NEW1"
    assert anchor not in theirs.similar_items("NEW1", 10).item_ids


def test_many_changes_at_once_reach_the_other_worker_as_one_catalogue_version(two_workers):
    first, second = two_workers
    ids = first.current.recommender.item_ids
    before = second.current.recommender.catalogue.version
    first.change_items(first.current, [record("NEW1"), record("NEW2", "a red wool hat")],
                       {ids[0]: False, "NEW2": False}, [ids[1]])
    assert [c.kind for c in first.store.changes()] == ["upsert", "upsert", "active", "active", "delete"]
    second.sync()
    theirs, mine = second.current.recommender, first.current.recommender
    assert second.current.applied_seq == first.current.applied_seq == 5
    assert theirs.catalogue.version == before + 3  # one upsert, one deletion, one deactivation
    assert [theirs.catalogue.state.is_active(i) for i in ("NEW1", "NEW2", ids[0])] == [True, False, False]
    assert ids[1] not in theirs.item_position
    np.testing.assert_array_equal(theirs.item_vectors[theirs.item_position["NEW2"]],
                                  mine.item_vectors[mine.item_position["NEW2"]])
    two_at_once = first.current.recommender.item_tower().encode_texts(["black mirrorless camera with a lens",
                                                                        "a red wool hat"])
    np.testing.assert_allclose(mine.item_vectors[[mine.item_position["NEW1"], mine.item_position["NEW2"]]],
                               two_at_once, atol=1e-6)  # encoded in one batch as the single upserts would be


def test_an_edit_made_during_a_reload_is_never_lost(two_workers, frozen_bundle):
    first, second = two_workers
    newer = shutil.copytree(frozen_bundle, frozen_bundle.parent / "v2", dirs_exist_ok=True)
    warm = second._warm_neighbours

    def warm_while_edits_arrive(loaded):  # the new bundle has replayed the log and is warming its caches
        warm(loaded)
        first.upsert_item(first.current, record("OTHER-WORKER"))  # taken by another worker
        second.upsert_item(second.current, record("SAME-WORKER"))  # taken by this one, still serving v1
        assert second.current is not loaded and "SAME-WORKER" in second.current.recommender.item_position

    second._warm_neighbours = warm_while_edits_arrive
    loaded = second.load(newer)
    assert loaded.version == "v2" and second.current is loaded
    # both edits came after the reload's replay: they were applied right before the swap
    assert {"OTHER-WORKER", "SAME-WORKER"} <= set(loaded.recommender.item_position)
    assert loaded.applied_seq == second.store.last_change_seq() == 2


def test_a_reload_is_followed_by_the_other_worker(two_workers, frozen_bundle):
    first, second = two_workers
    newer = shutil.copytree(frozen_bundle, frozen_bundle.parent / "v3", dirs_exist_ok=True)
    first.upsert_item(first.current, record("KEPT"))
    first.load(newer, announce=True)
    second.sync()  # sees the `bundle` change: loads v3 in a thread
    for _ in range(200):
        if second.current.version == "v3":
            break
        time.sleep(0.05)
    assert second.current.version == "v3" and "KEPT" in second.current.recommender.item_position


def _wait_until(condition) -> None:
    for _ in range(200):
        if condition():
            return
        time.sleep(0.05)


def test_a_worker_that_failed_to_follow_a_reload_tries_again(two_workers, frozen_bundle, monkeypatch):
    """It logged the failure and served the old bundle for good, while the other workers served the new one."""
    import api.service
    from recsys.bundle import Bundle
    from recsys.errors import BundleError

    first, second = two_workers
    newer = shutil.copytree(frozen_bundle, frozen_bundle.parent / "v4", dirs_exist_ok=True)
    first.load(newer, announce=True)
    opened, failed = Bundle.open, []

    def flaky(target, *args, **kwargs):  # the first try fails (a network disk hiccup), the next ones read it
        if not failed:
            failed.append(target)
            raise BundleError(f"{target}: Input/output error")
        return opened(target, *args, **kwargs)

    monkeypatch.setattr(Bundle, "open", flaky)
    monkeypatch.setattr(api.service, "FOLLOW_RETRY_S", 0.0)
    second.sync()
    _wait_until(lambda: failed and second._following is None)
    assert failed and second.current.version == "v1" and second.pending()  # the retry is due
    second.sync()
    _wait_until(lambda: second.current.version == "v4")
    assert second.current.version == "v4" and not second.pending()
    second._missed = (str(newer), 0.0)  # as if v4 were still to be retried: a swap on this worker (an admin
    second.load(frozen_bundle)         # reload) cancels it, or a retry would swap the older bundle back in
    assert second._missed is None and second.current.version == "v1" and not second.pending()


def test_deleted_items_are_gone_and_compaction_keeps_serving(frozen_bundle, tmp_path):
    with TestClient(create_app(frozen_bundle, service=Service(settings(tmp_path, compact_share=0.06)))) as client:
        service = client.app.state.service
        recommender = service.current.recommender
        victims = recommender.item_ids[:6]
        user = next(iter(recommender.histories))
        errors: list[str] = []
        stop = threading.Event()

        def traffic() -> None:  # requests keep flowing while items are deleted and the index is compacted
            while not stop.is_set():
                try:
                    for response in (client.get(f"/v1/users/{user}/recommendations", params={"k": 5}),
                                     client.get(f"/v1/items/{recommender.item_ids[-1]}/similar", params={"k": 5})):
                        if response.status_code != 200:
                            errors.append(response.text)
                except Exception as error:  # the test client re-raises a server error here: it is one too
                    errors.append(repr(error))
                    return

        thread = threading.Thread(target=traffic)
        thread.start()
        try:
            assert client.delete(f"/v1/admin/items/{victims[0]}").status_code == 401
            for item_id in victims:
                response = client.delete(f"/v1/admin/items/{item_id}", headers=ADMIN)
                assert response.status_code == 200 and response.json()["active"] is False
            for _ in range(200):  # compaction runs in the background once 6 % of the rows are tombstones (6 of 90)
                if service.current.recommender.catalogue.state.n_removed == 0:
                    break
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join()
        assert not errors
        state = service.current.recommender.catalogue.state
        assert state.n_removed == 0 and len(state) == 90 - 6  # compacted
        assert client.get(f"/v1/items/{victims[0]}").status_code == 404
        assert client.delete(f"/v1/admin/items/{victims[0]}", headers=ADMIN).status_code == 404
        listed = {i["item_id"]
                  for i in client.get(f"/v1/users/{user}/recommendations", params={"k": 80}).json()["items"]}
        assert not listed & set(victims)


class SeededTextEncoder(ItemTower):
    """A fixed random unit vector per text, in the random bundle's 16-d space (no BERT encodes into it)."""

    dim = 16

    def encode_texts(self, texts):
        rows = [np.random.default_rng(sum(map(ord, t))).normal(size=self.dim) for t in texts]
        return np.asarray([r / np.linalg.norm(r) for r in rows], np.float32).reshape(-1, self.dim)


@pytest.fixture(scope="module")
def random_bundle(tmp_path_factory):
    """A shop bundle with seeded random 16-d item vectors (distinct scores, no ties)."""
    dataset = generate_shop(n_users=40, n_items=70, seed=4)
    vectors = np.random.default_rng(3).normal(size=(dataset.items.height, 16)).astype(np.float32)
    recommender = Recommender.build(dataset, split_dataset(dataset), vectors, BuildConfig())
    return recommender.save(tmp_path_factory.mktemp("random") / "shop" / "v1")


def test_batch_scoring_reads_the_store_and_gives_the_apis_lists(random_bundle, tmp_path):
    service = Service(settings(tmp_path), item_encoder_loader=lambda recommender: SeededTextEncoder())
    with TestClient(create_app(random_bundle, service=service)) as client:
        recommender = client.app.state.service.current.recommender
        users = sorted(recommender.histories)[:6]
        before = {u: [i["item_id"]
                      for i in client.get(f"/v1/users/{u}/recommendations", params={"k": 6}).json()["items"]]
                  for u in users}
        assert client.put("/v1/admin/items/NEWCAM", json=record("NEWCAM"), headers=ADMIN).status_code == 200
        for user in users[:3]:  # two purchases each, the first of the user's own top item
            for item in (before[user][0], "NEWCAM"):
                assert client.post("/v1/events",
                                   json={"user_id": user, "item_id": item, "kind": "purchase"}).status_code == 201
        assert client.post(f"/v1/admin/items/{before[users[3]][0]}/deactivate", headers=ADMIN).status_code == 200
        client.post("/v1/events", json={"user_id": "newcomer", "item_id": "NEWCAM"})
        api = {u: [i["item_id"] for i in client.get(f"/v1/users/{u}/recommendations", params={"k": 6}).json()["items"]]
               for u in [*users, "newcomer"]}
    assert all(api[u] != before[u] for u in users[:4])  # the events and the deactivation changed these lists
    (tmp_path / "users.txt").write_text("\n".join([*users, "newcomer"]))
    common = {"bundle": random_bundle, "users": str(tmp_path / "users.txt"), "k": 6, "progress": False}
    manifest = run_job(BatchOptions(out=tmp_path / "batch", store=StoreSource(tmp_path / "state"), **common))
    assert manifest["store"]["catalogue_changes"] == 2 and manifest["store"]["users_with_events"] == 4
    batch = read_shards(tmp_path / "batch")
    for user, items in api.items():
        assert batch.filter(pl.col("user_id") == user)["item_id"].to_list() == items, user
    # without the store: the bundle alone (the old lists), and the manifest says so
    plain = run_job(BatchOptions(out=tmp_path / "plain", **common | {"users": str(tmp_path / "users.txt")}))
    assert plain["store"] is None and plain["input"]["n_unknown"] == 1  # "newcomer" exists only in the store
    shards = read_shards(tmp_path / "plain")
    assert shards.filter(pl.col("user_id") == users[0])["item_id"].to_list() == before[users[0]]
    # the CLI reads the store by default when it exists (--state-dir / RECSYS_STATE_DIR), not with --no-store
    from typer.testing import CliRunner

    from jobs.cli import app

    for flag, expected in (("--store", 2), ("--no-store", None)):
        out = tmp_path / f"cli{flag}"
        result = CliRunner().invoke(app, ["batch-score", "--bundle", str(random_bundle), "--out", str(out), "--k", "6",
                                          "--users", str(tmp_path / "users.txt"),
                                          "--state-dir", str(tmp_path / "state"),
                                          "--no-progress", *([flag] if flag == "--no-store" else [])])
        assert result.exit_code == 0, result.output
        store = json.loads((out / "manifest.json").read_text())["store"]
        assert (store and store["catalogue_changes"]) == expected
        if expected:
            assert read_shards(out).equals(batch) and "event store" in result.output
    # a resumed job keeps its snapshot: later events do not change it
    SQLiteEventStore(tmp_path / "state" / "events.sqlite").append(users[4], "NEWCAM", "view")
    again = run_job(BatchOptions(out=tmp_path / "batch", store=StoreSource(tmp_path / "state"), **common))
    assert again["store"]["events_seq"] == manifest["store"]["events_seq"] and again["run"]["chunks_scored"] == 0


def test_an_upserted_item_lands_by_its_text_and_a_text_query_finds_the_item_it_names(frozen_bundle, tmp_path):
    """The zero-shot bundle's own BERT reads the upserted and queried texts: an item repeating an existing item's
    text lands on that item's vector (its nearest neighbour, well ahead of the rest), another text elsewhere."""
    with TestClient(create_app(frozen_bundle, service=Service(settings(tmp_path)))) as client:
        recommender = client.app.state.service.current.recommender
        twin, other = recommender.item_records([recommender.item_ids[7], recommender.item_ids[40]])
        copy = {key: twin[key] for key in ("text", "title", "category", "brand", "price")}
        assert client.put("/v1/admin/items/TWIN", json={"item_id": "TWIN", **copy}, headers=ADMIN).status_code == 200
        other_copy = {"item_id": "OTHER", "text": other["text"], "title": other["title"]}
        assert client.put("/v1/admin/items/OTHER", json=other_copy, headers=ADMIN).status_code == 200
        recommender = client.app.state.service.current.recommender
        position = recommender.item_position
        np.testing.assert_allclose(recommender.item_vectors[position["TWIN"]],
                                   recommender.item_vectors[position[twin["item_id"]]], atol=1e-5)
        for new, original in (("TWIN", twin["item_id"]), ("OTHER", other["item_id"])):
            similar = client.get(f"/v1/items/{new}/similar", params={"k": 3}).json()["items"]
            assert similar[0]["item_id"] == original, (new, similar)
            assert similar[0]["score"] > similar[1]["score"] + 1e-3
        # a free-text query of an item's words ranks that item (and its twin) first
        listed = client.post("/v1/sessions/recommendations", json={"text": other["text"], "k": 3}).json()["items"]
        assert {i["item_id"] for i in listed[:2]} == {"OTHER", other["item_id"]}
        assert listed[1]["score"] > listed[2]["score"] + 1e-3
