import polars as pl

from recsys.splits import files_split, leave_one_out


def test_leave_one_out_by_time_not_file_order():
    interactions = pl.DataFrame({"user_id": ["a"] * 4 + ["b"] * 2, "item_id": ["3", "1", "4", "2", "1", "2"],
                                 "timestamp": [30, 10, 40, 20, 1, 2]})
    split = leave_one_out(interactions)
    assert split.test.row(0, named=True) == {"user_id": "a", "history": ["1", "2", "3"], "target": "4",
                                             "timestamp": 40}
    assert split.valid.row(0, named=True)["history"] == ["1", "2"]
    assert split.valid["target"].to_list() == ["3"]
    # b has only two interactions: no held-out example, everything stays in train
    assert sorted(split.train.filter(pl.col("user_id") == "b")["item_id"]) == ["1", "2"]
    assert split.train_histories() == {"a": ["1", "2"], "b": ["1", "2"]}


def test_files_split_keeps_given_labels():
    interactions = pl.DataFrame({"user_id": ["a"] * 4, "item_id": ["1", "2", "3", "4"], "timestamp": [0, 1, 2, 3],
                                 "split": ["train", "train", "valid", "test"]})
    split = files_split(interactions)
    assert split.train["item_id"].to_list() == ["1", "2"]
    assert split.valid["history"].to_list() == [["1", "2"]]
    assert split.test["history"].to_list() == [["1", "2", "3"]]
    assert split.test["target"].to_list() == ["4"]


def test_hold_out_items_drops_their_train_events_and_makes_their_targets_cold():
    import pytest

    from encoders.experiment import cold_start_examples
    from recsys.splits import hold_out_items

    users = [u for u in "abcdef" for _ in range(5)]
    items = [str(i) for u in range(6) for i in (u, u + 1, u + 2, u + 3, u + 4)]
    interactions = pl.DataFrame({"user_id": users, "item_id": items, "timestamp": list(range(5)) * 6})
    split = leave_one_out(interactions)
    train_items = sorted(split.train["item_id"].unique())  # "0".."7": each user's first three
    held_split, held = hold_out_items(split, 0.25, seed=3)
    assert held == ["0", "5"] and set(held) <= set(train_items)
    assert hold_out_items(split, 0.25, seed=3)[1] == held  # seeded
    assert not held_split.train["item_id"].is_in(held).any()
    assert held_split.train.height == split.train.height - split.train["item_id"].is_in(held).sum()
    assert held_split.valid.equals(split.valid) and held_split.test.equals(split.test)  # histories keep them
    cold_users = cold_start_examples(held_split, held_split.valid)["user_id"].to_list()
    assert cold_start_examples(split, split.valid)["user_id"].to_list() == ["f"]  # target "8": never in train
    assert cold_users == ["c", "f"]  # c's target "5" is held out
    assert cold_users == split.valid.filter(pl.col("target").is_in(held)
                                            | ~pl.col("target").is_in(split.train["item_id"].implode())
                                            )["user_id"].to_list()
    assert hold_out_items(split, 0.0) == (split, [])
    with pytest.raises(ValueError, match="share"):
        hold_out_items(split, 1.0)
