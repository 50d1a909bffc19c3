import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from recsys.config import BuildConfig
from recsys.errors import BundleError
from recsys.pipeline import Recommender
from recsys.splits import split_dataset
from tests.test_pipeline import VECTORS


@pytest.fixture()
def bundle(toy, tmp_path):
    return Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig()).save(tmp_path / "toy" / "v1")


@pytest.fixture()
def client(bundle):
    with TestClient(create_app(bundle, Settings(max_k=5, max_session_items=3))) as test_client:
        yield test_client


def test_health_and_model_info(client, bundle):
    assert client.get("/health").json() == {"status": "ok", "bundle_version": "v1", "n_items": 6, "n_users": 4}
    info = client.get("/v1/model").json()
    assert info["config"]["user_tower"]["recency_decay"] == 0.7 and "files" not in info


def test_known_user_excludes_history(client):
    body = client.get("/v1/users/u4/recommendations", params={"k": 2}).json()
    assert body["strategy"] == "personalised"
    ids = [item["item_id"] for item in body["items"]]
    assert ids == ["bag1", "bag2"] and not {"cam1", "cam2"} & set(ids)
    assert body["items"][0]["title"] == "Bag One"


def test_unknown_user_gets_popular_fallback(client):
    body = client.get("/v1/users/nobody/recommendations", params={"k": 2}).json()
    assert body["strategy"] == "popular_fallback"
    assert [i["item_id"] for i in body["items"]] == ["cam1", "cam2"]


def test_unknown_user_404_when_fallback_disabled(bundle):
    with TestClient(create_app(bundle, Settings(unknown_user_fallback=False))) as client:
        response = client.get("/v1/users/nobody/recommendations")
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown user id: 'nobody'"}


def test_session_and_similar(client):
    body = client.post("/v1/sessions/recommendations", json={"item_ids": ["shoe1"], "k": 1}).json()
    assert body == {"strategy": "session", "items": [
        {"item_id": "sock1", "score": pytest.approx(float(VECTORS[4] @ VECTORS[5]), rel=1e-5),
         "title": "Sock One", "text": "running socks blue"}]}
    similar = client.get("/v1/items/cam1/similar", params={"k": 3}).json()
    assert [i["item_id"] for i in similar["items"]] == ["cam2", "bag1", "bag2"]


@pytest.mark.parametrize("method,url,kwargs,status,fragment", [
    ("get", "/v1/items/nope/similar", {"params": {"k": 3}}, 404, "unknown item id: 'nope'"),
    ("post", "/v1/sessions/recommendations", {"json": {"item_ids": ["cam1", "x1", "x2"], "k": 3}}, 404, "'x1', 'x2'"),
    ("get", "/v1/users/u1/recommendations", {"params": {"k": 0}}, 422, "greater than or equal to 1"),
    ("get", "/v1/users/u1/recommendations", {"params": {"k": 6}}, 422, "above the limit of 5"),
    ("get", "/v1/users/u1/recommendations", {"params": {"k": "ten"}}, 422, "valid integer"),
    ("post", "/v1/sessions/recommendations", {"json": {"item_ids": []}}, 422, "at least 1 item"),
    ("post", "/v1/sessions/recommendations", {"json": {"item_ids": ["cam1"] * 4, "k": 3}}, 422, "the limit is 3"),
    ("post", "/v1/sessions/recommendations", {"content": b"{not json", "headers": {"content-type": "application/json"}},
     422, "JSON decode error"),
])
def test_bad_requests_get_clear_4xx(client, method, url, kwargs, status, fragment):
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status
    assert fragment in response.text


def test_openapi_documents_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/v1/users/{user_id}/recommendations", "/v1/sessions/recommendations",
            "/v1/items/{item_id}/similar"} <= set(paths)


def test_corrupted_bundle_refused_at_startup(bundle):
    (bundle / "index" / "ids.npy").write_bytes(np.zeros(3).tobytes())
    with pytest.raises(BundleError, match="checksum mismatch for index/ids.npy"):
        with TestClient(create_app(bundle)):
            pass
