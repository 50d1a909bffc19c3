import math

import numpy as np
import pytest

from recsys.metrics import MISS, mrr_at_k, ndcg_at_k, recall_at_k, summarize, target_ranks


def test_hand_computed_values():
    ranks = np.array([0, 2, 9, 10, MISS])  # hits at positions 1, 3, 10; one just outside; one missing
    assert recall_at_k(ranks, 10) == pytest.approx(3 / 5)
    assert recall_at_k(ranks, 1) == pytest.approx(1 / 5)
    expected_ndcg = (1 / math.log2(2) + 1 / math.log2(4) + 1 / math.log2(11)) / 5
    assert ndcg_at_k(ranks, 10) == pytest.approx(expected_ndcg)
    assert mrr_at_k(ranks, 10) == pytest.approx((1 + 1 / 3 + 1 / 10) / 5)
    assert ndcg_at_k(ranks, 11) == pytest.approx(expected_ndcg + 1 / math.log2(12) / 5)


def test_target_ranks_and_summary_keys():
    ranks = target_ranks([["a", "b", "c"], ["c", "b"], ["x"]], ["b", "c", "a"])
    assert ranks.tolist() == [1, 0, MISS]
    summary = summarize(ranks, (1, 2))
    assert summary == pytest.approx({"recall@1": 1 / 3, "ndcg@1": 1 / 3, "mrr@1": 1 / 3,
                                     "recall@2": 2 / 3, "ndcg@2": (1 + 1 / math.log2(3)) / 3,
                                     "mrr@2": (1 + 0.5) / 3,
                                     "ndcg@1_se": np.std([0, 1, 0], ddof=1) / math.sqrt(3),
                                     "ndcg@2_se": np.std([1 / math.log2(3), 1, 0], ddof=1) / math.sqrt(3)})
    assert summarize(np.array([3]), (10,))["ndcg@10_se"] == 0.0  # one example: no spread to measure


def test_empty_input_is_zero():
    assert recall_at_k(np.array([], dtype=int), 10) == 0.0
    assert ndcg_at_k(np.array([], dtype=int), 10) == 0.0


def test_paired_difference_is_the_mean_difference_and_its_standard_error():
    from recsys.metrics import paired_difference

    mean, se = paired_difference(np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0, 0.0]))
    assert mean == 0.5 and se == pytest.approx(np.std([1, 0, 0, 1], ddof=1) / 2)
    assert paired_difference(np.array([0.3]), np.array([0.1])) == (pytest.approx(0.2), 0.0)
