"""One contract every tower implementation passes (in the style of `implicit`'s shared model tests).

UserTower: the zero-shot pool, trained BERT towers (sequence and history-as-text), the blend of both, and the
serving wrappers (query-vector cache, micro-batcher). ItemTower: the frozen BERT, a trained tower's text-only
path, the blended pair; each through the catalogue's item-text template (`TemplatedItemTower`)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from api.batching import MicroBatchingEncoder
from recsys.catalogue import Catalogue
from recsys.config import EncoderConfig, LoraConfig, TowerConfig, TrainConfig, UserTowerConfig
from recsys.data.item_text import item_texts
from recsys.towers import ItemTower, TemplatedItemTower, UserTower
from recsys.user_tower import CachedHistoryEncoder, PooledHistoryEncoder

DIM = 16
TEMPLATE = "title: {title} | category: {category}"
TITLES = ["black camera", "camera bag", "running shoe", "blue socks", "lens cap", "tripod", "rain jacket", "hat"]
HISTORIES = [["i0", "i1"], ["i2"], [], ["nope"], ["i3", "nope", "i4", "i5"], ["i7", "i6", "i7"]]


def catalogue_of(width: int, seed: int = 0) -> Catalogue:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(len(TITLES), width)).astype(np.float32)
    titles = TITLES if seed == 0 else TITLES[::-1]
    items = pl.DataFrame({"item_id": [f"i{n}" for n in range(len(TITLES))], "text": [f"{t} text" for t in titles],
                          "title": titles, "category": ["cameras"] * 2 + ["running"] * 2 + [None] * 4})
    return Catalogue(items, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


@pytest.fixture(scope="module")
def bert(tiny_bert_dir):
    from encoders.backbone import load_backbone
    from encoders.lora import attach_adapters
    from encoders.towers import AdaptedBert

    backbone, tokenizer = load_backbone(str(tiny_bert_dir))
    return AdaptedBert(attach_adapters(backbone, LoraConfig(top_layers=1)), 1).eval(), tokenizer


def trained(bert, mode: str = "sequence", width: int = DIM):
    from encoders.serving import TrainedUserTower
    from encoders.towers import TwoTowerModel

    model, tokenizer = bert
    tower = TowerConfig(user_tower=mode, dim=DIM, seq_layers=1, item_max_length=24)
    catalogue = catalogue_of(width)
    return TrainedUserTower(TwoTowerModel(model, len(TITLES), tower).eval(), TrainConfig(tower=tower), catalogue,
                            tokenizer, columns=slice(0, DIM))


def blended(bert, tiny_bert_dir):
    from encoders.blend import BlendedHistoryEncoder
    from encoders.text_encoder import TextEncoder

    inner = trained(bert, width=DIM + 8)
    frozen = TextEncoder.from_config(EncoderConfig(model=str(tiny_bert_dir)))
    projection = np.random.default_rng(1).normal(size=(8, frozen.dim)).astype(np.float32)
    pooled = PooledHistoryEncoder(inner.catalogue, UserTowerConfig(), slice(DIM, None))
    return BlendedHistoryEncoder(inner, pooled, 0.4, lambda: frozen, projection)


USER_TOWERS = ["pooled", "cached-pooled", "trained-sequence", "trained-text", "micro-batched-trained", "blended"]


@pytest.fixture(params=USER_TOWERS)
def user_tower(request, bert, tiny_bert_dir) -> UserTower:
    kind = request.param
    if kind == "pooled":
        tower = PooledHistoryEncoder(catalogue_of(DIM), UserTowerConfig())
    elif kind == "cached-pooled":
        tower = CachedHistoryEncoder(PooledHistoryEncoder(catalogue_of(DIM), UserTowerConfig()), maxsize=100)
    elif kind == "trained-sequence":
        tower = trained(bert)
    elif kind == "trained-text":
        tower = trained(bert, "text")
    elif kind == "micro-batched-trained":
        tower = MicroBatchingEncoder(trained(bert), max_wait_ms=1)
    else:
        tower = blended(bert, tiny_bert_dir)
    yield tower
    tower.close()


def test_query_vectors_have_the_catalogue_width_unit_norm_and_zero_rows_for_nothing_known(user_tower):
    out = user_tower.encode_histories(HISTORIES)
    assert out.dtype == np.float32 and out.shape == (len(HISTORIES), user_tower.dim)
    assert user_tower.dim == user_tower.catalogue.dim  # queries and items share one space
    known = [0, 1, 4, 5]
    norms = np.linalg.norm(out, axis=1)
    if user_tower.dim == DIM:  # (the blend's query is [unit trained vector, weight · unit pooled vector])
        np.testing.assert_allclose(norms[known], 1.0, rtol=1e-5)
    assert (norms[known] > 0).all() and not out[2].any() and not out[3].any()  # empty / unknown only: fallback
    assert isinstance(user_tower.cheap, bool)
    assert user_tower.item_tower() is None or isinstance(user_tower.item_tower(), ItemTower)


def test_a_batch_equals_one_history_at_a_time_and_repeats_are_stable(user_tower):
    batch = user_tower.encode_histories(HISTORIES)
    single = np.vstack([user_tower.encode_histories([h]) for h in HISTORIES])
    np.testing.assert_allclose(batch, single, atol=1e-5)
    np.testing.assert_allclose(user_tower.encode_histories(HISTORIES), batch, atol=1e-6)


def test_histories_read_the_live_catalogue(user_tower):
    catalogue = user_tower.catalogue
    assert not user_tower.encode_histories([["new"]]).any()
    vector = np.ones((1, catalogue.dim), np.float32) / np.sqrt(catalogue.dim)
    catalogue.upsert([{"item_id": "new", "text": "new hat", "title": "new hat"}], vector)
    assert user_tower.encode_histories([["new"]]).any()  # a new item counts at once
    catalogue.remove(["new"])
    assert not user_tower.encode_histories([["new"]]).any()  # a deleted one no longer does
    np.testing.assert_allclose(user_tower.encode_histories([["i0", "new"]]), user_tower.encode_histories([["i0"]]),
                               atol=1e-6)
    reference = user_tower.encode_histories([["i0", "i3"], ["i5"]])
    catalogue.compact()  # rows renumbered: the same answers
    np.testing.assert_allclose(user_tower.encode_histories([["i0", "i3"], ["i5"]]), reference, atol=1e-6)


def test_a_tower_rebound_to_another_catalogue_reads_that_one(user_tower):
    other = catalogue_of(user_tower.catalogue.dim, seed=7)
    rebound = user_tower.over(other)
    assert rebound.catalogue is other and rebound.dim == user_tower.dim
    assert not np.allclose(rebound.encode_histories([["i0", "i1"]]), user_tower.encode_histories([["i0", "i1"]]))
    if isinstance(user_tower, PooledHistoryEncoder):
        expected = other.state.vectors[[0, 1]].T @ np.array([0.7, 1.0], np.float32)
        np.testing.assert_allclose(rebound.encode_histories([["i0", "i1"]])[0], expected / np.linalg.norm(expected),
                                   atol=1e-6)
    rebound.close()


def test_closing_stops_background_work_and_encoding_still_works(user_tower):
    before = user_tower.encode_histories(HISTORIES[:2])
    user_tower.close()
    user_tower.close()
    np.testing.assert_allclose(user_tower.encode_histories(HISTORIES[:2]), before, atol=1e-6)


# ---- item towers ------------------------------------------------------------------------------------------
ITEM_TOWERS = ["frozen-bert", "trained-text-only", "blended"]
RECORDS = [{"item_id": "n1", "text": "a black camera bag", "title": "Camera bag", "category": "bags"},
           {"item_id": "n2", "text": "running socks", "title": "Socks"},
           {"item_id": "n3", "text": "no title at all"}]


@pytest.fixture(params=ITEM_TOWERS)
def item_tower(request, bert, tiny_bert_dir) -> ItemTower:
    if request.param == "frozen-bert":
        from encoders.text_encoder import TextEncoder

        return TextEncoder.from_config(EncoderConfig(model=str(tiny_bert_dir)))
    if request.param == "trained-text-only":
        return trained(bert).item_tower()
    return blended(bert, tiny_bert_dir).item_tower()


def test_item_vectors_have_the_towers_width(item_tower):
    vectors = item_tower.encode_texts(["a camera", "socks"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, item_tower.dim) and np.isfinite(vectors).all()
    assert item_tower.encode_texts([]).shape == (0, item_tower.dim)


def test_items_go_through_the_catalogues_item_text_template(item_tower):
    from encoders.blend import BlendedItemTower

    np.testing.assert_allclose(item_tower.encode_items(RECORDS),  # no template: the records' text as it is
                               item_tower.encode_texts([r["text"] for r in RECORDS]), atol=1e-6)
    templated = TemplatedItemTower(item_tower, TEMPLATE)
    rendered = item_texts(RECORDS, TEMPLATE)
    assert rendered == ["title: Camera bag | category: bags", "title: Socks", "no title at all"]
    vectors = templated.encode_items(RECORDS)
    np.testing.assert_allclose(vectors, item_tower.encode_texts(rendered), atol=1e-6)
    if isinstance(item_tower, BlendedItemTower):  # both blocks read the same rendered text
        np.testing.assert_allclose(vectors[:, :DIM], item_tower.trained.encode_texts(rendered), atol=1e-6)
        zero_shot = item_tower.blend.zero_shot_tower().encode_texts(rendered)
        np.testing.assert_allclose(vectors[:, DIM:], item_tower._zero_shot(zero_shot), atol=1e-6)
    np.testing.assert_allclose(templated.encode_query("a camera"), item_tower.encode_texts(["title: a camera"])[0],
                               atol=1e-6)
    # the same rendering is the same vector whichever way it came (a record, a query, a text), and renderings
    # that differ in a word are other vectors (all [UNK] read texts of as many tokens alike)
    queries = np.stack([templated.encode_query(t) for t in ("camera bag", "running socks")])
    np.testing.assert_allclose(queries, templated.encode_items([{"title": "camera bag"}, {"title": "running socks"}]),
                               atol=1e-6)
    assert np.linalg.norm(queries[0] - queries[1]) > 1e-2
    shoes = templated.encode_items([{**RECORDS[0], "category": "shoes"}])[0]
    assert np.linalg.norm(shoes - vectors[0]) > 1e-2


def test_a_trained_item_tower_encodes_records_like_the_training_catalogue(bert):
    """Training reads the dataset's text, rendered at import through its template (encoders.training); an upserted
    record rendered through the same template must land on the vector the same item would have had in the
    catalogue (text-only path: no ID embedding)."""
    import torch

    from encoders.item_bank import ItemTextCache

    tower = trained(bert)
    records = [*RECORDS, {**RECORDS[0], "item_id": "n4", "category": "shoes"}]  # n1's rendering, one word changed
    frame = pl.DataFrame(records, schema={"item_id": pl.Utf8, "text": pl.Utf8, "title": pl.Utf8, "category": pl.Utf8})
    cache = ItemTextCache(tower.model.bert, tower.tokenizer, item_texts(frame, TEMPLATE), 24, torch.device("cpu"))
    with torch.no_grad():
        catalogue = tower.model.text_only_vectors(cache.bank()).numpy()
    upserts = TemplatedItemTower(tower.item_tower(), TEMPLATE)
    np.testing.assert_allclose(upserts.encode_items(records), catalogue, atol=1e-5)
    distances = np.linalg.norm(catalogue[:, None] - catalogue[None], axis=-1)
    assert distances[~np.eye(len(records), dtype=bool)].min() > 1e-2  # four renderings: four vectors
