"""/demo and the API docs rendered in headless Chromium: the recommendation cards must appear, and /docs must
render with no network but the server's (Swagger UI and ReDoc come from the package, not a CDN)."""

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


def dump_dom(url: str, tmp_path, budget_ms: int = 5000) -> str:
    """The page's DOM after `budget_ms` of virtual time, with every host but the local server unresolvable (as in
    a shop's private network)."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
         f"--user-data-dir={tmp_path / 'profile'}", f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False).stdout


def test_docs_pages_load_their_assets_from_the_server(server):
    import re

    import httpx

    for page, assets in (("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")), ("/redoc", ("redoc.standalone.js",))):
        html = httpx.get(f"{server}{page}").text
        assert not re.search(r"(src|href)=[\"']https?://", html), html  # nothing from a CDN
        for asset in assets:
            assert f'"/static-offline-docs/{asset}"' in html
            response = httpx.get(f"{server}/static-offline-docs/{asset}")
            assert response.status_code == 200 and len(response.content) > 100_000


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium)")
def test_swagger_ui_and_redoc_render_offline_in_chromium(server, tmp_path):
    dom = dump_dom(f"{server}/docs", tmp_path / "swagger", 10_000)
    assert 'class="swagger-ui"' in dom, dom[-2000:]
    assert "/v1/users/{user_id}/recommendations" in dom  # the operations, rendered from /openapi.json
    assert "/v1/sessions/recommendations" in dom
    dom = dump_dom(f"{server}/redoc", tmp_path / "redoc", 10_000)
    assert "User Recommendations" in dom and "/v1/items/{item_id}/similar" in dom, dom[-2000:]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium)")
def test_demo_page_shows_recommendation_cards_in_chromium(server, tmp_path):
    dom = dump_dom(f"{server}/demo?user=u4&item=cam1", tmp_path)
    assert dom.count('class="card recommendation"') >= 4, dom[-2000:]
    assert 'data-item-id="bag1"' in dom  # u4's first personalised recommendation
    assert "because of Camera Two in your history" in dom
    assert "strategy: personalised" in dom
    assert '<div class="title" id="product-title">Camera One</div>' in dom
    assert 'id="error"></div>' in dom  # no error shown
