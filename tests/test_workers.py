"""Two real worker processes (`recsys serve --workers 2`, SQLite store, admin token): an upsert, a deactivation and an
event are visible to every worker within 1 s (20 of 20 reads on fresh connections), and an edit made during a
reload is never lost."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

TOKEN = "w0rkers"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
READS = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_get(url: str, **params) -> httpx.Response:
    """A GET on a new connection (the kernel hands each new connection to one of the workers)."""
    with httpx.Client(timeout=10) as client:
        return client.get(url, params=params, headers={"Connection": "close"})


@pytest.fixture()
def server(frozen_bundle, tmp_path):
    """`recsys serve --workers 2` on a copy of the bundle's model directory; yields (base url, model directory)."""
    models = tmp_path / "models"
    shutil.copytree(frozen_bundle, models / "v1")
    port = free_port()
    env = {**os.environ, "RECSYS_STATE_DIR": str(tmp_path / "state"), "RECSYS_ADMIN_TOKEN": TOKEN,
           "RECSYS_WARM_SIMILAR_ITEMS": "0", "RECSYS_WARM_USER_CACHE": "0",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    log = open(tmp_path / "server.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "jobs.cli", "serve", "--bundle", str(models / "v1"),
                                "--port", str(port), "--workers", "2"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        workers: set[int] = set()
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline:  # both workers have loaded the bundle
            try:
                workers.add(fresh_get(f"{base}/health/live").json()["worker"])
            except httpx.HTTPError:
                time.sleep(0.2)
        assert len(workers) == 2, (tmp_path / "server.log").read_text()[-3000:]
        yield base, models
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def _post_or_error(url: str) -> httpx.Response | Exception:
    """An admin POST from a thread: its response, or the exception that stopped it (a thread cannot raise it)."""
    try:
        return httpx.post(url, json={}, headers=ADMIN, timeout=60)
    except httpx.HTTPError as error:
        return error


def server_log(models: Path) -> str:
    """The tail of the server's log (beside the model directory), for a failure message."""
    return (models.parent / "server.log").read_text(errors="replace")[-4000:]


def item(item_id: str) -> dict:
    return {"item_id": item_id, "text": "black mirrorless camera with a fast lens", "title": f"Camera {item_id}",
            "category": "Cameras", "brand": "Lumora", "price": 249.0}


def test_every_worker_sees_edits_and_events_within_a_second_and_reloads_lose_nothing(server):
    base, models = server
    with httpx.Client(timeout=30) as admin:
        assert admin.put(f"{base}/v1/admin/items/LIVE1", json=item("LIVE1"), headers=ADMIN).status_code == 200
        anchor = admin.get(f"{base}/v1/items/LIVE1/similar", params={"k": 1}).json()["items"][0]["item_id"]
        assert admin.post(f"{base}/v1/admin/items/{anchor}/deactivate", headers=ADMIN).status_code == 200
        assert admin.post(f"{base}/v1/events", json={"user_id": "walk-in", "item_id": "LIVE1"}).status_code == 201
    time.sleep(1.0)
    workers = set()
    for _ in range(READS):
        assert fresh_get(f"{base}/v1/items/LIVE1").status_code == 200  # the upsert
        similar = fresh_get(f"{base}/v1/items/LIVE1/similar", k=20).json()["items"]
        assert anchor not in {i["item_id"] for i in similar}  # the deactivation
        body = fresh_get(f"{base}/v1/users/walk-in/recommendations", k=3).json()
        assert body["strategy"] == "personalised" and "LIVE1" not in {i["item_id"] for i in body["items"]}  # the event
        workers.add(fresh_get(f"{base}/health/live").json()["worker"])
    assert len(workers) == 2  # both workers answered reads

    # a reload (both workers follow it) with an edit sent 50 ms after it began
    shutil.copytree(models / "v1", models / "v2")
    answers: list = []  # the reload's response (or the error that stopped it), checked after the join
    reload = threading.Thread(target=lambda: answers.append(_post_or_error(f"{base}/v1/admin/reload")))
    reload.start()
    time.sleep(0.05)
    assert httpx.put(f"{base}/v1/admin/items/DURING", json=item("DURING"), headers=ADMIN, timeout=30).status_code == 200
    reload.join()
    assert isinstance(answers[0], httpx.Response) and answers[0].status_code == 200, (
        f"{answers[0]!r}\n{server_log(models)}")  # (a string: pytest cut a tuple's repr before the traceback)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the other worker loads v2 after it sees the reload in the store
        versions = {fresh_get(f"{base}/health/ready").json()["model_version"] for _ in range(6)}
        if versions == {"v2"}:
            break
        time.sleep(0.2)
    assert versions == {"v2"}, server_log(models)
    time.sleep(1.0)
    assert all(fresh_get(f"{base}/v1/items/DURING").status_code == 200 for _ in range(30))
    assert all(fresh_get(f"{base}/v1/items/LIVE1").status_code == 200 for _ in range(10))


def test_metrics_count_every_worker_s_requests_whichever_worker_is_scraped(server):
    """/metrics answered for the one worker that took the scrape's connection: the request counters went down and
    up from one scrape to the next (9, 8, 9, ...), which Prometheus reads as counter resets. The workers now share
    their metrics: every scrape gives the sums, and each worker's gauges with its pid."""
    base, models = server
    workers = set()
    for _ in range(12):
        assert fresh_get(f"{base}/v1/model").status_code == 200
        workers.add(fresh_get(f"{base}/health/live").json()["worker"])
    line = 'recsys_requests_total{method="GET",route="/v1/model",status="200"} 12.0'
    for _ in range(6):
        scraped = fresh_get(f"{base}/metrics").text
        assert line in scraped.splitlines(), server_log(models)
        assert {f'recsys_event_store_up{{pid="{pid}"}} 1.0' for pid in workers} <= set(scraped.splitlines())
