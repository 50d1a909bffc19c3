import numpy as np
import pytest

from recsys.config import BuildConfig, EvalConfig, UserTowerConfig
from recsys.errors import BundleError, UnknownIdError
from recsys.evaluation import evaluate
from recsys.pipeline import Recommender
from recsys.popularity import Popularity
from recsys.query import Query
from recsys.splits import split_dataset
from recsys.catalogue import Catalogue
from recsys.user_tower import PooledHistoryEncoder

# hand-made 2-d vectors: cameras along x, bags near cameras, shoes/socks along y
VECTORS = np.array([[1, 0], [0.95, 0.31], [0.8, 0.6], [0.7, 0.71], [0, 1], [0.1, 0.99]], dtype=np.float32)
VECTORS /= np.linalg.norm(VECTORS, axis=1, keepdims=True)


@pytest.fixture()
def recommender(toy):
    return Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig())


def test_user_tower_recency_weights():
    catalogue = Catalogue.from_ids(["a", "b"], np.eye(2, dtype=np.float32))
    tower = PooledHistoryEncoder(catalogue, UserTowerConfig(recency_decay=0.5))
    vector = tower.encode_histories([["a", "b"], [], ["zzz"]])
    expected = np.array([0.5, 1.0]) / np.linalg.norm([0.5, 1.0])
    np.testing.assert_allclose(vector[0], expected, rtol=1e-6)
    assert not vector[1].any() and not vector[2].any()


def test_popularity_counts_and_exclusion(toy):
    split = split_dataset(toy)
    popularity = Popularity.fit(split.train, toy.items["item_id"].to_list())
    # train: u1 cam1 bag1, u2 shoe1 sock1, u3 cam2 bag2, u4 (2 items, all train) cam1 cam2
    assert dict(zip(popularity.item_ids, popularity.counts)) == {
        "cam1": 2, "cam2": 2, "bag1": 1, "bag2": 1, "shoe1": 1, "sock1": 1}
    assert popularity.top(3)[0] == ["cam1", "cam2", "bag1"]
    assert popularity.top(2, {"cam1"})[0] == ["cam2", "bag1"]


def test_similar_items_excludes_itself_and_fills_k(recommender):
    result = recommender.similar_items("cam1", k=3)
    assert result.item_ids == ["cam2", "bag1", "bag2"]
    assert result.strategy == "similar"
    assert result.scores == sorted(result.scores, reverse=True)


def test_session_excludes_seen_and_unknown_ids_raise(recommender):
    result = recommender.recommend_session(["shoe1"], k=2)
    assert result.item_ids == ["sock1", "bag2"]
    with pytest.raises(UnknownIdError, match="nope"):
        recommender.recommend_session(["shoe1", "nope"], k=2)


def test_a_str_where_a_list_of_ids_belongs_is_refused(recommender):
    """A str is iterated as one id per character: recommend_session("shoe1") raised "unknown item ids: 's', 'h', …",
    recommend_history("shoe1") served popular items and exclude="cam2" excluded nothing."""
    calls = {"item_ids": lambda: recommender.recommend_session("shoe1"),
             "history": lambda: recommender.recommend_history("shoe1"),
             "exclude": lambda: recommender.recommend_history(["shoe1"], exclude="sock1")}
    for name, call in calls.items():
        with pytest.raises(ValueError, match=f"^{name} must be a list of item ids, not a str: write \\['"):
            call()
    with pytest.raises(ValueError, match="^exclude must be a list of item ids"):
        recommender.similar_items("cam1", exclude="cam2")
    with pytest.raises(ValueError, match="^history must be a list of item ids"):
        recommender.similar_for_user("cam1", "shoe1")
    assert "sock1" not in recommender.recommend_history(["shoe1"], k=2, exclude=["sock1"]).item_ids


def test_a_user_id_or_filter_of_the_wrong_kind_is_refused(recommender):
    """recommend_user(["u1"]) (a history where a user id belongs) served popular items; where="category" was an
    AttributeError from inside the filter."""
    with pytest.raises(ValueError, match=r"^user_id must be one user id \(a str\), got list \['u1'\]$"):
        recommender.recommend_user(["u1"])
    with pytest.raises(ValueError, match="^where= must be a mapping such as {'category': 'Cameras'} or a Polars "
                                         "expression, got str 'category'$"):
        recommender.recommend_history(["shoe1"], where="category")
    assert recommender.recommend_user("u1", k=2).strategy == "personalised"
    with pytest.raises(ValueError, match="^strategy must be 'personalised' or 'session', got 'sesion'$"):
        Query(["shoe1"], strategy="sesion")  # the typo labelled the list


@pytest.mark.parametrize("k", [0, -3, 1.5, "5", True])
def test_k_must_be_a_positive_integer(recommender, k):
    """similar_items(k=0) returned an empty list and k=-3 "negative dimensions are not allowed"; a float, str or bool
    k failed deep in the search with a TypeError (or, True in a Query, served one item)."""
    calls = [lambda: recommender.similar_items("cam1", k=k), lambda: recommender.recommend_session(["shoe1"], k=k),
             lambda: recommender.recommend_user("u1", k=k)]
    for call in calls:
        with pytest.raises(ValueError, match=f"^k must be a positive integer, got {k!r}$"):
            call()
    assert len(recommender.similar_items("cam1", k=np.int64(2)).item_ids) == 2  # numpy integers are whole numbers


def test_unknown_user_falls_back_to_popular(recommender):
    result = recommender.recommend_user("stranger", k=2)
    assert result.strategy == "popular_fallback"
    assert result.item_ids == ["cam1", "cam2"]
    with pytest.raises(UnknownIdError):
        recommender.recommend_user("stranger", k=2, fallback=False)
    assert recommender.recommend_user("u3", k=2).strategy == "personalised"


def test_full_ranking_evaluation_on_known_answer(recommender, toy):
    split = split_dataset(toy)
    # test: u1 [cam1 bag1 cam2] → bag2; u2 [shoe1 sock1 cam1] → bag1; u3 [cam2 bag2 shoe1] → sock1
    metrics = evaluate(recommender, split.test, EvalConfig(ks=(1, 6)))
    assert metrics["n_examples"] == 3
    assert metrics["recall@6"] == 1.0  # the whole catalogue is ranked: every target is somewhere in it
    assert recommender.recommend_histories([["shoe1"]], 1) == [["shoe1"]]  # unmasked: history items rank too
    assert recommender.recommend_histories([["shoe1"]], 1, exclude_seen=True) == [["sock1"]]
    masked = evaluate(recommender, split.test, EvalConfig(ks=(6,), mask_history=True))
    assert masked["recall@6"] == 1.0  # no target is in its own history here


def test_save_load_round_trip(recommender, tmp_path):
    path = recommender.save(tmp_path / "bundle", {"metrics": []})
    loaded = Recommender.load(path)
    assert loaded.similar_items("bag1", 4) == recommender.similar_items("bag1", 4)
    assert loaded.recommend_user("u1", 3) == recommender.recommend_user("u1", 3)
    assert loaded.histories == recommender.histories
    np.testing.assert_array_equal(loaded.item_vectors, recommender.item_vectors)


def test_a_loaded_catalogue_takes_its_first_upserts_in_place(recommender, tmp_path):
    """A bundle's item vectors are read into storage with room to grow: the loaded catalogue's first upserts write
    past them instead of copying every vector into a larger buffer (at 100k 384-d items 57-402 ms, whichever
    request came first), and no second copy is held. A file shorter than its header says is a clear error."""
    from recsys.append_only import AppendOnly

    path = recommender.save(tmp_path / "bundle")
    loaded = Recommender.load(path)
    catalogue, first = loaded.catalogue, loaded.catalogue.state.vectors
    np.testing.assert_array_equal(first, np.load(path / "embeddings" / "items.npy"))
    for j in range(64):  # the room: an eighth more, and 64 rows
        catalogue.upsert([{"item_id": f"new{j}", "text": "new"}], VECTORS[[j % 6]])
        assert np.shares_memory(first, catalogue.state.vectors), j
    catalogue.upsert([{"item_id": "one-more", "text": "new"}], VECTORS[[0]])
    assert not np.shares_memory(first, catalogue.state.vectors)  # past the room: moved to a larger buffer
    np.testing.assert_array_equal(catalogue.state.vectors[:6], first)
    short = tmp_path / "short.npy"
    short.write_bytes((path / "embeddings" / "items.npy").read_bytes()[:-4])
    with pytest.raises(ValueError, match="shorter than its header says"):
        AppendOnly.read_npy(short)
    newer = tmp_path / "v3.npy"  # a format version the header readers do not take: numpy reads it
    with open(newer, "wb") as handle:
        np.lib.format.write_array(handle, VECTORS, version=(3, 0))
    np.testing.assert_array_equal(AppendOnly.read_npy(newer).view(), VECTORS)


def test_corrupted_bundle_is_refused(recommender, tmp_path):
    path = recommender.save(tmp_path / "bundle")
    with open(path / "embeddings" / "items.npy", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(BundleError, match="checksum mismatch for embeddings/items.npy"):
        Recommender.load(path)
    other = recommender.save(tmp_path / "other")
    (other / "stats" / "popularity.parquet").unlink()
    with pytest.raises(BundleError, match="stats/popularity.parquet listed in the manifest is missing"):
        Recommender.load(other)


def test_attribute_filter_and_deactivated_items(recommender):
    assert recommender.recommend_session(["shoe1"], k=2, where={"category": "cameras"}).item_ids == ["cam2", "cam1"]
    recommender.index.deactivate(["sock1", "cam1"])
    assert recommender.recommend_session(["shoe1"], k=2).item_ids == ["bag2", "bag1"]
    fallback = recommender.recommend_user("stranger", k=2)
    assert fallback.strategy == "popular_fallback" and fallback.item_ids == ["cam2", "bag1"]
    assert recommender.recommend_user("stranger", k=1, where={"category": "running"}).item_ids == ["shoe1"]


def test_the_cached_neighbour_lists_are_deeper_than_a_shown_list(recommender):
    assert recommender.shown_depth(10) == 50 and recommender.neighbours.depth == 62


def test_similar_items_from_the_neighbour_cache_match_a_search(recommender):
    recommender.neighbours.depth = 3  # shallower than the catalogue: deep or heavily filtered asks search

    def searched(item_id, k, exclude):
        vector = recommender.item_vectors[recommender.item_position[item_id]][None, :]
        return recommender.search_vectors(vector, k, [set(exclude) | {item_id}])[0][0]

    catalogue = recommender.catalogue
    cache = recommender.neighbours
    # (a change, how many lists it sends to a new search, how many it changes in place)
    changes = [(None, 6, 0),  # every item's list searched once
               (lambda: catalogue.set_active(["cam2"], False), 0, 0),  # a stock-out: the read drops it
               (lambda: catalogue.set_active(["cam2"], True), 0, 0),  # back with its vector: where it was
               (lambda: catalogue.upsert([{"item_id": "far1"}], -VECTORS[[0]]), 1, 0),  # reaches no list: its own
               # cam1's twin (3 times as long: the index scores its direction) enters the lists of cam1 and cam2 in
               # place; it ties bag1's last score (too near to place: searched) and reaches none of the others; its
               # own list is new
               (lambda: catalogue.upsert([{"item_id": "cam3"}], 3 * VECTORS[[0]]), 2, 2),
               # bag2 replaced by shoe1's twin: it moves up in shoe1's, sock1's and far1's lists and leaves bag1's,
               # which is one shorter (the item after its last is unknown) and searched when a read needs 3 items;
               # it reaches none of the others; its own list is searched
               (lambda: catalogue.upsert([{"item_id": "bag2"}], VECTORS[[4]]), 2, 4),
               # sock1 replaced by a camera and out of stock before a list is read: it leaves the lists that held
               # it (shoe1's, bag2's, far1's; their score for it is unknown until it is back), which are searched
               # when a read needs 3 items; its own list is searched
               (lambda: (catalogue.upsert([{"item_id": "sock1"}], VECTORS[[0]]),
                         catalogue.set_active(["sock1"], False)), 4, 3),
               # back in stock as a camera: it enters the lists of cam1, cam2 and cam3 and ties bag1's last
               (lambda: catalogue.set_active(["sock1"], True), 1, 3),
               (lambda: catalogue.remove(["shoe1"]), 0, 0)]
    for change, searched_again, changed_in_place in changes:
        misses, updated = cache.misses, cache.updated
        if change is not None:
            change()
        for item_id in recommender.item_ids:
            for k in range(1, 6):
                for exclude in ([], ["cam2"], ["bag1", "bag2", "sock1"]):
                    assert recommender.similar_items(item_id, k, exclude, diversify=False).item_ids == \
                        searched(item_id, k, exclude)
        assert (cache.misses - misses, cache.updated - updated) == (searched_again, changed_in_place)
        assert cache.hits > 0 and len(cache) == len(catalogue.state.position) + (change is changes[-1][0])
    catalogue.set_active(["cam2"], False)
    assert "cam2" not in recommender.similar_items("cam1", 5).item_ids


def test_a_replaced_item_tied_with_its_twin_moves_behind_it_in_a_cached_list(recommender):
    """Scores equal to 1e-5 are ordered by catalogue row, and a replaced item takes a new row at the end: a list
    brought up to date reorders such a tie even when the replacement scores what the item scored before."""
    cache, catalogue = recommender.neighbours, recommender.catalogue
    cache.depth = 4
    catalogue.upsert([{"item_id": "cam3"}], 2 * VECTORS[[0]])  # cam1's twin: the index scores directions

    def searched(k: int) -> list[str]:
        vector = recommender.item_vectors[recommender.item_position["cam2"]][None, :]
        return recommender.search_vectors(vector, k, [{"cam2"}])[0][0]

    assert recommender.similar_items("cam2", 2, diversify=False).item_ids == ["cam1", "cam3"] == searched(2)
    updated, misses = cache.updated, cache.misses
    catalogue.upsert([{"item_id": "cam1"}], 3 * VECTORS[[0]])  # the same direction, on a row after cam3's
    assert recommender.similar_items("cam2", 2, diversify=False).item_ids == ["cam3", "cam1"] == searched(2)
    assert (cache.updated - updated, cache.misses - misses) == (1, 0)  # reordered in place, not searched again
    assert searched(1) == ["cam3"]


def test_lists_of_the_whole_catalogue_take_every_addition_in_place(recommender):
    """A list shorter than the cache's depth held every item a search could return: an upsert or an activation
    anywhere is scored and placed in it (a replaced item moves within it) until it is `depth` long; then it is the
    top of a longer ranking, whose items after its last are unknown."""
    cache, catalogue = recommender.neighbours, recommender.catalogue
    cache.depth = 5  # one more than the 4 other active items of the 6-item catalogue with sock1 out of stock
    catalogue.set_active(["sock1"], False)

    def check(searched_again: int, changed_in_place: int) -> None:
        misses, updated = cache.misses, cache.updated
        for item_id in recommender.item_ids:
            for k in range(1, 6):
                for exclude in ([], ["cam2"], ["bag1", "shoe1"]):
                    vector = recommender.item_vectors[recommender.item_position[item_id]][None, :]
                    searched = recommender.search_vectors(vector, k, [set(exclude) | {item_id}])[0][0]
                    assert recommender.similar_items(item_id, k, exclude, diversify=False).item_ids == searched
        assert (cache.misses - misses, cache.updated - updated) == (searched_again, changed_in_place)

    check(6, 0)
    catalogue.upsert([{"item_id": "cam3"}], 0.5 * VECTORS[[0]])  # the index scores its direction
    # the lists grow to 5 (still all there is), but sock1's, which held all 5 active items (full): cam3 ties its
    # last (cam1, the same direction) and it is searched, as is cam3's own
    check(2, 5)
    catalogue.upsert([{"item_id": "bag2"}], -VECTORS[[2]])  # bag1's opposite: last in every list but its own
    # it moves to the end of the lists that hold everything and leaves the full ones (cam3's, sock1's), which a
    # read of 5 then searches again; its own list is searched
    check(3, 6)
    assert recommender.similar_items("cam1", 5, diversify=False).item_ids == ["cam3", "cam2", "bag1", "shoe1", "bag2"]
    catalogue.set_active(["sock1"], True)  # a sixth: the lists it enters cut their last, and are full from then on
    check(0, 6)
    assert recommender.similar_items("cam1", 5, diversify=False).item_ids == ["cam3", "cam2", "bag1", "sock1", "shoe1"]
