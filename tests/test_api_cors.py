"""CORS (RECSYS_CORS_ORIGINS): a shop's pages may call the public routes from JavaScript; admin never; off by
default."""

from __future__ import annotations

import pytest

from api.settings import Settings, SettingsError, load_settings
from recsys.config import BuildConfig
from recsys.pipeline import Recommender
from recsys.splits import split_dataset
from tests.test_api import TOKEN, make_client
from tests.test_pipeline import VECTORS

SHOP, OTHER = "https://shop.example", "https://elsewhere.example"


@pytest.fixture()
def bundle(toy, tmp_path):
    return Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig()).save(tmp_path / "toy" / "v1")


def preflight(client, path: str, origin: str, method: str = "POST", headers: str | None = "content-type"):
    request = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        request["Access-Control-Request-Headers"] = headers
    return client.options(path, headers=request)


def cors_headers(response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.startswith("access-control-")}


def test_allowed_origins_get_cors_on_the_public_routes(bundle, tmp_path):
    """Cross-origin calls from a product page failed: no CORS, a preflight was a 405."""
    with make_client(bundle, tmp_path, admin_token=TOKEN, cors_origins=f"{SHOP}, https://www.shop.example") as client:
        for path, method in (("/v1/sessions/recommendations", "POST"), ("/v1/events", "POST"),
                             ("/v1/users/u1/recommendations", "GET"), ("/v1/items/cam1/similar", "GET")):
            response = preflight(client, path, SHOP, method)
            assert response.status_code == 200, (path, response.text)
            headers = cors_headers(response)
            assert headers["access-control-allow-origin"] == SHOP
            assert set(headers["access-control-allow-methods"].split(", ")) == {"GET", "HEAD", "POST"}
            assert "Content-Type" in headers["access-control-allow-headers"].split(", ")
            assert "Origin" in response.headers["vary"]
        response = client.post("/v1/sessions/recommendations", json={"item_ids": ["cam1"], "k": 2},
                               headers={"Origin": SHOP})
        assert response.status_code == 200
        assert cors_headers(response) == {"access-control-allow-origin": SHOP,
                                          "access-control-expose-headers": "Retry-After"}
        get = client.get("/v1/users/u1/recommendations", headers={"Origin": "https://www.shop.example"})
        assert get.headers["access-control-allow-origin"] == "https://www.shop.example"


def test_other_origins_admin_and_probes_get_no_cors(bundle, tmp_path):
    with make_client(bundle, tmp_path, admin_token=TOKEN, cors_origins=SHOP) as client:
        refused = preflight(client, "/v1/sessions/recommendations", OTHER)
        assert refused.status_code == 405 and refused.json()["detail"] and not cors_headers(refused)
        get = client.get("/v1/users/u1/recommendations", headers={"Origin": OTHER})
        assert get.status_code == 200 and not cors_headers(get) and "Origin" in get.headers["vary"]
        # the admin routes' token belongs in a server, never in a page: no preflight passes, no answer is readable
        for path, method in (("/v1/admin/items/cam1", "PUT"), ("/v1/admin/reload", "POST")):
            response = preflight(client, path, SHOP, method, headers="authorization, content-type")
            assert response.status_code == 405 and not cors_headers(response)
        admin = client.post("/v1/admin/items/cam1/deactivate", headers={"Origin": SHOP,
                                                                        "Authorization": f"Bearer {TOKEN}"})
        assert admin.status_code == 200 and not cors_headers(admin)
        for path in ("/health/live", "/metrics", "/openapi.json"):
            assert not cors_headers(client.get(path, headers={"Origin": SHOP}))
        # a method or header the public routes do not take: refused as without CORS
        assert preflight(client, "/v1/items/cam1", SHOP, "DELETE").status_code == 405
        assert preflight(client, "/v1/events", SHOP, headers="authorization").status_code == 405


def test_without_the_setting_nothing_changes(bundle, tmp_path):
    with make_client(bundle, tmp_path) as client:
        response = preflight(client, "/v1/sessions/recommendations", SHOP)
        assert response.status_code == 405 and response.headers["allow"] == "POST" and not cors_headers(response)
        get = client.get("/v1/users/u1/recommendations", headers={"Origin": SHOP})
        assert get.status_code == 200 and not cors_headers(get) and "vary" not in get.headers


def test_the_origins_setting_is_a_comma_separated_list_of_origins(monkeypatch):
    assert Settings(cors_origins="*").cors_origins == ("*",) and Settings().cors_origins == ()
    monkeypatch.setenv("RECSYS_CORS_ORIGINS", " https://Shop.example, http://localhost:8080 ,")
    assert load_settings().cors_origins == ("https://shop.example", "http://localhost:8080")
    monkeypatch.setenv("RECSYS_CORS_ORIGINS", "https://shop.example/")  # never matches a browser's Origin
    with pytest.raises(SettingsError, match=r"^RECSYS_CORS_ORIGINS: .*'https://shop.example/' is not an origin"):
        load_settings()
