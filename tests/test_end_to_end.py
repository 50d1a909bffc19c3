"""Import a slice of amazon-scientific, build a bundle, evaluate it, query the API."""

import polars as pl
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from jobs.workflows import build_bundle
from recsys.config import BuildConfig, EncoderConfig, EvalConfig
from recsys.data.dataset import Dataset
from recsys.data.importers import import_recbole_sequential
from tests.conftest import SHARED_DATA

SCIENTIFIC = SHARED_DATA / "amazon-scientific"


@pytest.mark.skipif(not SCIENTIFIC.is_dir(), reason="benchmark data not present")
def test_scientific_slice_end_to_end(tmp_path, tiny_bert_dir):
    full = import_recbole_sequential(SCIENTIFIC, attributes="auto")
    users = full.interactions["user_id"].unique(maintain_order=True).head(300)
    interactions = full.interactions.filter(pl.col("user_id").is_in(users.implode()))
    items = full.items.filter(pl.col("item_id").is_in(interactions["item_id"].unique().implode()))
    dataset = Dataset("scientific-slice", items, interactions)
    config = BuildConfig(encoder=EncoderConfig(model=str(tiny_bert_dir)), eval=EvalConfig(ks=(10, 50)))

    bundle, rows, _ = build_bundle(dataset, config, tmp_path / "artifacts", "slice", progress=False)

    by_model = {(r["model"], r["split"]): r for r in rows}
    assert by_model[("bundle", "test")]["n_examples"] == 300
    assert 0.0 <= by_model[("bundle", "test")]["ndcg@10"] <= by_model[("bundle", "test")]["recall@10"] <= 1.0
    assert by_model[("popularity", "test")]["recall@50"] > 0.0
    user = users[0]
    with TestClient(create_app(bundle, Settings(state_dir=tmp_path / "state"))) as client:
        body = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
        history = set(interactions.filter(pl.col("user_id") == user)["item_id"])
        assert body["strategy"] == "personalised" and len(body["items"]) == 5
        assert not history & {i["item_id"] for i in body["items"]}
        similar = client.get(f"/v1/items/{items['item_id'][0]}/similar", params={"k": 3}).json()
        assert len(similar["items"]) == 3
        # category and brand come from the texts' "<title>. <category>. <brand>." layout, so lists filter on them
        brand = items["brand"].value_counts(sort=True)["brand"][0]
        same_brand = set(items.filter(pl.col("brand") == brand)["item_id"]) - history
        body = client.get(f"/v1/users/{user}/recommendations", params={"k": 5, "brand": brand}).json()
        assert {i["item_id"] for i in body["items"]} <= same_brand and body["items"]
