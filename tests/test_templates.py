"""One item-text template: import, training text, live upserts and free-text queries render alike."""

import json

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.service import Service
from api.settings import Settings
from recsys.config import BuildConfig
from recsys.data.dataset import Dataset
from recsys.data.tables import import_table
from recsys.data.item_text import item_text, item_texts, query_record
from recsys.pipeline import Recommender
from recsys.splits import split_dataset
from recsys.towers import ItemTower
from tests.test_api import ADMIN, TOKEN
from tests.test_pipeline import VECTORS

TEMPLATE = "title: {title} | brand: {brand}"


def test_rendering_drops_empty_fields_and_falls_back_to_text():
    items = pl.DataFrame({"text": ["A text", "B text", "C text"], "title": ["Alpha", None, " "],
                          "brand": ["Acme", "Bolt", None]})
    assert item_texts(items, TEMPLATE) == ["title: Alpha | brand: Acme", "brand: Bolt", "C text"]
    assert item_texts(items, "{colour}") == ["A text", "B text", "C text"]  # a field the rows lack
    assert item_texts(items, None) == item_texts(items, "{text}") == ["A text", "B text", "C text"]
    assert item_texts(items.to_dicts(), TEMPLATE) == item_texts(items, TEMPLATE)
    assert item_text(query_record("red boots", TEMPLATE), TEMPLATE) == "title: red boots"
    assert item_text(query_record("red boots", "{brand} {category}"), "{brand} {category}") == "red boots"
    with pytest.raises(ValueError, match="named fields"):
        item_texts(items, "{0} {title:>10}")


def test_import_records_its_template_and_renders_like_an_upsert(tmp_path):
    (tmp_path / "items.csv").write_text("sku,title,brand\ns1,Alpha,Acme\ns2,Beta,\n")
    (tmp_path / "events.csv").write_text("user,sku,ts\nu1,s1,1\nu1,s2,2\n")
    dataset = import_table(tmp_path / "events.csv", tmp_path / "items.csv", user_col="user", item_col="sku",
                           time_col="ts", item_id_col="sku", text_template=TEMPLATE)
    assert dataset.items["text"].to_list() == ["title: Alpha | brand: Acme", "title: Beta"]
    assert dataset.items["text"].to_list() == item_texts(
        [{"title": "Alpha", "brand": "Acme"}, {"title": "Beta", "brand": ""}], TEMPLATE)
    dataset.save(tmp_path / "ds")
    assert json.loads((tmp_path / "ds" / "schema.json").read_text())["text_template"] == TEMPLATE
    assert Dataset.load(tmp_path / "ds").text_template == TEMPLATE


class RecordingEncoder(ItemTower):
    """2-d fake item tower that remembers every text it was given."""

    dim = 2

    def __init__(self):
        self.texts = []

    def encode_texts(self, texts):
        self.texts += list(texts)
        return np.array([[1.0, 0.0] if "camera" in t.lower() else [0.0, 1.0] for t in texts], dtype=np.float32)


def test_upserts_and_text_queries_use_the_bundles_template(toy, tmp_path):
    bundle = Recommender.build(toy, split_dataset(toy), VECTORS, BuildConfig(),
                               {"text_template": TEMPLATE}).save(tmp_path / "toy" / "v1")
    encoder = RecordingEncoder()
    service = Service(Settings(state_dir=tmp_path / "state", admin_token=TOKEN),
                      item_encoder_loader=lambda loaded: encoder)
    with TestClient(create_app(bundle, service=service)) as client:
        item = {"item_id": "cam3", "text": "raw words", "title": "Camera Three", "brand": "Lumora"}
        assert client.put("/v1/admin/items/cam3", json=item, headers=ADMIN).status_code == 200
        assert client.get("/v1/items/cam3").json()["text"] == "title: Camera Three | brand: Lumora"
        # the toy catalogue has no brand attribute, but the template renders the field: kept (in the text), offered
        assert "brand" in client.get("/openapi.json").json()["components"]["schemas"]["ItemUpsert"]["properties"]
        plain = {"item_id": "bag3", "text": "a camera bag"}  # none of the template's fields: its text as given
        assert client.put("/v1/admin/items/bag3", json=plain, headers=ADMIN).status_code == 200
        assert client.post("/v1/sessions/recommendations", json={"text": "a camera", "k": 2}).status_code == 200
    assert encoder.texts == ["title: Camera Three | brand: Lumora", "a camera bag", "title: a camera"]


def test_a_bundle_encodes_imported_items_upserts_and_queries_through_one_rendering(tiny_bert_dir, tmp_path):
    """With the tiny BERT reading the words: an upsert rendering like an imported item (whatever its raw text) is
    that item's vector, one rendering a word apart is another, and a query of a title finds its item."""
    from jobs.workflows import build_bundle
    from recsys.config import EncoderConfig

    (tmp_path / "items.csv").write_text("sku,title,brand\ns1,black mirrorless camera,Lumora\ns2,camera bag brown,"
                                        "Nordvik\ns3,running shoe blue,\ns4,red tent,Fjellmark\n")
    (tmp_path / "events.csv").write_text("user,sku,ts\n" + "".join(
        f"u{u},s{(u + step) % 4 + 1},{step}\n" for u in range(6) for step in range(3)))
    dataset = import_table(tmp_path / "events.csv", tmp_path / "items.csv", user_col="user", item_col="sku",
                           time_col="ts", item_id_col="sku", text_template=TEMPLATE)
    config = BuildConfig(encoder=EncoderConfig(model=str(tiny_bert_dir), max_length=32))
    bundle, _, _ = build_bundle(dataset, config, tmp_path / "art", "tpl", progress=False)
    service = Service(Settings(state_dir=tmp_path / "state", admin_token=TOKEN, warm_similar_items=0))
    with TestClient(create_app(bundle, service=service)) as client:
        same = {"item_id": "same", "text": "other raw words", "title": "black mirrorless camera", "brand": "Lumora"}
        apart = {**same, "item_id": "apart", "brand": "Nordvik"}  # its rendering: one word apart
        for record in (same, apart):
            assert client.put(f"/v1/admin/items/{record['item_id']}", json=record, headers=ADMIN).status_code == 200
        recommender = client.app.state.service.current.recommender
        vectors = recommender.item_vectors[[recommender.item_position[i] for i in ("s1", "same", "apart")]]
        np.testing.assert_allclose(vectors[1], vectors[0], atol=1e-5)
        assert np.linalg.norm(vectors[2] - vectors[0]) > 1e-2
        listed = client.post("/v1/sessions/recommendations", json={"text": "running shoe blue", "k": 2}).json()
        assert listed["items"][0]["item_id"] == "s3"  # "title: running shoe blue", as s3 was imported: its vector
        first, second = (item["score"] for item in listed["items"])
        assert first == pytest.approx(1.0, abs=1e-5) and first > second + 1e-3
