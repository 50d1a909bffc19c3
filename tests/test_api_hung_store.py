"""A hung event store (a Redis that accepts connections and never answers): the requests that need it answer 503
'retry shortly' within RECSYS_REDIS_TIMEOUT_S, and the worker keeps answering everything else meanwhile."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import anyio.to_thread
import pytest

from api.service import make_store
from api.settings import Settings
from recsys.config import BuildConfig
from recsys.errors import StoreError
from recsys.pipeline import Recommender
from recsys.splits import split_dataset
from tests.hung_redis import HungRedis
from tests.test_api import make_client
from tests.test_api_hostile import wait_for
from tests.test_pipeline import VECTORS

pytest.importorskip("redis", reason="the Redis event store needs the redis package (the test extra)")


@pytest.fixture()
def bundle(toy, tmp_path):
    return Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig()).save(tmp_path / "toy" / "v1")


@pytest.fixture()
def redis_server():
    with HungRedis() as server:
        yield server


def redis_client(bundle, tmp_path, server: HungRedis, timeout_s: float):
    return make_client(bundle, tmp_path, event_store="redis", redis_url=server.url, redis_timeout_s=timeout_s)


def test_a_redis_that_never_answers_is_refused_at_start_up_within_the_timeout(redis_server):
    """`recsys serve` pinged it with no read timeout: it waited for good (redis-py 5) or 5 s (redis-py 8)."""
    redis_server.hang()
    started = time.monotonic()
    with pytest.raises(StoreError, match="^RECSYS_REDIS_URL: cannot reach Redis at redis://127.0.0.1:"):
        make_store(Settings(event_store="redis", redis_url=redis_server.url, redis_timeout_s=0.3))
    assert time.monotonic() - started < 2.0


def test_a_hung_redis_is_a_503_within_the_timeout(bundle, tmp_path, redis_server):
    with redis_client(bundle, tmp_path, redis_server, timeout_s=0.4) as client:
        assert client.get("/v1/users/u1/recommendations").status_code == 200
        redis_server.hang()
        for request in (lambda: client.get("/v1/users/u1/recommendations"),
                        lambda: client.get("/v1/items/cam1/similar", params={"user_id": "u1"}),
                        lambda: client.post("/v1/events", json={"user_id": "u1", "item_id": "cam1"})):
            started = time.monotonic()
            response = request()
            assert response.status_code == 503 and response.json()["detail"] == \
                "the event store is unavailable; retry shortly"
            assert response.headers["retry-after"] == "1"
            assert time.monotonic() - started < 2.0
        # what needs no store keeps serving
        assert client.post("/v1/sessions/recommendations", json={"item_ids": ["cam1"], "k": 2}).status_code == 200
        assert client.get("/v1/items/cam1/similar").status_code == 200


def test_the_worker_answers_while_requests_wait_on_a_hung_store(bundle, tmp_path, redis_server):
    """The known user's route and similar items for a user read the store on the event loop: while Redis did not
    answer, the worker served nothing else, /health/live included. And the health routes ran in the thread pool,
    which requests waiting on the store fill (here it holds 2 threads)."""
    def two_threads() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 2

    with redis_client(bundle, tmp_path, redis_server, timeout_s=1.5) as client:
        client.portal.call(two_threads)
        redis_server.hang()
        with ThreadPoolExecutor(3) as pool:
            waiting = [pool.submit(client.get, "/v1/users/u1/recommendations"),
                       pool.submit(client.get, "/v1/items/cam1/similar", params={"user_id": "u2"}),
                       pool.submit(client.get, "/v1/users/u3/recommendations")]
            assert wait_for(lambda: redis_server.unanswered >= 2, seconds=5)  # requests are waiting on the store
            started = time.monotonic()
            assert client.get("/health/live").json()["status"] == "ok"
            assert client.get("/health/ready").json()["status"] == "ready"
            assert client.get("/health").json()["status"] == "ok"
            assert client.post("/v1/sessions/recommendations", json={"item_ids": ["cam1"], "k": 2}).status_code == 200
            assert time.monotonic() - started < 0.75  # (with the store read on the loop: 2-3 s)
            assert [f.result().status_code for f in waiting] == [503, 503, 503]
