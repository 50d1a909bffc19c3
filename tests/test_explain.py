"""Reasons on recommended items: the closest recent history item, never the item itself."""

import numpy as np

from recsys.explain import closer_to_text, closest_history_items

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


def test_the_text_explains_the_items_it_is_closer_to_than_every_recent_history_item():
    text = np.array([2.0, 0.0], dtype=np.float32)  # along a (lengths do not count: cosines)
    # b and e lean to the text; d is closest to c (history); a candidate never counts itself (a: only c is left)
    assert closer_to_text(VECTORS, POSITION, text, ["c"], ["b", "d", "e", "zz"]) == [True, False, True, False]
    assert closer_to_text(VECTORS, POSITION, text, ["a", "c"], ["a", "b"]) == [True, False]
    assert closer_to_text(VECTORS, POSITION, text, ["b", "c", "d"], ["e"], window=1) == [True]  # only d is recent
    assert closer_to_text(VECTORS, POSITION, text, ["zz"], ["d"]) == [True]  # no known history item: the text
    assert closer_to_text(VECTORS, POSITION, text, ["a"], []) == []
