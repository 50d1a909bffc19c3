"""The synthetic shop: deterministic, valid, streamable by chunks, and carrying the planted (text-learnable)
habits: complements, brand loyalty, price bands, browsing, a long tail."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import polars as pl
import pytest

import numpy as np

from recsys.data import Dataset, generate_shop
from recsys.data.dataset import validate
from recsys.data.shop_catalogue import TIERS, build_catalogue
from recsys.data.synthetic import CATEGORIES, START_2024, iter_interactions

CAMERA_ACCESSORIES = ["Lenses", "Camera Bags", "Memory Cards"]


@pytest.fixture(scope="module")
def shop() -> Dataset:
    return generate_shop()


def _with_next(shop: Dataset) -> pl.DataFrame:
    """Interactions in time order with the item's category/brand/price band and the user's next ones."""
    items = shop.items.select("item_id", "category", "brand",
                              tier=pl.col("text").str.extract(r"\. range: ([a-z-]+)"))
    return (shop.interactions.sort("user_id", "timestamp")
            .join(items, on="item_id", maintain_order="left")
            .with_columns(next_item=pl.col("item_id").shift(-1).over("user_id"),
                          next_category=pl.col("category").shift(-1).over("user_id"),
                          next_brand=pl.col("brand").shift(-1).over("user_id"),
                          next_tier=pl.col("tier").shift(-1).over("user_id")))


def test_default_shape_and_schema(shop: Dataset) -> None:
    assert shop.name == "synthetic-shop"
    assert shop.items.height == 900
    assert shop.n_users == 600
    assert shop.items.columns == ["item_id", "text", "title", "category", "brand", "price"]
    assert shop.items.schema["price"] == pl.Float64
    assert shop.interactions.columns == ["user_id", "item_id", "timestamp"]
    validate(shop.items, shop.interactions)
    assert shop.items["item_id"].n_unique() == 900
    assert shop.items["title"].n_unique() == 900  # every item is distinguishable by its text
    assert set(shop.items["category"]) == set(CATEGORIES)
    assert shop.items["price"].min() > 0
    per_user = shop.interactions.group_by("user_id").len()["len"]
    assert per_user.min() >= 3 and per_user.max() <= 30
    assert 3_000 < shop.interactions.height < 10_000
    assert "synthetic" in shop.report.notes[0]
    assert "synthetic" in generate_shop.__doc__.lower()


def test_text_is_title_category_brand_attributes(shop: Dataset) -> None:
    for row in shop.items.head(50).iter_rows(named=True):
        title, category, brand, attributes = row["text"].split(". ", 3)
        assert (title, category, brand) == (row["title"], row["category"], row["brand"])
        assert attributes.split(", ")[0] in {f"range: {tier}" for tier in TIERS}
        assert row["title"].startswith(row["brand"])


def test_timestamps_increase_per_user_from_2024(shop: Dataset) -> None:
    inter = shop.interactions
    assert inter["timestamp"].min() >= START_2024
    steps = inter.with_columns(d=pl.col("timestamp").diff().over("user_id"))["d"].drop_nulls()
    assert steps.min() >= 60  # strictly increasing, at least a minute apart, in file order


def test_deterministic_for_a_seed() -> None:
    a, b, c = generate_shop(120, 200, seed=7), generate_shop(120, 200, seed=7), generate_shop(120, 200, seed=8)
    assert a.items.equals(b.items) and a.interactions.equals(b.interactions)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert not a.interactions.equals(c.interactions)


def test_small_sizes_and_bad_arguments() -> None:
    small = generate_shop(n_users=5, n_items=40, seed=1, min_interactions=3, max_interactions=4)
    assert small.items.height == 40 and small.n_users == 5
    assert small.interactions.group_by("user_id").len()["len"].is_between(3, 4).all()
    with pytest.raises(ValueError, match="need n_items >= 32"):
        generate_shop(n_items=10)
    with pytest.raises(ValueError, match="1 <= min_interactions <= max_interactions"):
        generate_shop(min_interactions=5, max_interactions=4)
    for exponent in (-0.5, float("nan"), float("inf")):  # nan weights failed inside numpy's sampling
        with pytest.raises(ValueError, match=f"^zipf_exponent must be a finite number >= 0 .*, got {exponent!r}$"):
            generate_shop(n_users=5, n_items=40, zipf_exponent=exponent)
    with pytest.raises(ValueError, match="^seed must be a whole number >= 0, got -1$"):  # numpy's message named none
        generate_shop(n_users=5, n_items=40, seed=-1)


def test_default_generation_is_fast() -> None:
    started = time.perf_counter()
    generate_shop(seed=3)
    assert time.perf_counter() - started < 2.0


def test_complements_follow_their_main_product_in_its_brand_and_band(shop: Dataset) -> None:
    frame = _with_next(shop).filter(pl.col("next_category").is_not_null())
    cameras = frame.filter(pl.col("category") == "Cameras")
    followed = cameras["next_category"].is_in(CAMERA_ACCESSORIES)
    elsewhere = frame.filter(~pl.col("category").is_in(["Cameras", *CAMERA_ACCESSORIES]))
    chance = elsewhere["next_category"].is_in(CAMERA_ACCESSORIES).mean()
    assert cameras.height > 150
    assert followed.mean() > 0.45 and followed.mean() > 4 * chance, (followed.mean(), chance)
    accessory_rows = cameras.filter(followed)
    assert (accessory_rows["next_brand"] == accessory_rows["brand"]).mean() > 0.7  # 4 brands: chance ~0.25
    assert (accessory_rows["next_tier"] == accessory_rows["tier"]).mean() > 0.7  # 3 bands
    # after a camera's accessory, another one of that camera's accessories is likelier than after other items
    chain = frame.filter(pl.col("category").is_in(CAMERA_ACCESSORIES)
                         & (pl.col("category").shift(1).over("user_id") == "Cameras"))
    assert chain["next_category"].is_in(CAMERA_ACCESSORIES).mean() > 2 * chance
    for main, accessory in [("Laptops", "Laptop Sleeves"), ("Coffee Makers", "Coffee Beans")]:
        rows = frame.filter(pl.col("category") == main)
        assert (rows["next_category"] == accessory).mean() > 2 * (frame["next_category"] == accessory).mean()


def test_users_keep_their_price_band_and_brands(shop: Dataset) -> None:
    frame = _with_next(shop)
    per_user = frame.group_by("user_id").agg(pl.col("tier").mode().first().alias("band"), pl.len().alias("n"),
                                              (pl.col("tier") == pl.col("tier").mode().first()).mean().alias("share"))
    long = per_user.filter(pl.col("n") >= 10)
    assert long.height > 100 and long["share"].mean() > 0.6  # one band dominates (chance: about 0.4)
    assert set(per_user["band"]) == set(TIERS)
    # two consecutive items of one department share the brand far more often than 1 in 3-4
    depts = {c: spec.dept for c, spec in CATEGORIES.items()}
    pairs = frame.filter(pl.col("next_category").is_not_null()).with_columns(
        dept=pl.col("category").replace_strict(depts), next_dept=pl.col("next_category").replace_strict(depts))
    same_dept = pairs.filter(pl.col("dept") == pl.col("next_dept"))
    assert (same_dept["brand"] == same_dept["next_brand"]).mean() > 0.5


def test_browsing_and_a_long_tail(shop: Dataset) -> None:
    frame = _with_next(shop).filter(pl.col("next_category").is_not_null())
    same = (frame["next_category"] == frame["category"]).mean()
    assert same > 0.2  # 16 categories: chance is ~0.07
    counts = shop.interactions.group_by("item_id").len().sort("len", descending=True)["len"]
    assert counts[:45].sum() > 0.25 * shop.interactions.height  # top 5% of items: over a quarter of events
    assert shop.items.height - (counts > 2).sum() > 0.2 * shop.items.height  # a long tail: rarely or never bought


def test_chunks_are_independent_and_vectorised() -> None:
    catalogue = build_catalogue(120, np.random.default_rng(0))
    whole = list(iter_interactions(catalogue, 130, seed=4, chunk_users=50))
    assert [f["user_id"].n_unique() for f in whole] == [50, 50, 30]
    assert whole[2]["user_id"].min() == "U00101"
    alone = next(iter_interactions(catalogue, 50, seed=4, chunk_users=50))
    assert alone.equals(whole[0])  # a chunk depends on the seed and its index only
    started = time.perf_counter()
    big = pl.concat(iter_interactions(build_catalogue(2_000, np.random.default_rng(1)), 20_000, seed=1))
    assert big.height > 150_000 and time.perf_counter() - started < 10.0


def _hit_rate(shop: Dataset, use_last_item_text: bool, k: int = 10) -> float:
    """Leave-last-out next-item hit rate@k of popularity, or of a model that reads only the category and
    brand words from the last item's text (`text.split('. ')`) plus popularity."""
    inter = shop.interactions.sort("user_id", "timestamp")
    last = inter.group_by("user_id", maintain_order=True).agg(pl.col("item_id").tail(2))
    train = inter.filter(pl.int_range(pl.len()).over("user_id") < pl.len().over("user_id") - 1)
    words = {i: tuple(t.split(". ")[1:3]) for i, t in shop.items.select("item_id", "text").iter_rows()}
    pop = Counter(train["item_id"].to_list())
    ranked_pop = [i for i, _ in pop.most_common()]
    transitions: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for seq in train.group_by("user_id", maintain_order=True).agg("item_id")["item_id"].to_list():
        for a, b in zip(seq, seq[1:]):
            transitions[words[a]][words[b]] += 1
    hits = 0
    for prev, target in (pair for pair in last["item_id"].to_list()):
        if use_last_item_text:
            after = transitions[words[prev]]
            ranked = sorted(pop, key=lambda i: -(after[words[i]] + 0.1) * pop[i])[:k]
        else:
            ranked = ranked_pop[:k]
        hits += target in ranked
    return hits / last.height


def test_last_item_text_beats_popularity(shop: Dataset) -> None:
    popularity, text_aware = _hit_rate(shop, False), _hit_rate(shop, True)
    assert text_aware > 1.5 * popularity and text_aware - popularity > 0.05, (popularity, text_aware)


def test_streamed_shop_equals_the_in_memory_one(tmp_path) -> None:
    """`recsys import synthetic` writes chunk by chunk (bounded memory); the directory loads as exactly the
    dataset `generate_shop` makes, and schema.json's fingerprint is the loaded dataset's."""
    import json

    from recsys.data.shop_writer import write_shop

    summary = write_shop(tmp_path / "shop", n_users=250, n_items=300, seed=4)
    loaded = Dataset.load(tmp_path / "shop")
    expected = generate_shop(n_users=250, n_items=300, seed=4)
    assert loaded.items.equals(expected.items) and loaded.interactions.equals(expected.interactions)
    schema = json.loads((tmp_path / "shop" / "schema.json").read_text())
    assert schema["fingerprint"] == loaded.fingerprint() == expected.fingerprint()
    assert summary == {"name": "synthetic-shop", "n_items": 300, "n_users": 250,
                       "n_interactions": loaded.interactions.height, "has_split": False}
    # several chunks (one Parquet row group each): the digest fed chunk by chunk is the loaded dataset's
    chunked = write_shop(tmp_path / "chunked", n_users=250, n_items=300, seed=4, chunk_users=60)
    reloaded = Dataset.load(tmp_path / "chunked")
    assert json.loads((tmp_path / "chunked" / "schema.json").read_text())["fingerprint"] == reloaded.fingerprint()
    assert chunked["n_users"] == reloaded.n_users == 250


def test_event_count_sets_the_mean_sequence_length(tmp_path) -> None:
    from recsys.data.shop_writer import write_shop
    from recsys.data.synthetic import Behaviour, behaviour_for_events, mean_length

    assert mean_length(Behaviour()) == pytest.approx(9.81, abs=0.01)
    long = behaviour_for_events(1000, 50_000)
    assert mean_length(long) == pytest.approx(50.0) and long.max_interactions == 200
    summary = write_shop(tmp_path / "shop", n_users=2000, n_items=200, seed=0, n_events=30_000)
    assert summary["n_interactions"] == pytest.approx(30_000, rel=0.05)
    with pytest.raises(ValueError, match="below the minimum"):
        behaviour_for_events(1000, 2000)


def test_the_progress_bar_counts_a_small_shop_s_users_as_whole_numbers(tmp_path, capsys):
    """unit_scale wrote a shop of 1 user as '0.00/1.00' (scaled units are for 10k users and more)."""
    from recsys.data.shop_writer import write_shop

    write_shop(tmp_path / "one", n_users=1, n_items=30, seed=0, progress=True)
    said = capsys.readouterr().err
    assert "1/1" in said and "1.00" not in said, said
