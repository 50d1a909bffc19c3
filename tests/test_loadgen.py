"""The latency benchmark's load generators against a real uvicorn server on loopback (toy bundle)."""

import shutil
import socket
import threading
import time

import pytest
import uvicorn

from api.app import create_app
from api.settings import Settings
from benchmarks.loadgen import available_tool, drive
from recsys.config import BuildConfig
from recsys.pipeline import Recommender
from recsys.splits import split_dataset
from tests.test_pipeline import VECTORS


@pytest.fixture()
def server_url(toy, tmp_path):
    bundle = Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig()).save(tmp_path / "toy" / "v1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(bundle, settings=Settings(state_dir=tmp_path / "state"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


PLAN = [{"method": "GET", "path": "/v1/users/u4/recommendations?k=2"},
        {"method": "GET", "path": "/v1/items/cam1/similar?k=2"},
        {"method": "POST", "path": "/v1/sessions/recommendations", "json": {"item_ids": ["cam1"], "k": 2}},
        {"method": "GET", "path": "/v1/items/no-such-item/similar"}]  # a 404: counted as an error


@pytest.mark.parametrize("tool", ["httpx", "wrk"])
def test_load_generator_is_bounded_and_counts_errors(server_url, tool):
    if tool == "wrk" and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk)")
    started = time.perf_counter()
    result = drive(server_url, PLAN, concurrency=2, requests=40, seconds=20, tool=tool)
    assert time.perf_counter() - started < 10  # the run ends with its last response, not at the 20 s limit (wrk too)
    assert result["tool"] == tool
    assert 40 <= result["requests"] <= 42  # stopped by the request bound (wrk may finish in-flight ones)
    assert result["errors"] == pytest.approx(result["requests"] / 4, abs=2)  # every 4th request is a 404
    assert set(result["error_kinds"]) == {"4xx" if tool == "wrk" else "404"}
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["seconds"] < 10  # clocked to the last response, not the 20 s limit: req/s is real
    assert result["rps"] == pytest.approx(result["requests"] / result["seconds"], rel=0.01)


def test_unknown_or_missing_tool_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="choose auto, wrk or httpx"):
        available_tool("locust")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert available_tool("auto") == "httpx"
    with pytest.raises(RuntimeError, match="apt-get install wrk"):
        available_tool("wrk")
