"""Races within one worker: catalogue edits landing in the middle of a request, syncs and reloads running on
several threads at once. Each test makes the interleaving happen (threads held at a point by events), so it is
deterministic."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from api.service import Service
from api.settings import Settings
from recsys.config import BuildConfig
from recsys.data.synthetic import generate_shop
from recsys.pipeline import Recommender
from recsys.query import Query
from recsys.splits import split_dataset

WAIT_S = 10.0  # an event that never comes fails the test instead of hanging it
TOKEN = "s3cret"


@pytest.fixture()
def service(frozen_bundle, tmp_path):
    """One worker's service over the frozen bundle (tiny BERT item tower), with its own event store."""
    service = Service(Settings(state_dir=tmp_path / "state", admin_token=TOKEN, warm_similar_items=0))
    service.load(frozen_bundle)
    yield service
    service.close()


@pytest.fixture()
def recommender() -> Recommender:
    """A small shop with seeded random 16-d item vectors (distinct scores) and the default diversification."""
    dataset = generate_shop(n_users=40, n_items=70, seed=4)
    vectors = np.random.default_rng(3).normal(size=(dataset.items.height, 16)).astype(np.float32)
    return Recommender.build(dataset, split_dataset(dataset), vectors, BuildConfig())


def _edit_while_diversifying(recommender: Recommender, edit) -> threading.Thread:
    """Run `edit()` on another thread right after the request took the item vectors it diversifies with."""
    taken, edited = threading.Event(), threading.Event()
    unit_vectors = recommender.unit_vectors

    def paused(*args, **kwargs):
        vectors = unit_vectors(*args, **kwargs)
        taken.set()
        assert edited.wait(WAIT_S)
        return vectors

    def editor() -> None:
        assert taken.wait(WAIT_S)
        try:
            edit()
        finally:
            edited.set()

    recommender.unit_vectors = paused
    thread = threading.Thread(target=editor)
    thread.start()
    return thread


@pytest.mark.parametrize("change", ["upsert", "compaction"])
def test_a_list_is_diversified_over_one_catalogue_version(recommender, change):
    """The diversification read the vectors of one catalogue version and the id → row map of the next: an item
    upserted meanwhile (a text change) had a row past those vectors (IndexError, a 500), and after a compaction
    every item read another item's vector (a silently different list)."""
    user = sorted(recommender.histories)[0]
    history = recommender.histories[user]
    expected = recommender.recommend(Query(history, k=8)).item_ids
    catalogue = recommender.catalogue
    if change == "upsert":  # a new text (and vector) for the first listed item
        record = catalogue.state.record(expected[0])

        def edit():
            catalogue.upsert([{**record, "text": "a new text"}], catalogue.state.vectors[[1]])
    else:  # items in no list are deleted, and the index is compacted
        gone = [i for i in recommender.item_ids if i not in expected and i not in history][:10]

        def edit():
            catalogue.remove(gone)
            catalogue.compact()

    thread = _edit_while_diversifying(recommender, edit)
    try:
        got = recommender.recommend(Query(history, k=8)).item_ids
    finally:
        thread.join()
    assert got == expected  # the list of the version it was retrieved from



def test_the_index_size_metric_is_the_serving_bundles_after_a_sync_races_a_reload(service, frozen_bundle, tmp_path):
    """A sync of the bundle a reload replaced set `recsys_index_items` after the reload had: the metric gave the old
    bundle's count until the next catalogue edit."""
    newer = shutil.copytree(frozen_bundle, tmp_path / "shop" / "v2")
    old = service.current
    service.store.record_change("active", old.recommender.item_ids[0], active=False)  # pending
    synced, reloaded = threading.Event(), threading.Event()

    def paused(share):  # the sync has applied the change and left its lock
        synced.set()
        assert reloaded.wait(WAIT_S)
        return False

    old.recommender.catalogue.needs_compaction = paused
    thread = threading.Thread(target=service.sync)
    thread.start()
    try:
        assert synced.wait(WAIT_S)
        service.load(newer)
        service.upsert_item(service.current, {"item_id": "NEW", "text": "a camera bag", "title": "Bag"})
    finally:
        reloaded.set()
        thread.join()
    serving = service.current.recommender.index.n_available
    assert serving == old.recommender.index.n_available + 1
    assert service.metrics.registry.get_sample_value("recsys_index_items") == serving
