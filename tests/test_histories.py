"""Compact stored histories: the same mapping as a dict of lists, in arrays."""

from __future__ import annotations

import polars as pl
import pytest

from recsys.data import generate_shop
from recsys.histories import Histories, histories_frame, stored_kinds
from recsys.splits import user_sequences


def test_compact_histories_equal_the_dict_of_lists_and_round_trip():
    shop = generate_shop(n_users=300, n_items=200, seed=3)
    expected = user_sequences(shop.interactions)
    histories = Histories.from_interactions(shop.interactions)
    assert len(histories) == len(expected) and histories.n_events == shop.interactions.height
    assert dict(histories) == expected
    assert list(histories) == sorted(expected)
    again = Histories.from_frame(histories.to_frame())
    assert dict(again) == expected
    assert histories_frame(expected).sort("user_id").equals(histories.to_frame())
    assert "nobody" not in histories and histories.get("nobody") is None and 7 not in histories
    with pytest.raises(KeyError):
        histories["nobody"]


def test_empty_histories_and_ties_keep_file_order():
    frame = pl.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["b", "a", "c"], "timestamp": [1, 1, 0]})
    histories = Histories.from_interactions(frame)
    assert histories["u"] == ["b", "a"] and histories["v"] == ["c"]
    with_empty = Histories.from_frame(pl.DataFrame({"user_id": ["w", "u"], "history": [[], ["x"]]}))
    assert with_empty["w"] == [] and with_empty["u"] == ["x"] and len(with_empty) == 2


def test_event_kinds_ride_along_and_a_history_without_them_reads_as_before():
    """An imported dataset's kinds reach the bundle's histories (`kinds`, aligned with `history`) and come back as
    the kind of each item's latest event; histories without kinds (older bundles) have none and write no column."""
    frame = pl.DataFrame({"user_id": ["u", "u", "v", "u", "w"], "item_id": ["a", "b", "c", "a", "d"],
                          "timestamp": [1, 2, 0, 3, 0], "kind": ["purchase", "view", None, "cart", None]})
    histories = Histories.from_interactions(frame)
    assert histories["u"] == ["a", "b", "a"]
    assert histories.kinds_of("u") == {"a": "cart", "b": "view"}  # the latest event on "a" was the cart add
    assert histories.kinds_of("u", limit=1) == {"a": "cart"}  # the items of the latest event only
    assert histories.kinds_of("v") == {} and histories.kinds_of("nobody") == {}
    written = histories.to_frame()
    assert written.columns == ["user_id", "history", "kinds"]
    assert written["kinds"].to_list() == [["purchase", "view", "cart"], [None], [None]]
    again = Histories.from_frame(written)
    assert dict(again) == dict(histories) and again.kinds_of("u") == {"a": "cart", "b": "view"}
    assert stored_kinds(again, "u") == {"a": "cart", "b": "view"} and stored_kinds({"u": ["a"]}, "u") == {}

    older = Histories.from_frame(written.drop("kinds"))  # a bundle written before kinds were kept
    assert dict(older) == dict(histories) and older.kinds_of("u") == {}
    assert older.to_frame().equals(written.drop("kinds"))
    without = Histories.from_interactions(frame.drop("kind"))
    assert without.kind_codes is None and without.to_frame().columns == ["user_id", "history"]
    with pytest.raises(ValueError, match="the 'kinds' lists do not match the histories' lengths"):
        Histories.from_frame(written.with_columns(kinds=pl.Series([["view"], [None], [None]])))
