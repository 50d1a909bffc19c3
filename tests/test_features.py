"""Re-ranker features: hand-computed values on a tiny history, and no read at or after the query time."""

import math

import numpy as np
import polars as pl
import pytest

from recsys.data.dataset import Dataset
from recsys.data.synthetic import generate_shop
from recsys.features import FeatureBuilder, FeatureConfig
from recsys.ranker import RankerConfig
from recsys.ranker_training import fit_training_stats
from recsys.splits import split_dataset
from recsys.stats import InteractionStats, StatsConfig, is_sequence_time

ITEMS = pl.DataFrame({"item_id": ["a", "b", "c", "d"], "text": ["a", "b", "c", "d"],
                      "category": ["x", "x", "y", "y"], "price": [10.0, 30.0, 20.0, None]})
VECTORS = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)
TRAIN = pl.DataFrame({"user_id": ["u1", "u1", "u1", "u2", "u2", "u3", "u3"],
                      "item_id": ["a", "b", "c", "a", "b", "b", "c"],
                      "timestamp": [1, 2, 3, 4, 5, 6, 7]})


def test_features_equal_hand_computed_values():
    stats = InteractionStats.fit(TRAIN, StatsConfig(time_mode="absolute", recent_window=3, pair_window=2))
    builder = FeatureBuilder.from_frame(ITEMS, VECTORS, stats, FeatureConfig(recent_items=2))
    frame = builder.build([["a", "b"]], [["c", "a", "d"]], [[0.9, 0.5, 0.1]], as_of=[6])
    got = {row["item_id"]: row for row in frame.iter_rows(named=True)}
    s = 1 / math.sqrt(2)
    # events strictly before t=6: u1 a@1 b@2 c@3, u2 a@4 b@5 (u3's b@6, c@7 are not visible)
    expected = {
        "c": dict(retrieval_rank=0, retrieval_gap=0.0, pop_all=1, pop_recent=1, pop_trend=2.0, hist_len=2,
                  sim_last=s, sim_max=s, sim_mean=s, trans_last=1, trans_last_norm=1 / 3, trans_recent=1,
                  cooc_recent=2, cooc_max=1, consumed_count=0, consumed_steps_ago=None,
                  category_match_last=0, category_share=0, price_log_ratio=0.0),
        "a": dict(retrieval_rank=1, retrieval_gap=-0.4, pop_all=2, pop_recent=1, pop_trend=1.0, hist_len=2,
                  sim_last=0.0, sim_max=1.0, sim_mean=0.5, trans_last=0, trans_last_norm=0, trans_recent=0,
                  cooc_recent=2, cooc_max=2, consumed_count=1, consumed_steps_ago=1,
                  category_match_last=1, category_share=1, price_log_ratio=math.log(10 / 20)),
        "d": dict(retrieval_rank=2, retrieval_gap=-0.8, pop_all=0, pop_recent=0, pop_trend=1.0, hist_len=2,
                  sim_last=0.0, sim_max=0.0, sim_mean=-0.5, trans_last=0, trans_last_norm=0, trans_recent=0,
                  cooc_recent=0, cooc_max=0, consumed_count=0, consumed_steps_ago=None,
                  category_match_last=0, category_share=0, price_log_ratio=None),
    }
    assert frame["item_id"].to_list() == ["c", "a", "d"] and frame.columns[2:] == builder.names
    assert "brand_share" not in builder.names  # no brand column in this catalogue
    for item, values in expected.items():
        for name, value in values.items():
            assert got[item][name] == (None if value is None else pytest.approx(value, abs=1e-6)), (item, name)
    # "because you bought": the most similar other history item (ties → the most recent)
    assert builder.closest_history(["a", "b"], ["c", "d", "a"]) == [
        ("b", pytest.approx(s)), ("b", pytest.approx(0.0)), ("b", pytest.approx(0.0))]


def test_block_similarity_features_equal_hand_computed_cosines_within_each_block():
    stats = InteractionStats.fit(TRAIN, StatsConfig(time_mode="absolute", recent_window=3, pair_window=2))
    text_block = np.array([[0, 1], [0, 2], [1, 0], [3, 4]], dtype=np.float32)  # a, b alike; d at 0.8 to both
    blended = np.hstack([VECTORS, text_block])
    config = FeatureConfig(recent_items=2, block_similarity=True).for_towers(2)
    builder = FeatureBuilder.from_frame(ITEMS, blended, stats, config)
    frame = builder.build([["a", "b"]], [["c", "a", "d"]], [[0.9, 0.5, 0.1]], as_of=[6])
    s = 1 / math.sqrt(2)
    got = {row["item_id"]: row for row in frame.iter_rows(named=True)}
    expected = {"c": dict(sim_last_towers=s, sim_max_towers=s, sim_last_text=0.0, sim_max_text=0.0),
                "a": dict(sim_last_towers=0.0, sim_max_towers=1.0, sim_last_text=1.0, sim_max_text=1.0),
                "d": dict(sim_last_towers=0.0, sim_max_towers=0.0, sim_last_text=0.8, sim_max_text=0.8)}
    for item, values in expected.items():
        for name, value in values.items():
            assert got[item][name] == pytest.approx(value, abs=1e-6), (item, name)
    # the whole-vector cosines are those of the concatenation, as without the blocks
    assert got["d"]["sim_last"] == pytest.approx(float(blended[3] @ blended[1] / np.linalg.norm(blended[3])
                                                       / np.linalg.norm(blended[1])), abs=1e-6)
    assert builder.build([[]], [["c"]], [[0.9]], as_of=[6])["sim_max_text"].to_list() == [None]  # no history
    # off unless asked for and the catalogue is blended; a block as wide as the vectors is refused
    plain_names = FeatureBuilder.from_frame(ITEMS, blended, stats, FeatureConfig()).names
    assert FeatureConfig().for_towers(2).trained_dim is None
    assert FeatureBuilder.from_frame(ITEMS, blended, stats, FeatureConfig(block_similarity=True)).names == plain_names
    assert builder.names == [*plain_names[:-3], "sim_last_towers", "sim_max_towers", "sim_last_text", "sim_max_text",
                             *plain_names[-3:]]
    with pytest.raises(ValueError, match="leaves no zero-shot block"):
        FeatureBuilder.from_frame(ITEMS, blended, stats, FeatureConfig(block_similarity=True).for_towers(4))


def test_attribute_groups_can_be_chosen_and_unknown_ones_are_refused():
    stats = InteractionStats.fit(TRAIN, StatsConfig(time_mode="absolute", recent_window=3, pair_window=2))
    items = ITEMS.with_columns(pl.Series("brand", ["p", "q", "p", None]))
    everything = FeatureBuilder.from_frame(items, VECTORS, stats, FeatureConfig())
    only_brand = FeatureBuilder(everything.catalogue, stats, FeatureConfig(attributes=["brand"]))  # shared arrays
    other_stats = InteractionStats.fit(TRAIN, StatsConfig(time_mode="absolute", recent_window=3, pair_window=2))
    own_arrays = FeatureBuilder(everything.catalogue, other_stats, FeatureConfig(attributes=["brand"]))
    assert own_arrays.names == only_brand.names
    np.testing.assert_array_equal(own_arrays.matrix([["a", "b"]], [["c", "d"]], [[0.9, 0.1]], as_of=[6]),
                                  only_brand.matrix([["a", "b"]], [["c", "d"]], [[0.9, 0.1]], as_of=[6]))
    assert everything.names[-5:] == ["category_match_last", "category_share", "brand_match_last", "brand_share",
                                     "price_log_ratio"]
    assert only_brand.names == [n for n in everything.names if not n.startswith(("category", "price"))]
    got = only_brand.build([["a", "b"]], [["c", "d"]], [[0.9, 0.1]], as_of=[6])
    assert got["brand_match_last"].to_list() == [0.0, None]  # c is p, the last item b is q; d has no brand
    assert got["brand_share"].to_list() == [0.5, 0.0]
    assert everything.build([["a", "b"]], [["c", "d"]], [[0.9, 0.1]], as_of=[6])["category_share"].to_list() == \
        [0.0, 0.0]  # the catalogue's own arrays still carry every group
    # a live upsert: the chosen groups follow the catalogue's new version (a brand seen before keeps its code)
    everything.catalogue.upsert([{"item_id": "e", "text": "e", "brand": "q"}], np.array([[0.0, 1.0]], np.float32))
    got = only_brand.build([["a", "b"]], [["e", "c"]], [[0.9, 0.1]], as_of=[6])
    assert got["brand_match_last"].to_list() == [1.0, 0.0] and "category_share" not in got.columns
    with pytest.raises(ValueError, match="unknown attribute feature groups"):
        FeatureConfig(attributes=["colour"])


def test_a_query_without_a_time_is_asked_just_after_the_last_event_so_recent_counts_are_live():
    """Serving passes no time: the query is at the statistics' end (t=8 here), not at the end of time, where
    nothing would be recent and every candidate's pop_recent / pop_trend would be the same constant."""
    stats = InteractionStats.fit(TRAIN, StatsConfig(time_mode="absolute", recent_window=3, pair_window=2))
    assert stats.end_time == 8 and stats.query_time(None) == 8 and stats.query_time(5) == 5
    builder = FeatureBuilder.from_frame(ITEMS, VECTORS, stats, FeatureConfig(recent_items=2))
    served = builder.build([["a", "b"]], [["c", "a", "d"]], [[0.9, 0.5, 0.1]])
    # every event counts; recent = [5, 8): b@5, b@6, c@7; the window before = [2, 5): b@2, c@3, a@4
    assert served["pop_all"].to_list() == [2, 2, 0]
    assert served["pop_recent"].to_list() == [1, 0, 0]
    assert served["pop_trend"].to_list() == pytest.approx([1.0, 0.5, 1.0])
    assert served.equals(builder.build([["a", "b"]], [["c", "a", "d"]], [[0.9, 0.5, 0.1]], as_of=[8]))


def test_normalized_pair_features_equal_hand_computed_values():
    stats = InteractionStats.fit(TRAIN, StatsConfig(time_mode="absolute", recent_window=3, pair_window=2))
    config = FeatureConfig(recent_items=2, normalized_pairs=True, decay_items=3, decay=0.5)
    builder = FeatureBuilder.from_frame(ITEMS, VECTORS, stats, config)
    frame = builder.build([["a", "b"]], [["c", "a", "d"]], [[0.9, 0.5, 0.1]], as_of=[6])
    got = {row["item_id"]: row for row in frame.iter_rows(named=True)}
    # before t=6: counts a 2, b 2, c 1, d 0 (+1 each below); transitions a→b 2, b→c 1; co-occurrence within
    # 2 steps, both directions: a–b 2, b–c 1, a–c 1. History newest first: b, a (then nothing)
    expected = {"c": (2 / math.sqrt(3 * 2), 1 / 3, (1 + 0.5) / math.sqrt(3 * 2)),
                "a": (2 / math.sqrt(3 * 3), 0.0, 2 / math.sqrt(3 * 3)),
                "d": (0.0, 0.0, 0.0)}
    names = ("cooc_cos_recent", "trans_norm_recent", "cooc_cos_decay")
    assert builder.names[:len(builder.names) - 3][-3:] == list(names)  # before the attribute features
    for item, values in expected.items():
        assert tuple(got[item][n] for n in names) == pytest.approx(values, abs=1e-9), item
    plain = FeatureBuilder.from_frame(ITEMS, VECTORS, stats, FeatureConfig(recent_items=2, normalized_pairs=False))
    assert not set(names) & set(plain.names)
    base = plain.build([["a", "b"]], [["c", "a", "d"]], [[0.9, 0.5, 0.1]], as_of=[6])
    assert frame.select(plain.names).equals(base.select(plain.names))  # the other features are unchanged
    # the extended group (off by default): transitions per source event, decayed; the best cosine; the history's
    # mean log count (b and a: 2 events each before t=6)
    extended = FeatureBuilder.from_frame(ITEMS, VECTORS, stats, config.model_copy(update={"extended_pairs": True}))
    rows = {r["item_id"]: r for r in extended.build([["a", "b"]], [["c", "a", "d"]], [[0.9, 0.5, 0.1]],
                                                    as_of=[6]).iter_rows(named=True)}
    for item, values in {"c": (1 / 3, 1 / math.sqrt(6)), "a": (0.0, 2 / 3), "d": (0.0, 0.0)}.items():
        assert (rows[item]["trans_norm_decay"], rows[item]["cooc_cos_max"]) == pytest.approx(values, abs=1e-9), item
        assert rows[item]["hist_pop_mean"] == pytest.approx(math.log(3))
    with pytest.raises(ValueError, match="extended_pairs needs normalized_pairs"):
        FeatureConfig(normalized_pairs=False, extended_pairs=True)


def _shop() -> Dataset:
    return generate_shop(n_users=120, n_items=150, seed=3)


def test_no_feature_reads_at_or_after_the_query_time():
    """Features from stats over ALL interactions (label and future included) at as_of=t must equal
    features from stats fit on the interactions strictly before t; reading the label would differ."""
    shop = _shop()
    examples = split_dataset(shop).valid.head(25)
    config = StatsConfig(time_mode="absolute", recent_window=7 * 86_400, pair_window=3)
    everything = InteractionStats.fit(shop.interactions, config)
    vectors = np.random.default_rng(0).normal(size=(shop.items.height, 8)).astype(np.float32)
    full = FeatureBuilder.from_frame(shop.items, vectors, everything, FeatureConfig())
    rng = np.random.default_rng(1)
    ids = shop.items["item_id"].to_list()
    changed_when_leaking = 0
    for row in examples.iter_rows(named=True):
        t, history = row["timestamp"], row["history"]
        candidates = [row["target"], *rng.choice(ids, 30, replace=False).tolist()]
        scores = sorted(rng.random(len(candidates)).tolist(), reverse=True)
        past = InteractionStats.fit(shop.interactions.filter(pl.col("timestamp") < t), config)
        expected = FeatureBuilder.from_frame(shop.items, vectors, past, FeatureConfig()).build(
            [history], [candidates], [scores], as_of=[t])
        got = full.build([history], [candidates], [scores], as_of=[t])
        assert got.equals(expected), row["user_id"]
        leaked = full.build([history], [candidates], [scores], as_of=[t + 1])  # would see the label itself
        changed_when_leaking += not leaked.equals(expected)
    assert changed_when_leaking == len(examples)  # the check has teeth: the label event is in `everything`


def test_training_stats_ignore_valid_and_test_interactions():
    """Sequence-position data (no clock): training statistics come from the train split only, so
    rewriting every valid/test interaction leaves the valid step's features unchanged."""
    shop = _shop()
    positions = shop.interactions.sort("user_id", "timestamp").with_columns(
        pl.int_range(pl.len()).over("user_id").alias("timestamp"))
    assert is_sequence_time(positions)
    split = split_dataset(Dataset("seq", shop.items, positions))
    other = shop.items["item_id"][0]
    n = pl.len().over("user_id")
    tampered = positions.with_columns(pl.when(pl.int_range(pl.len()).over("user_id") >= n - 2)
                                      .then(pl.lit(other)).otherwise(pl.col("item_id")).alias("item_id"))
    split_tampered = split_dataset(Dataset("seq", shop.items, tampered))
    config = RankerConfig()
    vectors = np.random.default_rng(0).normal(size=(shop.items.height, 8)).astype(np.float32)
    frames = []
    for s in (split, split_tampered):
        stats = fit_training_stats(s, config)
        assert stats.config.time_mode == "sequence"
        valid = split.valid.head(40)  # the untampered histories and candidates
        candidates = [[t, *shop.items["item_id"][:20].to_list()] for t in valid["target"].to_list()]
        frames.append(FeatureBuilder.from_frame(shop.items, vectors, stats, config.features).build(
            valid["history"].to_list(), candidates, [list(range(21, 0, -1))] * valid.height,
            valid["timestamp"].to_list()))
    assert frames[0].equals(frames[1])


@pytest.mark.parametrize("whole_table_search", [True, False])
def test_pair_lookups_by_query_block_equal_the_row_by_row_lookups(monkeypatch, whole_table_search):
    """Both lookup paths: one vectorised search of the whole table (small tables) and the per-source slices."""
    from recsys import count_tables
    from recsys.count_tables import PairCounts

    monkeypatch.setattr(count_tables, "GLOBAL_SEARCH_PAIRS", 10**9 if whole_table_search else 0)

    rng = np.random.default_rng(7)
    n_items, n_pairs = 50, 400
    src, dst = rng.integers(0, n_items, n_pairs), rng.integers(0, n_items, n_pairs)
    src[3], dst[3] = 1, n_items - 1  # code 1·n + n-1 is also what source 2 with an unknown candidate (-1) computes
    pairs = PairCounts.build(src, dst, rng.integers(0, 30, n_pairs), np.ones(n_pairs, np.int64), n_items, 31)
    lengths = np.array([5, 0, 12, 1, 30])                         # an empty block too
    starts = np.cumsum(lengths) - lengths
    query = np.repeat(np.arange(len(lengths)), lengths)
    sources = rng.integers(-1, n_items, (len(lengths), 4))        # -1: a history slot without a known item
    candidates = rng.integers(-1, n_items, lengths.sum())         # -1: a candidate without training events
    candidates[:3] = dst[:3]                                       # some pairs that occurred
    sources[0, :3] = src[:3]
    sources[2, 0], candidates[5] = 2, -1                          # row 5 is query 2's first: must not match (1, n-1)
    blocks = pairs.pair_number_blocks(sources, candidates, starts, lengths)
    rows = pairs.pair_number(sources[query], np.broadcast_to(candidates[:, None], (len(candidates), 4)))
    np.testing.assert_array_equal(blocks, rows)
    assert (blocks[np.arange(3), np.arange(3)] >= 0).all() and (blocks == -1).any()
    assert blocks[5, 0] == -1


def test_candidate_rows_are_used_only_while_the_catalogue_is_unchanged():
    """The pipeline passes its candidates' catalogue rows along: while the catalogue is the one they index, the
    matrix built from them equals the one built from the ids; after a change (a compaction renumbers rows) they
    are ignored and the ids are looked up again."""
    from recsys.catalogue import CandidateRows

    stats = InteractionStats.fit(TRAIN, StatsConfig(time_mode="absolute", recent_window=3, pair_window=2))
    builder = FeatureBuilder.from_frame(ITEMS, VECTORS, stats, FeatureConfig(recent_items=2))
    state = builder.catalogue.state
    histories, candidates, scores = [["a", "b"], ["c"]], [["c", "a", "d"], ["b", "d"]], [[0.9, 0.5, 0.1], [0.3, 0.2]]
    rows = CandidateRows(state, [state.rows(c) for c in candidates])
    by_ids = builder.matrix(histories, candidates, scores, [6, 6])
    np.testing.assert_array_equal(builder.matrix(histories, candidates, scores, [6, 6], rows), by_ids)
    wrong = CandidateRows(state, [np.array([3, 3, 3]), np.array([3, 3])])  # every candidate as row 3 ("d")
    assert not np.array_equal(builder.matrix(histories, candidates, scores, [6, 6], wrong), by_ids)
    builder.catalogue.remove(["a"])
    builder.catalogue.compact()  # rows renumbered: "b" is now row 0
    assert builder.catalogue.state is not state and wrong.valid_in(builder.catalogue.state) is None
    now = builder.matrix([["b"]], [["c", "d"]], [[0.9, 0.1]], [6], wrong)
    np.testing.assert_array_equal(now, builder.matrix([["b"]], [["c", "d"]], [[0.9, 0.1]], [6]))
