"""Reasons on recommended items: the closest recent history item, never the item itself."""

import numpy as np

from recsys.explain import closest_history_items

VECTORS = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.8, 0.6]], dtype=np.float32)
POSITION = {name: row for row, name in enumerate("abcde")}


def test_each_candidate_gets_its_closest_history_item():
    assert closest_history_items(VECTORS, POSITION, ["a", "c"], ["b", "d", "e", "zz"]) == ["a", "c", "a", None]


def test_a_candidate_in_the_history_is_explained_by_another_item():
    assert closest_history_items(VECTORS, POSITION, ["a", "b", "c"], ["a", "b"]) == ["b", "a"]
    assert closest_history_items(VECTORS, POSITION, ["a"], ["a", "b"]) == [None, "a"]


def test_only_the_recent_window_explains_and_unknown_history_gives_none():
    assert closest_history_items(VECTORS, POSITION, ["a", "c", "d"], ["b"], window=2) == ["d"]
    assert closest_history_items(VECTORS, POSITION, ["zz"], ["a"]) == [None]
    assert closest_history_items(VECTORS, POSITION, ["a"], []) == []
