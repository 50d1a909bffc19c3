"""`recsys push-items`: a shop's item file upserted into a running API in batches of POST /v1/admin/items, checked
against the API's OpenAPI document before anything is sent; a refused batch is one line naming its items."""

from __future__ import annotations

import json

import httpx
import polars as pl
import pytest
from typer.testing import CliRunner

import jobs.push_cmd
from jobs.cli import app
from recsys.config import BuildConfig
from recsys.pipeline import Recommender
from recsys.splits import split_dataset
from tests.test_api import ADMIN, TOKEN, make_client
from tests.test_pipeline import VECTORS


@pytest.fixture()
def api(toy, tmp_path, monkeypatch):
    """The toy bundle's API in process; push-items' client goes to it, counting the feed's POSTs."""
    bundle = Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig()).save(tmp_path / "toy" / "v1")
    with make_client(bundle, tmp_path, admin_token=TOKEN, max_batch_items=3, max_text_chars=40) as client:
        posts: list[int] = []

        def bound(url, token, timeout_s):
            client.headers.clear()
            if token:
                client.headers["Authorization"] = f"Bearer {token}"
            client.event_hooks["request"] = [lambda r: posts.append(len(r.content)) if r.method == "POST" else None]
            return client_context(client)

        monkeypatch.setattr(jobs.push_cmd, "client_for", bound)
        client.posts = posts
        yield client


class client_context:
    """The in-process client as a context manager that leaves it open (the fixture closes it)."""

    def __init__(self, client):
        self.client = client

    def __enter__(self):
        return self.client

    def __exit__(self, *exc):
        return False


def feed(tmp_path, rows: list[tuple]) -> str:
    path = tmp_path / "feed.csv"
    pl.DataFrame(rows, schema=["sku", "description", "title", "brand", "price"], orient="row").write_csv(path)
    return str(path)


def push(*args: str):
    return CliRunner().invoke(app, ["push-items", "--url", "http://testserver", *args])


def test_an_item_file_is_pushed_in_batches_and_every_item_is_served(api, tmp_path):
    path = feed(tmp_path, [("cam3", "camera three", "Camera Three", "Lumora", "199.0"),
                           ("cam4", "camera four", "Camera Four", "", "249.5"),
                           ("bag3", "a green bag", "Bag Three", "Packa", ""),
                           ("sock2", "red socks", "Sock Two", "", "9")])
    result = push("--items", path, "--item-id-col", "sku", "--text-col", "description", "--token", TOKEN,
                  "--batch-size", "5")
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    # the toy catalogue keeps titles and categories only; the API takes 3 items a request
    assert "keeps no brand, price" in out and "batches of 3" in out
    assert "pushed 4 items in 2 requests" in out and "the catalogue serves 10 items" in out
    assert len(api.posts) == 2
    item = api.get("/v1/items/cam3").json()
    assert (item["title"], item["active"]) == ("Camera Three", True)
    assert api.get("/v1/items/sock2").status_code == 200
    again = push("--items", path, "--item-id-col", "sku", "--text-col", "description", "--token", TOKEN)
    assert again.exit_code == 0 and "the catalogue serves 10 items" in again.output  # upserts: pushed again, same


def test_a_file_the_api_would_refuse_is_refused_before_anything_is_sent(api, tmp_path):
    path = feed(tmp_path, [("cam3", "camera three", "Camera Three", "", ""),
                           ("cam9", "a camera with a text far longer than the limit", "Nine", "", "")])
    result = push("--items", path, "--item-id-col", "sku", "--text-col", "description", "--token", TOKEN)
    assert result.exit_code == 2 and not api.posts
    assert "1 item with a text over the API's 40 characters (RECSYS_MAX_TEXT_CHARS): 'cam9'; nothing was sent" in \
        " ".join(result.output.split())
    dry = push("--items", path, "--item-id-col", "sku", "--text-col", "description", "--dry-run")
    assert dry.exit_code == 2 and not api.posts  # the check needs no token
    ok = feed(tmp_path, [("cam3", "camera three", "Camera Three", "", "")])
    dry = push("--items", ok, "--item-id-col", "sku", "--text-col", "description", "--dry-run")
    assert dry.exit_code == 0 and not api.posts
    assert "dry run, nothing sent: would push 1 item in 1 request → http://testserver" in " ".join(dry.output.split())
    assert api.get("/v1/items/cam3").status_code == 404


def test_a_refused_batch_is_one_line_naming_its_items(api, tmp_path):
    path = feed(tmp_path, [("cam3", "camera three", "Camera Three", "", ""), ("cam4", "camera four", "Four", "", "")])
    result = push("--items", path, "--item-id-col", "sku", "--text-col", "description", "--token", "wrong")
    assert result.exit_code == 2 and len(api.posts) == 1
    assert "items 1–2 of the file were refused (HTTP 401" in " ".join(result.output.split())
    assert "Traceback" not in result.output and api.get("/v1/items/cam3").status_code == 404


def test_a_busy_api_is_tried_again_and_an_absent_one_is_named(tmp_path):
    answers = iter([503, 503, 200])
    waits: list[float] = []

    def handler(request):
        status = next(answers)
        return httpx.Response(status, json={"detail": "retry shortly"} if status == 503 else {"index_items": 7})

    client = httpx.Client(base_url="http://shop", transport=httpx.MockTransport(handler))
    assert jobs.push_cmd.send(client, [{"item_id": "a", "text": "b"}], 1, sleep=waits.append) == [{"index_items": 7}]
    assert waits == [1.0, 2.0]
    always = httpx.Client(base_url="http://shop", transport=httpx.MockTransport(
        lambda request: httpx.Response(503, json={"detail": "retry shortly"})))
    with pytest.raises(jobs.push_cmd.DataError, match="items 5–5 of the file were refused .HTTP 503: retry shortly"):
        jobs.push_cmd.send(always, [{"item_id": "a", "text": "b"}], 5, sleep=waits.append)
    path = feed(tmp_path, [("cam3", "camera three", "Camera Three", "", "")])
    result = CliRunner().invoke(app, ["push-items", "--url", "http://127.0.0.1:9", "--items", path, "--item-id-col",
                                      "sku", "--text-col", "description"])
    assert result.exit_code == 2 and "cannot reach the API at http://127.0.0.1:9" in " ".join(result.output.split())


def test_a_batch_over_the_apis_body_limit_is_sent_again_in_halves():
    accepted: list[list[str]] = []

    def handler(request):
        body = json.loads(request.content)
        if len(body["upsert"]) > 2 or any(len(r["text"]) > 10 for r in body["upsert"]):
            return httpx.Response(413, json={"detail": "request body too large"})
        accepted.append([r["item_id"] for r in body["upsert"]])
        return httpx.Response(200, json={"index_items": len(accepted)})

    client = httpx.Client(base_url="http://shop", transport=httpx.MockTransport(handler))
    records = [{"item_id": f"i{n}", "text": "short"} for n in range(5)]
    answers = jobs.push_cmd.send(client, records, 1)
    assert accepted == [["i0", "i1"], ["i2"], ["i3", "i4"]] and len(answers) == 3  # 5 → 2 + 3 → 2 + 1 + 2
    huge = [{"item_id": "a", "text": "short"}, {"item_id": "b", "text": "far too long a text"}]
    with pytest.raises(jobs.push_cmd.DataError, match="items 2–2 of the file were refused: one entry alone is over"):
        jobs.push_cmd.send(client, huge, 1)


def test_the_admin_header_is_the_tokens(tmp_path):
    with jobs.push_cmd.client_for("http://shop", TOKEN, 5.0) as client:
        assert client.headers["Authorization"] == ADMIN["Authorization"]
    with jobs.push_cmd.client_for("http://shop", None, 5.0) as client:
        assert "Authorization" not in client.headers


def test_the_served_items_a_file_leaves_out_are_deactivated_or_deleted_on_request(api, tmp_path):
    listed = [("cam1", "black mirrorless camera", "Camera One", "", ""), ("cam2", "silver camera", "Two", "", ""),
              ("bag1", "camera bag black", "Bag One", "", ""), ("bag2", "camera bag brown", "Bag Two", "", ""),
              ("cam3", "camera three", "Camera Three", "", "")]  # shoe1 and sock1 left out
    assert api.post("/v1/admin/items", json={"deactivate": ["bag2"]}, headers=ADMIN).status_code == 200
    ids = api.get("/v1/admin/items", headers=ADMIN).json()
    assert ids["active"] == ["cam1", "cam2", "bag1", "shoe1", "sock1"] and ids["inactive"] == ["bag2"]
    assert api.get("/v1/admin/items").status_code == 401  # behind the token
    args = ["--item-id-col", "sku", "--text-col", "description", "--token", TOKEN]
    dry = push("--items", feed(tmp_path, listed), *args, "--missing", "delete", "--dry-run")
    assert dry.exit_code == 0 and not api.posts
    assert "5 items in 2 requests; 2 served items not in the file to delete" in " ".join(dry.output.split())
    result = push("--items", feed(tmp_path, listed), *args, "--missing", "deactivate")
    assert result.exit_code == 0, result.output
    assert "2 served items not in the file to deactivate" in " ".join(result.output.split())
    after = api.get("/v1/admin/items", headers=ADMIN).json()
    # bag2 is listed, so upserted, which makes it active again; shoe1 and sock1 are not
    assert sorted(after["active"]) == ["bag1", "bag2", "cam1", "cam2", "cam3"]
    assert sorted(after["inactive"]) == ["shoe1", "sock1"]
    deleted = push("--items", feed(tmp_path, listed), *args, "--missing", "delete")
    assert deleted.exit_code == 0, deleted.output
    assert api.get("/v1/items/sock1").status_code == 404 and api.get("/v1/items/shoe1").status_code == 404
    posts = len(api.posts)
    truncated = push("--items", feed(tmp_path, listed[:1]), *args, "--missing", "delete")
    assert truncated.exit_code == 2 and len(api.posts) == posts  # refused before any change
    assert "would change 4 items of the 5 the catalogue holds, in stock or not (80%), more than --max-missing " \
        "(50%)" in " ".join(truncated.output.split())


def served_feed(tmp_path, name: str, changed: dict | None = None) -> str:
    """The toy catalogue as a feed file, as it is served (with `changed`: {item: {column: value}})."""
    from tests.conftest import toy_dataset

    items = toy_dataset().items.rename({"item_id": "sku", "text": "description"})
    rows = [{**row, **(changed or {}).get(row["sku"], {})} for row in items.iter_rows(named=True)]
    path = tmp_path / name
    pl.DataFrame(rows).write_csv(path)
    return str(path)


def test_a_feed_of_the_served_catalogue_changes_nothing_and_a_bad_row_leaves_its_item_as_served(api, tmp_path):
    """Pushing an unchanged catalogue re-encoded every item (a trained item lost its ID block, lists changed); a
    row skipped as bad left its item out of the file's ids, so --missing deactivate took it out of stock, unnamed."""
    args = ["--item-id-col", "sku", "--text-col", "description", "--token", TOKEN, "--missing", "deactivate"]
    store = api.app.state.service.store
    before = store.last_change_seq()
    result = push("--items", served_feed(tmp_path, "same.csv"), *args)
    flat = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "6 items in 2 requests; 0 served items not in the file to deactivate" in flat
    assert "6 items already served as in the file (kept as they were, their vectors too)" in flat
    assert store.last_change_seq() == before  # nothing recorded, nothing re-encoded

    result = push("--items", served_feed(tmp_path, "bad.csv", {"bag2": {"description": ""}}), *args,
                  "--on-bad-rows", "skip")
    flat = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "skipped 1 bad row of bad.csv (their items are left as served): row 4: empty item text for item " \
           "'bag2'" in flat
    assert "5 items in 2 requests (1 bad row skipped); 0 served items not in the file to deactivate" in flat
    assert api.get("/v1/items/bag2").json()["active"] and store.last_change_seq() == before
    failed = push("--items", served_feed(tmp_path, "bad.csv", {"bag2": {"description": ""}}), *args)
    assert failed.exit_code == 2 and "push the other rows with --on-bad-rows skip: the bad ones are listed and " \
        "their items left as served" in " ".join(failed.output.split()) and "rejected.csv" not in failed.output


def test_an_unreadable_line_leaves_its_item_as_served_when_it_tells_its_id(api, tmp_path):
    """A line with the wrong number of fields was read as no id at all: --missing deactivate took its item out of
    stock as one the file leaves out. Its first field, the id column, says which item it is."""
    path = tmp_path / "ragged.csv"
    served_feed(tmp_path, "ragged.csv")
    line = "bag2,camera bag brown,Bag Two,bags"
    assert line in path.read_text()
    path.write_text(path.read_text().replace(line, line + ",x"))
    args = ["--item-id-col", "sku", "--text-col", "description", "--token", TOKEN, "--missing", "deactivate",
            "--on-bad-rows", "skip"]
    result = push("--items", str(path), *args)
    flat = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "row 4: unparsable line: expected 4 fields, found 5" in flat
    assert "5 items in 2 requests (1 bad row skipped); 0 served items not in the file to deactivate" in flat
    assert api.get("/v1/items/bag2").json()["active"]
