"""Every query kind goes through the re-ranker when the bundle has one, says so, and explains only when
asked; the API's lists are the pipeline's (and batch scoring's) lists."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.service import Service
from api.settings import Settings
from recsys.query import Query
from recsys.towers import ItemTower
from tests.test_batch import ranked_bundle  # noqa: F401  (module fixture: the planted bundle with a ranker)


class FixedTextEncoder(ItemTower):
    """Texts to a fixed unit vector of the bundle's dimension (the planted bundle has no item tower)."""

    def __init__(self, dim: int) -> None:
        self._dim = dim

    @property
    def dim(self) -> int:
        return self._dim

    def encode_texts(self, texts):
        vector = np.ones((len(texts), self.dim), np.float32)
        return vector / np.linalg.norm(vector, axis=1, keepdims=True)


@pytest.fixture()
def client(ranked_bundle, tmp_path):  # noqa: F811
    bundle, recommender = ranked_bundle
    service = Service(Settings(state_dir=tmp_path / "state"),
                      item_encoder_loader=lambda loaded: FixedTextEncoder(recommender.index.dim))
    with TestClient(create_app(bundle, service=service)) as c:
        yield c, recommender


def _ids(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def test_known_users_and_sessions_are_reranked_and_explained_on_request(client):
    client, recommender = client
    user = sorted(recommender.histories)[3]
    body = client.get(f"/v1/users/{user}/recommendations", params={"k": 6}).json()
    assert body["reranked"] is True and body["strategy"] == "personalised"
    assert all(item["top_features"] is None for item in body["items"])  # contributions only when asked
    expected = recommender.recommend_user(user, 6)
    assert _ids(body) == expected.item_ids and expected.reranked
    explained = client.get(f"/v1/users/{user}/recommendations", params={"k": 6, "explain": "true"}).json()
    assert _ids(explained) == _ids(body) and all(item["top_features"] for item in explained["items"])

    session = recommender.histories[user][-3:]
    body = client.post("/v1/sessions/recommendations", json={"item_ids": session, "k": 5}).json()
    assert body["reranked"] is True and _ids(body) == recommender.recommend_session(session, 5).item_ids

    stranger = client.get("/v1/users/nobody-knows-me/recommendations", params={"k": 5}).json()
    assert stranger["strategy"] == "popular_fallback" and stranger["reranked"] is False


def test_text_sessions_and_similar_items_for_a_user_are_reranked(client):
    client, recommender = client
    user = sorted(recommender.histories)[5]
    history = recommender.histories[user]
    text = client.post("/v1/sessions/recommendations", json={"text": "anything", "item_ids": history[-2:],
                                                             "k": 5, "explain": True}).json()
    assert text["reranked"] is True and len(text["items"]) == 5 and text["items"][0]["top_features"]
    assert not set(_ids(text)) & set(history[-2:])
    served = client.app.state.service.current.recommender  # the one with the (fixed) item tower
    expected = served.recommend(Query(history=history[-2:], text="anything", k=5))
    assert _ids(text) == expected.item_ids and expected.reranked and expected.strategy == "session"
    assert _ids(text) != served.recommend_session(history[-2:], 5).item_ids  # the text moved the list

    anchor = recommender.item_ids[7]
    plain = client.get(f"/v1/items/{anchor}/similar", params={"k": 5}).json()
    assert plain["reranked"] is False  # the same list for every visitor: item similarity only
    personal = client.get(f"/v1/items/{anchor}/similar", params={"k": 5, "user_id": user}).json()
    assert personal["reranked"] is True and personal["strategy"] == "similar"
    expected = recommender.similar_for_user(anchor, history, 5)
    assert _ids(personal) == expected.item_ids
    pool = recommender.similar_items(anchor, 50, set(history)).item_ids
    assert set(_ids(personal)) <= set(pool) and not set(_ids(personal)) & set(history)
    # what users buy after item i is its planted successor (7i+3 mod n): when it is among the anchor's
    # neighbours, the re-ranked list puts it first (the similarity-only order almost never does)
    n_items = len(recommender.item_ids)
    first = {}
    for anchor in recommender.item_ids[:60]:
        successor = f"i{(7 * int(anchor[1:]) + 3) % n_items}"
        if successor in recommender.similar_items(anchor, 50, set(history)).item_ids:
            first[anchor] = recommender.similar_for_user(anchor, history, 5).item_ids[0] == successor
    assert len(first) >= 10 and all(first.values())


def test_model_info_says_how_far_the_rankers_statistics_count(ranked_bundle, tmp_path):  # noqa: F811
    from recsys.splits import split_dataset
    from recsys.stats_refresh import live_frame, refreshed
    from tests.test_ranker import planted_dataset

    bundle, recommender = ranked_bundle
    split = split_dataset(planted_dataset())  # the data the fixture's ranker was trained on
    service = Service(Settings(state_dir=tmp_path / "state"))
    with TestClient(create_app(bundle, service=service)) as c:
        info = c.get("/v1/model").json()["ranker"]
    assert info == {"trees": recommender.reranker.ranker.n_trees, "features": len(recommender.reranker.builder.names),
                    "statistics_through": "train", "statistics_events": split.train.height,
                    "statistics_live_events": 0, "statistics_live_through_seq": 0}
    trained = recommender.reranker  # the module's recommender: saved with refreshed statistics, then restored
    live = live_frame([(5, "u0", "i1", "view", 0.0), (9, "walk-in", "i2", "purchase", 0.0)])
    recommender.reranker = refreshed(trained, split, "test", live=live)
    try:
        path = recommender.save(tmp_path / "planted" / "v2")
    finally:
        recommender.reranker = trained
    with TestClient(create_app(path, service=Service(Settings(state_dir=tmp_path / "state2")))) as c:
        info = c.get("/v1/model").json()["ranker"]
    assert (info["statistics_through"], info["statistics_events"]) == \
        ("test", split.train.height + 2 * split.test.height + 2)
    assert (info["statistics_live_events"], info["statistics_live_through_seq"]) == (2, 9)
