"""Lists a shop can show: near-duplicate collapsing, MMR, and the beyond-accuracy metrics."""

import numpy as np
import pytest

from recsys.config import BuildConfig, DiversifyConfig, EvalConfig
from recsys.diversify import OFF, active, diversified_picks, diversify_order, diversify_picks
from recsys.evaluation import ListReference, evaluate
from recsys.metrics import catalogue_coverage, intra_list_diversity
from recsys.pipeline import Recommender
from recsys.splits import split_dataset


def unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


# three pack sizes of one product (near-identical vectors), then two different products
PACKS = unit([[1.0, 0.0, 0.0], [0.999, 0.04, 0.0], [0.998, 0.06, 0.0], [0.6, 0.8, 0.0], [0.5, 0.0, 0.87]])
SCORES = np.array([[0.9, 0.89, 0.88, 0.7, 0.6]])


def test_an_item_deleted_since_retrieval_is_never_picked():
    """A list retrieved before a deletion and a compaction can name an item the catalogue no longer has: it is
    left out (the list is one shorter), not looked up."""
    position = {"a": 0, "b": 1, "d": 3, "e": 4}  # "c" is gone
    config = DiversifyConfig(weight=0.3)
    picks = diversified_picks([["a", "b", "c", "d", "e"]], SCORES.tolist(), PACKS, position, 5, config)
    assert len(picks[0]) == 4 and 2 not in picks[0] and picks[0][0] == 0
    assert diversified_picks([["c"]], [[0.9]], PACKS, position, 3, config) == [[]]


def test_off_keeps_the_relevance_order_and_pads_last():
    order = diversify_order(np.array([[0.2, 0.9, -np.inf, 0.5]]), unit(np.eye(4)[None]), 2, OFF)
    assert order.tolist() == [[1, 3, 0, 2]]
    config = DiversifyConfig(weight=0.5)
    assert diversify_order(np.array([[0.2, 0.9, -np.inf, 0.5]]), unit(np.eye(4)[None]), 4, config)[0, -1] == 2


def test_near_duplicates_go_behind_the_other_products():
    order = diversify_order(SCORES, PACKS[None], 3, DiversifyConfig(duplicate_threshold=0.99))
    assert order[0, :3].tolist() == [0, 3, 4]  # one pack size, then the two other products
    assert sorted(order[0].tolist()) == [0, 1, 2, 3, 4]


def test_mmr_weight_trades_relevance_for_novelty():
    relevance_only = diversify_order(SCORES, PACKS[None], 3, DiversifyConfig(weight=0.0, duplicate_threshold=1.0))
    assert relevance_only[0, :3].tolist() == [0, 1, 2]
    light = diversify_order(SCORES, PACKS[None], 3, DiversifyConfig(weight=0.1))
    strong = diversify_order(SCORES, PACKS[None], 3, DiversifyConfig(weight=0.8))
    assert light[0, :3].tolist() == [0, 1, 2]  # relevance gaps outweigh a light penalty
    assert strong[0, :3].tolist() == [0, 4, 3]  # the least similar product first, then the other


def test_intra_list_diversity_and_coverage():
    vectors = unit([[1, 0], [0, 1], [1, 0], [1, 1]])
    lists = [np.array([0, 1]), np.array([0, 2, 3])]
    # list 1: 1 - cos(0,1) = 1; list 2: pairs (0,2) 0, (0,3) and (2,3) 1 - 0.7071 each
    expected = np.mean([1.0, (0 + 2 * (1 - 1 / np.sqrt(2))) / 3])
    assert intra_list_diversity(lists, vectors, k=3) == pytest.approx(expected)
    assert intra_list_diversity([np.array([1])], vectors, k=3) == 0.0
    assert catalogue_coverage(lists, 5, k=2) == pytest.approx(3 / 5)


def test_shown_lists_are_diversified_everywhere(toy):
    # cam1/cam2 near-identical, bags close to cameras, shoes and socks far away
    vectors = unit([[1, 0], [0.999, 0.045], [0.8, 0.6], [0.7, 0.71], [0, 1], [0.1, 0.99]]).astype(np.float32)
    split = split_dataset(toy)
    assert active(BuildConfig().diversify)  # on by default
    plain = Recommender.build(toy, split, vectors, BuildConfig(diversify=OFF))
    config = BuildConfig(diversify=DiversifyConfig(duplicate_threshold=0.99))
    shown = Recommender.build(toy, split, vectors, config)
    assert plain.similar_items("bag1", k=3).item_ids == ["bag2", "cam2", "cam1"]
    assert shown.similar_items("bag1", k=3).item_ids == ["bag2", "cam2", "sock1"]  # cam1 is a duplicate of cam2
    assert shown.similar_items("bag1", k=3, diversify=False).item_ids == ["bag2", "cam2", "cam1"]
    assert plain.recommend_batch([["bag1"]], 3, exclude_seen=True)[0].item_ids == ["bag2", "cam2", "cam1"]
    listed = shown.recommend_batch([["bag1"]], 3, exclude_seen=True)[0]
    assert listed.item_ids == ["bag2", "cam2", "sock1"] and len(listed.scores) == 3
    reference = ListReference(toy.items["item_id"].to_list(), vectors, k=3)
    examples = split.test
    before = evaluate(plain, examples, EvalConfig(ks=(3,)), reference)
    after = evaluate(shown, examples, EvalConfig(ks=(3,)), reference)
    assert after["ild@3"] > before["ild@3"] and {"recall@3", "coverage@3"} <= set(after)


def test_a_product_pages_own_item_counts_as_shown():
    # the page's item is PACKS[0]: its pack-size variants (rows 0-1 here) go behind the other products
    candidates, scores = PACKS[1:][None], SCORES[:, 1:]
    config = DiversifyConfig(duplicate_threshold=0.99)
    assert diversify_picks(scores, candidates, 2, config).tolist() == [[0, 2]]  # no context: one variant first
    assert diversify_picks(scores, candidates, 2, config, PACKS[:1]).tolist() == [[2, 3]]
    both = diversify_picks(np.vstack([scores, scores]), np.vstack([candidates, candidates]), 2, config,
                           np.vstack([PACKS[:1], np.zeros((1, 3))]))
    assert both.tolist() == [[2, 3], [0, 2]]  # a row without a shown item is diversified as before


def one_list_mmr(scores: np.ndarray, vectors: np.ndarray, k: int, config: DiversifyConfig,
                 shown: np.ndarray | None) -> list[int]:
    """The module docstring's rule, one list and one candidate at a time: relevance min-max scaled over the real
    candidates (pads, -inf, far below them), minus weight × the highest cosine to what is picked or shown, near
    duplicates of those 1e6 further down; ties to the earlier candidate."""
    real = np.isfinite(scores)
    low, high = (scores[real].min(), scores[real].max()) if real.any() else (0.0, 0.0)
    picked, context = [], [] if shown is None or not shown.any() else [shown]
    for _ in range(min(k, len(scores))):
        best, best_value = None, -np.inf
        for i in (i for i in range(len(scores)) if i not in picked):
            value = (1 - config.weight) * (scores[i] - low) / max(high - low, 1e-12) if real[i] else -1e12
            cosines = [float(np.float32(vectors[i] @ vectors[j])) for j in picked]
            cosines += [float(np.float32(vectors[i] @ c)) for c in context]
            if cosines:
                value -= config.weight * max(cosines)
                threshold = config.duplicate_threshold
                value -= 1e6 if threshold is not None and max(cosines) >= threshold else 0.0
            if best is None or value > best_value + 1e-9:
                best, best_value = i, value
        picked.append(best)
    return picked


def test_batched_picks_equal_the_rule_applied_one_list_at_a_time():
    """Random batches (pads, near-duplicate clusters, a shown item on some rows, every weight and threshold): the
    vectorised picks are the greedy rule's, list by list."""
    rng = np.random.default_rng(0)
    compared = 0
    for _ in range(400):
        batch, n, dim, k = (int(v) for v in (rng.integers(1, 5), rng.integers(1, 12), rng.integers(2, 6),
                                             rng.integers(1, 14)))
        scores = rng.normal(size=(batch, n))
        scores[rng.random(size=(batch, n)) < 0.15] = -np.inf  # pads of short lists
        vectors = rng.normal(size=(batch, n, dim))
        if rng.random() < 0.3:
            vectors[:, 1:] = vectors[:, :1] + 0.01 * vectors[:, 1:]  # one product in many pack sizes
        vectors = unit(vectors).astype(np.float32)
        config = DiversifyConfig(weight=float(rng.choice([0.0, 0.1, 0.3, 0.7])),
                                 duplicate_threshold=[None, 0.95, 0.99][int(rng.integers(3))])
        shown = unit(rng.normal(size=(batch, dim))).astype(np.float32) if rng.random() < 0.4 else None
        if shown is not None:
            shown[rng.random(batch) < 0.3] = 0  # rows without a shown item
        if not active(config):
            continue
        picks = diversify_picks(scores, vectors, k, config, shown)
        for row in range(batch):
            assert picks[row].tolist() == one_list_mmr(scores[row], vectors[row], k, config,
                                                      None if shown is None else shown[row])
            compared += 1
    assert compared > 500


def test_a_list_longer_than_the_depth_begins_with_the_list_of_that_depth():
    """A list of 100 was picked afresh from 100 candidates, so its first 10 could differ from a list of 10 (which
    the pipeline picks from the top 50): a page asking for 10 and then for 100 saw another first 10."""
    rng = np.random.default_rng(0)
    config = DiversifyConfig(weight=0.3, duplicate_threshold=0.95, depth=50)
    scores = -np.sort(-rng.random((20, 120)), axis=1)
    vectors = unit(rng.normal(size=(20, 120, 8)))
    vectors[:, 1::7] = vectors[:, ::7][:, :vectors[:, 1::7].shape[1]]  # near-duplicates among them
    short = diversify_picks(scores[:, :50], vectors[:, :50], 50, config)  # a list of ≤ 50: its top 50
    long = diversify_picks(scores, vectors, 100, config, head=50)
    np.testing.assert_array_equal(long[:, :50], short)
    assert all(len(set(row)) == 100 for row in long.tolist())  # 100 distinct picks
    fresh = diversify_picks(scores, vectors, 100, config)
    assert (fresh[:, :10] != short[:, :10]).any()  # picked afresh, the first 10 moved (the old behaviour)
    # a gap (an item gone) among the first 50, with candidates after them: never picked before a real one
    gapped = scores.copy()
    gapped[0, 3] = -np.inf
    picks = diversify_picks(gapped, vectors, 100, config, head=50)
    assert 3 not in picks[0, :99].tolist()
