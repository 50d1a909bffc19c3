"""Compact stored histories: the same mapping as a dict of lists, in arrays."""

from __future__ import annotations

import polars as pl
import pytest

from recsys.data import generate_shop
from recsys.histories import Histories, histories_frame
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
