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
