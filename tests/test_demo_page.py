"""/demo rendered in headless Chromium: the recommendation cards must appear."""

import shutil
import socket
import subprocess
import threading
import time

import pytest
import uvicorn

from api.app import create_app
from api.settings import Settings
from recsys.config import BuildConfig
from recsys.pipeline import Recommender
from recsys.splits import split_dataset
from tests.test_pipeline import VECTORS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def server(toy, tmp_path):
    bundle = Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig()).save(tmp_path / "toy" / "v1")
    port = free_port()
    config = uvicorn.Config(create_app(bundle, Settings(state_dir=tmp_path / "state")), host="127.0.0.1",
                            port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    for _ in range(1200):  # startup imports can be slow on a loaded 2-core machine
        if uv.started:
            break
        time.sleep(0.05)
    assert uv.started, "server did not start"
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


def test_demo_page_serves_html(server):
    import httpx

    response = httpx.get(f"{server}/demo")
    assert response.status_code == 200 and "Recommended for you" in response.text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium)")
def test_demo_page_shows_recommendation_cards_in_chromium(server, tmp_path):
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
         f"{server}/demo?user=u4&item=cam1"],
        capture_output=True, text=True, timeout=90, check=False).stdout
    assert dom.count('class="card recommendation"') >= 4, dom[-2000:]
    assert 'data-item-id="bag1"' in dom  # u4's first personalised recommendation
    assert "because you viewed Camera Two" in dom
    assert "strategy: personalised" in dom
    assert '<div class="title" id="product-title">Camera One</div>' in dom
    assert 'id="error"></div>' in dom  # no error shown
