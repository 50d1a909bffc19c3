"""The numpy feature path equals the original Polars one (tests/polars_features.py) on random queries:
absolute and sequence time, unknown and repeated history items, empty histories and candidate lists."""

import numpy as np
import polars as pl
import pytest

from recsys.data.synthetic import generate_shop
from recsys.features import FeatureBuilder, FeatureConfig
from recsys.stats import InteractionStats, StatsConfig
from tests.polars_features import PolarsFeatureBuilder, PolarsStats


def _queries(items: list[str], rng: np.random.Generator, n: int, times: list[int]):
    """Random histories (oldest first) and candidate lists of catalogue items (as retrieval returns them)."""
    histories, candidates, scores, as_of = [], [], [], []
    for q in range(n):
        length = int(rng.integers(0, 14))
        history = rng.choice(items, length).tolist()  # repeats allowed
        if length and rng.random() < 0.2:
            history[int(rng.integers(length))] = "not-in-the-catalogue"
        width = 0 if q % 17 == 5 else int(rng.integers(1, 40))
        pool = [i for i in history if i in items] + rng.choice(items, width).tolist()  # some already consumed
        cands = list(dict.fromkeys(rng.choice(pool, width).tolist())) if width else []
        histories.append(history)
        candidates.append(cands)
        scores.append(sorted(rng.normal(size=len(cands)).tolist(), reverse=True))
        as_of.append(None if q % 7 == 3 else int(rng.choice(times)))
    return histories, candidates, scores, as_of


@pytest.mark.parametrize("mode,normalized_pairs,extended_pairs,block_similarity", [
    ("absolute", False, False, False), ("sequence", False, False, False), ("absolute", True, False, True),
    ("sequence", True, True, False)])
def test_numpy_features_equal_the_polars_features(mode, normalized_pairs, extended_pairs, block_similarity):
    shop = generate_shop(n_users=150, n_items=120, seed=4)
    interactions = shop.interactions
    if mode == "sequence":
        interactions = interactions.sort("user_id", "timestamp").with_columns(
            pl.int_range(pl.len()).over("user_id").alias("timestamp"))
    config = StatsConfig(time_mode=mode, recent_window=5 if mode == "sequence" else 7 * 86_400, pair_window=3)
    train = interactions.sample(fraction=0.8, seed=1)
    vectors = np.random.default_rng(0).normal(size=(shop.items.height, 12)).astype(np.float32)
    features = FeatureConfig(recent_items=3, sim_items=4, attr_items=6, normalized_pairs=normalized_pairs,
                             decay_items=5, decay=0.6, extended_pairs=extended_pairs,
                             block_similarity=block_similarity).for_towers(8)  # blocks of 8 and 4 columns
    ours = FeatureBuilder.from_frame(shop.items, vectors, InteractionStats.fit(train, config), features)
    reference = PolarsFeatureBuilder(shop.items, vectors, PolarsStats.fit(train, config), features)
    assert ours.names == reference.names and {"category_share", "brand_share", "price_log_ratio"} <= set(ours.names)

    rng = np.random.default_rng(7)
    items = shop.items["item_id"].to_list()
    times = interactions["timestamp"].to_list()
    histories, candidates, scores, as_of = _queries(items, rng, 300, times)
    got = ours.build(histories, candidates, scores, as_of)
    expected = reference.build(histories, candidates, scores, as_of)
    assert got.height == sum(map(len, candidates)) > 1000
    assert got.select("query", "item_id").equals(expected.select("query", "item_id"))
    for name in ours.names:
        a, b = got[name].to_numpy(), expected[name].cast(pl.Float64).to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)), name
        np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-6, atol=1e-6, err_msg=name)
    # the features vary: the comparison is not between two columns of constants
    assert got["trans_recent"].max() > 0 and got["consumed_count"].max() > 0 and got["pop_recent"].n_unique() > 3
    if normalized_pairs:
        assert got["cooc_cos_decay"].n_unique() > 3 and (got["cooc_cos_decay"] > got["cooc_cos_recent"]).any()
    if extended_pairs:
        assert got["trans_norm_decay"].max() > 0 and got["hist_pop_mean"].n_unique() > 3
    if block_similarity:
        assert {"sim_last_towers", "sim_max_text"} <= set(ours.names)
        assert (got["sim_last_text"] - got["sim_last_towers"]).abs().max() > 0.1  # two blocks, two scores


def test_stats_round_trip_through_the_bundle_files(tmp_path):
    shop = generate_shop(n_users=80, n_items=60, seed=2)
    stats = InteractionStats.fit(shop.interactions, StatsConfig(recent_window=86_400))
    stats.save(tmp_path)
    loaded = InteractionStats.load(tmp_path)
    codes = np.arange(-1, len(stats.item_ids))
    at = np.full(len(codes), int(shop.interactions["timestamp"].median()))
    assert np.array_equal(loaded.item_counts(codes, at), stats.item_counts(codes, at))
    src, dst = np.meshgrid(codes, codes)
    for table in ("transitions", "cooccurrence"):
        got = loaded.pair_counts(table, src.ravel(), dst.ravel(), np.full(src.size, 2**62))
        assert np.array_equal(got, stats.pair_counts(table, src.ravel(), dst.ravel(), np.full(src.size, 2**62)))
        assert got.sum() > 0
    assert loaded.config == stats.config and list(loaded.item_ids) == list(stats.item_ids)


def test_bundles_with_the_parquet_statistics_still_load(tmp_path):
    """Bundles written before the array format keep their Parquet tables; they load to the same counts."""
    shop = generate_shop(n_users=80, n_items=60, seed=2)
    config = StatsConfig(recent_window=86_400)
    legacy = PolarsStats.fit(shop.interactions, config)
    for name, frame in zip(("item_events", "transition_events", "cooccurrence_events"),
                           (legacy.items, legacy.transitions, legacy.cooccurrence)):
        frame.write_parquet(tmp_path / f"{name}.parquet")
    (tmp_path / "ranker_stats.json").write_text(config.model_dump_json())
    loaded, fresh = InteractionStats.load(tmp_path), InteractionStats.fit(shop.interactions, config)
    ids = shop.items["item_id"].to_list()
    at = np.full(len(ids), int(shop.interactions["timestamp"].quantile(0.7)))
    assert np.array_equal(loaded.item_counts(loaded.codes(ids), at), fresh.item_counts(fresh.codes(ids), at))
    src, dst = np.repeat(ids[:30], 30).tolist(), ids[:30] * 30
    at = np.full(len(src), at[0])
    for table in ("transitions", "cooccurrence"):
        assert np.array_equal(loaded.pair_counts(table, loaded.codes(src), loaded.codes(dst), at),
                              fresh.pair_counts(table, fresh.codes(src), fresh.codes(dst), at))


def test_pair_counts_built_range_by_range_equal_one_pass(monkeypatch):
    """The bounded-memory fit counts pairs one range of source items at a time; many small ranges give the
    same tables as one."""
    import recsys.stats_fit as stats_fit

    shop = generate_shop(n_users=120, n_items=90, seed=5)
    config = StatsConfig(recent_window=86_400)
    whole = InteractionStats.fit(shop.interactions, config)
    monkeypatch.setattr(stats_fit, "PAIR_EVENTS_PER_RANGE", 97)
    ranged = InteractionStats.fit(shop.interactions, config)
    for name in ("transitions", "cooccurrence"):
        a, b = getattr(whole, name), getattr(ranged, name)
        assert np.array_equal(a.pairs, b.pairs) and np.array_equal(a.table.composite, b.table.composite)
        assert np.array_equal(a.table.cum, b.table.cum) and np.array_equal(a.table.total, b.table.total)
    assert len(whole.cooccurrence.pairs) > 200


def test_stats_load_memory_mapped_and_the_npz_format_still_loads(tmp_path):
    shop = generate_shop(n_users=80, n_items=60, seed=2)
    stats = InteractionStats.fit(shop.interactions, StatsConfig(recent_window=86_400))
    stats.save(tmp_path / "new")
    loaded = InteractionStats.load(tmp_path / "new")
    assert isinstance(loaded.cooccurrence.table.composite, np.memmap)  # not read until searched
    # the previous format: one .npz of event rows (real times), rebuilt on load
    arrays = {"item_ids": stats.item_ids, "times": stats.times}
    keys, ranks, cum = stats.items.rows()
    arrays.update({"items.key": keys, "items.t": stats.times[ranks], "items.cum": cum})
    for name in ("transitions", "cooccurrence"):
        src, dst, ranks, cum = getattr(stats, name).rows()
        arrays.update({f"{name}.src": src, f"{name}.dst": dst, f"{name}.t": stats.times[ranks], f"{name}.cum": cum})
    (tmp_path / "old").mkdir()
    np.savez(tmp_path / "old" / "ranker_stats.npz", **arrays)
    (tmp_path / "old" / "ranker_stats.json").write_text(stats.config.model_dump_json())
    old = InteractionStats.load(tmp_path / "old")
    codes = np.arange(-1, len(stats.item_ids))
    at = np.full(len(codes), int(shop.interactions["timestamp"].median()))
    assert np.array_equal(old.item_counts(codes, at), loaded.item_counts(codes, at))
    src, dst = np.meshgrid(codes, codes)
    for table in ("transitions", "cooccurrence"):
        when = np.full(src.size, int(shop.interactions["timestamp"].quantile(0.6)))
        assert np.array_equal(old.pair_counts(table, src.ravel(), dst.ravel(), when),
                              loaded.pair_counts(table, src.ravel(), dst.ravel(), when))
