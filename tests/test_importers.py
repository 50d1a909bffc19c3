"""Importers: RecBole sequential / MovieLens atomic files and CSV / Parquet tables, good and bad input."""

from __future__ import annotations

import codecs
import json
import re
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from recsys.data import import_recbole_movielens, import_recbole_sequential, import_table
from recsys.data.dataset import Dataset
from recsys.data.importers import category_brand_from_text, title_from_text
from recsys.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
INTER_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token"


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _raises(match_parts: list[str], func, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    for part in match_parts:
        assert part in message, (part, message)
    return info.value


# ---------------------------------------------------------------- RecBole sequential
def _toy_recbole(d: Path) -> Path:
    """User u1 bought A0 A1 A2 A3 A4 | A5 (valid) | A1 (test); histories truncated to 3 items like the
    real files' 50, prefixes listed longest first. User u2 (A2 | A0 | A3) has no train row at all."""
    _write(d / "Toy.item2index", [f"A{i}\t{i}" for i in range(6)] + ["AX\t6"])  # AX: no text, unused
    _write(d / "Toy.user2index", ["u1\t0", "u2\t1"])
    _write(d / "Toy.text", ["item_id:token\ttext:token_seq"]
           + [f"A{i}\tItem {i} Widget. Tools Widgets. Brand{i}. " for i in range(6)]
           + ["AZ\tOrphan text. Nothing. None. "])  # AZ: text without an index
    _write(d / "Toy.train.inter", [INTER_HEADER, "0\t1 2 3\t4", "0\t0 1 2\t3", "0\t0 1\t2", "0\t0\t1"])
    _write(d / "Toy.valid.inter", [INTER_HEADER, "0\t2 3 4\t5", "1\t2\t0"])
    _write(d / "Toy.test.inter", [INTER_HEADER, "0\t3 4 5\t1", "1\t2 0\t3"])
    return d


def test_recbole_sequential_reconstructs_full_sequences(tmp_path: Path) -> None:
    data = import_recbole_sequential(_toy_recbole(tmp_path))
    assert data.name == "Toy"
    inter = data.interactions
    assert inter.columns == ["user_id", "item_id", "timestamp", "split"]
    u1 = inter.filter(pl.col("user_id") == "u1")
    assert u1["item_id"].to_list() == ["A0", "A1", "A2", "A3", "A4", "A5", "A1"]
    assert u1["timestamp"].to_list() == list(range(7))
    assert u1["split"].to_list() == ["train"] * 5 + ["valid", "test"]
    u2 = inter.filter(pl.col("user_id") == "u2")
    assert u2.select("item_id", "split").rows() == [("A2", "train"), ("A0", "valid"), ("A3", "test")]
    assert data.items["item_id"].to_list() == [f"A{i}" for i in range(6)]
    assert data.items["text"][0] == "Item 0 Widget. Tools Widgets. Brand0."  # stripped
    assert data.items["title"][0] == "Item 0 Widget"
    report = data.report
    assert report.rows_read == {"Toy.item2index": 7, "Toy.user2index": 2, "Toy.train.inter": 4,
                                "Toy.valid.inter": 2, "Toy.test.inter": 2, "Toy.text": 7}
    assert report.dropped == {"items in Toy.item2index without text (unused)": 1,
                              "rows of Toy.text without an item2index entry": 1}
    assert not any("inconsistent histories" in note for note in report.notes)  # none: not said
    assert "reconstructed 2 user sequences; timestamp = position in the sequence" in report.notes


def test_recbole_sequential_notes_count_users_in_words(tmp_path: Path) -> None:
    # "1 users without a test row", "1 users in Toy.user2index have no rows": counted nouns (recsys.text_format)
    d = _toy_recbole(tmp_path)
    _write(d / "Toy.user2index", ["u1\t0", "u2\t1", "u3\t2"])  # u3: listed, no rows
    _write(d / "Toy.test.inter", [INTER_HEADER, "0\t3 4 5\t1"])  # u2: no test row
    notes = import_recbole_sequential(d).report.notes
    assert "1 user without a test row" in notes and "1 user in Toy.user2index has no rows" in notes
    assert "reconstructed 2 user sequences; timestamp = position in the sequence" in notes


def test_recbole_sequential_counts_inconsistent_histories(tmp_path: Path) -> None:
    d = _toy_recbole(tmp_path)
    _write(d / "Toy.valid.inter", [INTER_HEADER, "0\t2 2 4\t5", "1\t2\t0"])  # not a suffix of A0..A4
    data = import_recbole_sequential(d, name="Toy")
    assert data.interactions.height == 10  # kept, not dropped
    assert any("train=0, valid=1, test=0" in note for note in data.report.notes)


def test_recbole_sequential_file_order_does_not_matter(tmp_path: Path) -> None:
    d = _toy_recbole(tmp_path)
    _write(d / "Toy.train.inter", [INTER_HEADER, "0\t0\t1", "0\t0 1\t2", "0\t0 1 2\t3", "0\t1 2 3\t4"])
    items = import_recbole_sequential(d).interactions.filter(pl.col("user_id") == "u1")["item_id"]
    assert items.to_list() == ["A0", "A1", "A2", "A3", "A4", "A5", "A1"]


@pytest.mark.parametrize("file, lines, parts", [
    ("Toy.train.inter", [INTER_HEADER, "0\t1 2 3\t4", "0\t0 x 2\t3"], ["row 2", "unparsable item_id_list"]),
    ("Toy.train.inter", [INTER_HEADER, "0\t1 2 3\t4", "0\t0 1 2"], ["row 2", "unparsable line",
                                                                    "expected 3 tab-separated fields, found 2"]),
    ("Toy.valid.inter", [INTER_HEADER, "0\t2 3 4\t5", "1\t2\t42"], ["row 2", "unknown item index 42"]),
    ("Toy.test.inter", [INTER_HEADER, "0\t3 4 5\t1", "7\t2 0\t3"], ["row 2", "unknown user index 7"]),
    ("Toy.test.inter", [INTER_HEADER, "0\t3 4 5\t1", "0\t3 4 5\t1"], ["row 2", "user index 0 has a second row"]),
    ("Toy.item2index", ["A0\t0", "A1\t1", "A1\t2"], ["row 3", "duplicate id 'A1' (first on row 2)"]),
    ("Toy.item2index", ["A0\t0", "A1\tone"], ["row 2", "unparsable index 'one'"]),
    ("Toy.user2index", ["u1\t0", "u" * 257 + "\t1"], ["row 2", "id longer than 256 characters, the longest id the "
                                                       "API serves"]),
    ("Toy.text", ["item_id:token\ttext:token_seq", "A0\tOne. ", "A0\tTwo. "], ["row 2", "duplicate item id 'A0'"]),
    ("Toy.train.inter", ["user_id:token\titem_id:token", "0\t1"], ["missing column 'item_id_list'",
                                                                   "found ['user_id', 'item_id']"]),
])
def test_recbole_sequential_bad_input(tmp_path: Path, file: str, lines: list[str], parts: list[str]) -> None:
    d = _toy_recbole(tmp_path)
    _write(d / file, lines)
    _raises([file, *parts], import_recbole_sequential, d)


def test_recbole_files_with_a_byte_order_mark(tmp_path: Path) -> None:
    # a BOM (Windows editors write one) stuck to the first id ('\ufeffA0', unknown to the text file) or to the first
    # column's name ("missing column(s) ['item_id']; found ['\ufeffitem_id', 'text']")
    d = _toy_recbole(tmp_path)
    for name in ("Toy.item2index", "Toy.text", "Toy.train.inter"):
        (d / name).write_bytes(b"\xef\xbb\xbf" + (d / name).read_bytes())
    data = import_recbole_sequential(d)
    assert data.items["item_id"].to_list() == [f"A{i}" for i in range(6)]
    assert data.interactions.height == 10
    movies = tmp_path / "ml"
    movies.mkdir()
    (movies / "ml.item").write_bytes(b"\xef\xbb\xbfitem_id:token\tmovie_title:token_seq\trelease_year:token\t"
                                     b"class:token_seq\n1\tToy Story\t1995\tAnimation\n")
    (movies / "ml.inter").write_bytes(b"\xef\xbb\xbfuser_id:token\titem_id:token\ttimestamp:float\n7\t1\t881250949\n")
    assert import_recbole_movielens(movies).interactions.rows() == [("7", "1", 881250949)]


def test_recbole_sequential_used_item_without_text(tmp_path: Path) -> None:
    d = _toy_recbole(tmp_path)
    text = (d / "Toy.text").read_text().splitlines()
    _write(d / "Toy.text", [line for line in text if not line.startswith("A3\t")])
    _raises(["Toy.train.inter, row 1", "item 'A3' (index 3) is used here but has no line in Toy.text"],
            import_recbole_sequential, d)
    _write(d / "Toy.text", [line if not line.startswith("A3\t") else "A3\t   " for line in text])
    _raises(["an empty text on row 4 of Toy.text"], import_recbole_sequential, d)


def test_recbole_sequential_missing_file_and_name(tmp_path: Path) -> None:
    d = _toy_recbole(tmp_path)
    (d / "Toy.test.inter").unlink()
    _raises(["Toy.test.inter", "file not found"], import_recbole_sequential, d)
    (d / "Other.text").write_text("item_id:token\ttext:token_seq\n")
    _raises(["expected exactly one *.text file", "['Other.text', 'Toy.text']", "pass name='Other'"],
            import_recbole_sequential, d)
    _raises(["expected Tool.text, found ['Other.text', 'Toy.text']; pass name='Other'"],
            import_recbole_sequential, d, "Tool")
    _toy_recbole(d)  # Toy's files whole again, beside Other.text: the name picks them
    assert import_recbole_sequential(d, "Toy").interactions["user_id"].unique().sort().to_list() == ["u1", "u2"]


def test_the_wrong_recbole_importer_names_the_right_one(tmp_path: Path) -> None:
    sequential = _toy_recbole(tmp_path)
    error = _raises(["expected exactly one *.inter file", "'Toy.test.inter'", "RecBole/UniSRec sequential data, "
                     "read by `recsys import recbole`"], import_recbole_movielens, sequential)
    assert "movielens`" not in str(error)
    movielens = tmp_path / "ml"
    movielens.mkdir()
    _write(movielens / "ml.item", ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"])
    _write(movielens / "ml.inter", ["user_id:token\titem_id:token\trating:float\ttimestamp:float"])
    _raises(["expected exactly one *.text file to name the dataset, found []", "RecBole MovieLens data, read by "
             "`recsys import movielens`"], import_recbole_sequential, movielens)


def test_an_imported_dataset_given_to_an_importer_says_it_is_one(tmp_path: Path) -> None:
    # `recsys import movielens data/ml100k` (the import's own output) said only "expected exactly one *.inter file,
    # found []"
    (tmp_path / "schema.json").write_text("{}")
    for importer, expected in ((import_recbole_movielens, "*.inter"), (import_recbole_sequential, "*.text")):
        _raises([f"expected exactly one {expected}", "it holds a dataset already imported (schema.json): commands read "
                 f"it as it is (`recsys build --data {tmp_path}`)"], importer, tmp_path)


def test_title_from_text() -> None:
    assert title_from_text("Uranium Ore. Industrial & Scientific. Images SI. ") == "Uranium Ore"
    assert title_from_text("Mr. Heater Kit 3/8. Plumbing. Mr. Heater.") == "Mr. Heater Kit 3/8"
    assert title_from_text("24 Oz. Sprayer Bottles, 3-Pack. Lab. Continental.") == "24 Oz. Sprayer Bottles, 3-Pack"
    assert title_from_text("E.C. Kraus Alcohol Hydrometer. Tests. E.C. Kraus.") == "E.C. Kraus Alcohol Hydrometer"
    assert title_from_text("sunpp.") == "sunpp"
    assert title_from_text("No separator at all") == "No separator at all"


def test_category_brand_from_text() -> None:
    text = "Uranium Ore. Industrial & Scientific Lab Supplies. Images SI. "
    assert category_brand_from_text(text) == ("Industrial & Scientific Lab Supplies", "Images SI")
    assert category_brand_from_text("Mr. Heater Kit 3/8. Plumbing. Mr. Heater.") == ("Plumbing", "Mr. Heater")
    assert category_brand_from_text("Hose. Plumbing Hoses. Sterling Seal & Supply, Inc. (STCC).") == \
        ("Plumbing Hoses", "Sterling Seal & Supply, Inc. (STCC)")
    assert category_brand_from_text("Wheel. Abrasives. Norton - St. Gobain.") == ("Abrasives", "Norton - St. Gobain")
    assert category_brand_from_text("Ideal Crimp Connector. . Ideal.") == (None, "Ideal")  # empty category field
    assert category_brand_from_text("Just a title. Tools.") == (None, None)


def _shop_texts(d: Path, texts: list[str]) -> Path:
    _toy_recbole(d)
    _write(d / "Toy.text", ["item_id:token\ttext:token_seq"] + [f"A{i}\t{t}" for i, t in enumerate(texts)])
    return d


def test_recbole_sequential_reads_category_and_brand_from_the_unisrec_layout(tmp_path: Path) -> None:
    layout = [f"Widget {i}. Tools Widgets. Acme." if i % 2 else f"Gadget {i}. Tools Gadgets. Brandt Co."
              for i in range(6)]
    assert "category" not in import_recbole_sequential(_shop_texts(tmp_path, layout)).items.columns  # default
    items = import_recbole_sequential(tmp_path, attributes="auto").items
    assert items["category"].to_list() == ["Tools Gadgets", "Tools Widgets"] * 3
    assert items["brand"].to_list() == ["Brandt Co", "Acme"] * 3  # the text's final '.' is not part of it
    assert items["text"][1] == "Widget 1. Tools Widgets. Acme."  # the text BERT reads is unchanged
    with pytest.raises(ValueError, match="attributes must be"):
        import_recbole_sequential(tmp_path, attributes="yes")


def test_recbole_sequential_leaves_free_text_without_category_and_brand(tmp_path: Path) -> None:
    prose = [f"A fine widget number {i}. It does things well. Buy it today {i}." for i in range(6)]
    data = import_recbole_sequential(_shop_texts(tmp_path, prose), attributes="auto")
    assert "brand" not in data.items.columns and "category" not in data.items.columns
    assert any("do not have the '<title>. <category>. <brand>.' layout" in n for n in data.report.notes)
    forced = import_recbole_sequential(tmp_path, attributes="parse").items
    assert forced["brand"].to_list() == [f"Buy it today {i}" for i in range(6)]


# ---------------------------------------------------------------- RecBole MovieLens
def _toy_movielens(d: Path) -> Path:
    _write(d / "ml.item", ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
                           "1\tToy Story\t1995\tAnimation Children's Comedy", "2\tGoldenEye\t1995\tAction",
                           "3\tunkonwn\tunkonwn\tunknown"])
    _write(d / "ml.inter", ["user_id:token\titem_id:token\trating:float\ttimestamp:float",
                            "196\t1\t3\t881250949", "196\t2\t5\t881250950", "22\t3\t1\t878887116",
                            "196\t1\t3\t881250949"])  # exact duplicate of row 1
    return d


def test_recbole_movielens(tmp_path: Path) -> None:
    data = import_recbole_movielens(_toy_movielens(tmp_path))
    assert data.name == "ml" and not data.has_split
    assert data.items.rows() == [
        ("1", "Toy Story (1995). Genres: Animation, Children's, Comedy", "Toy Story", "Animation"),
        ("2", "GoldenEye (1995). Genres: Action", "GoldenEye", "Action"),
        ("3", "unkonwn", "unkonwn", None),
    ]
    assert data.interactions.rows() == [("196", "1", 881250949), ("196", "2", 881250950), ("22", "3", 878887116)]
    assert data.interactions.schema["timestamp"] == pl.Int64
    assert data.report.rows_read == {"ml.item": 3, "ml.inter": 4}
    assert data.report.dropped == {"exact duplicate interaction rows (ml.inter)": 1}
    assert any("1 item without a 4-digit release_year" in note for note in data.report.notes)


@pytest.mark.parametrize("file, line, parts", [
    ("ml.inter", "5\t9\t4\t881250949", ["row 5", "unknown item id '9' (not in ml.item)"]),
    ("ml.inter", "5\t1\t4\tyesterday", ["row 5", "unparsable timestamp 'yesterday'"]),
    ("ml.inter", "5\t1\t4", ["row 5", "unparsable line: expected 4 tab-separated fields, found 3"]),
    ("ml.item", "2\tCopycat\t1995\tCrime", ["row 4", "duplicate item id '2' (first on row 2)"]),
    ("ml.item", "4\t \t1995\tCrime", ["row 4", "empty item text"]),
    ("ml.item", "4" * 257 + "\tLong\t1995\tCrime", ["row 4", "item_id longer than 256 characters"]),
    ("ml.inter", "5" * 257 + "\t1\t4\t881250949", ["row 5", "user_id longer than 256 characters"]),
])
def test_recbole_movielens_bad_input(tmp_path: Path, file: str, line: str, parts: list[str]) -> None:
    d = _toy_movielens(tmp_path)
    with (d / file).open("a") as handle:
        handle.write(line + "\n")
    _raises([file, *parts], import_recbole_movielens, d)


def test_recbole_movielens_bad_rows_are_listed_together_or_skipped(tmp_path: Path) -> None:
    """Every bad row of a file in one error, or left out with on_bad_rows="skip" and listed in the report; the events
    of an item whose line was left out say so (was: the first bad row stopped the import, and no skipping)."""
    d = _toy_movielens(tmp_path)
    with (d / "ml.item").open("a") as handle:
        handle.write("2\tCopycat\t1995\tCrime\n4\tHeat\t1995\n5\t \t1995\tCrime\n6\tSe7en\t1995\tCrime\n")
    with (d / "ml.inter").open("a") as handle:
        handle.write("22\t6\t4\t878887117\n22\t4\t4\t878887118\n22\t5\t4\tyesterday\n22\t9\t4\t878887119\n")
    with pytest.raises(DataError) as raised:
        import_recbole_movielens(d)
    assert str(raised.value).startswith(
        f"{d / 'ml.item'}: 3 bad rows: row 4: duplicate item id '2' (first on row 2); row 5: unparsable line: "
        "expected 4 tab-separated fields, found 3; row 6: empty item text: item '5' has no movie_title (skip bad rows "
        "with on_bad_rows='skip'")
    data = import_recbole_movielens(d, on_bad_rows="skip")
    assert data.items["item_id"].to_list() == ["1", "2", "3", "6"]
    assert data.items.row(1) == ("2", "GoldenEye (1995). Genres: Action", "GoldenEye", "Action")  # the first row's
    assert data.interactions.rows() == [("196", "1", 881250949), ("196", "2", 881250950), ("22", "3", 878887116),
                                        ("22", "6", 878887117)]
    assert data.report.rejected.rows() == [
        ("ml.inter", 6, "item was rejected from ml.item (its row there is bad)", "4"),
        ("ml.inter", 7, "item was rejected from ml.item (its row there is bad)", "5"),
        ("ml.inter", 8, "unknown item id (not in ml.item)", "9"),
        ("ml.item", 4, "duplicate item id '2' (first on row 2)", "2"),
        ("ml.item", 5, "unparsable line: expected 4 tab-separated fields, found 3", "4\tHeat\t1995"),
        ("ml.item", 6, "empty item text: item '5' has no movie_title", "5")]


# ---------------------------------------------------------------- CSV / Parquet tables
TEMPLATE = "title: {title} | category: {category} | brand: {brand}"


def _toy_csv(d: Path) -> tuple[Path, Path]:
    items = _write(d / "products.csv", ["sku,title,category,brand,price",
                                        "S1,Trail Shoe,Running Shoes,Stridex,89.5",
                                        "S2,Wool Socks,,Fleetfoot,12",
                                        "S3,,Coffee Beans,Brewmont,",
                                        "S4,Unsold Lamp,Lamps,Lumo,20"])
    events = _write(d / "events.csv", ["customer,sku,when",
                                       "c1,S1,2024-01-01T10:00:00Z",
                                       "c1,S2,2024-01-02 10:00:00",
                                       "c2,S3,2024-01-03",
                                       "c1,S2,2024-01-02 10:00:00"])  # exact duplicate
    return events, items


def _csv_kwargs() -> dict:
    return dict(user_col="customer", item_col="sku", time_col="when", item_id_col="sku", text_template=TEMPLATE)


def test_item_columns_neither_the_text_nor_the_attributes_read_are_noted(tmp_path: Path) -> None:
    # a description or colour column of the item file was left out without a word (the interactions file's unread
    # columns were noted): with --text-col title a shop could not tell its descriptions never reached BERT
    items = _write(tmp_path / "products.csv", ["sku,title,description,colour,brand",
                                               "S1,Trail Shoe,Light and grippy,red,Stridex",
                                               "S2,Wool Socks,Warm,grey,Fleetfoot"])
    events = _write(tmp_path / "events.csv", ["customer,sku", "c1,S1", "c1,S2"])
    kwargs = dict(user_col="customer", item_col="sku", time_col=None, item_id_col="sku")
    notes = import_table(events, items, text_col="title", **kwargs).report.notes
    assert ("products.csv: 2 columns not read ('description', 'colour'): the item text is the 'title' column; "
            "text_template= renders it from several columns") in notes
    notes = import_table(events, items, text_template="{title} | {description}", **kwargs).report.notes
    assert "products.csv: 1 column not read ('colour'): the text template reads 'title', 'description'" in notes
    notes = import_table(events, items, text_template="{title} {description} {colour}", **kwargs).report.notes
    assert not [note for note in notes if "not read" in note]  # brand is carried as an attribute


def test_import_csv_with_template(tmp_path: Path) -> None:
    data = import_table(*_toy_csv(tmp_path), **_csv_kwargs())
    assert data.name == "events"
    assert data.items["text"].to_list() == [
        "title: Trail Shoe | category: Running Shoes | brand: Stridex",
        "title: Wool Socks | brand: Fleetfoot",  # empty field: label and separator dropped
        "category: Coffee Beans | brand: Brewmont",
        "title: Unsold Lamp | category: Lamps | brand: Lumo",
    ]
    assert data.items.columns == ["item_id", "text", "title", "category", "brand", "price"]
    assert data.items["price"].to_list() == [89.5, 12.0, None, 20.0]
    assert data.items.schema["price"] == pl.Float64
    assert data.interactions.rows() == [("c1", "S1", 1704103200), ("c1", "S2", 1704189600),
                                        ("c2", "S3", 1704240000)]
    assert data.report.rows_read == {"products.csv": 4, "events.csv": 4}
    assert data.report.dropped == {"exact duplicate interaction rows (events.csv)": 1}


def test_import_parquet_with_text_column_and_formats(tmp_path: Path) -> None:
    pl.DataFrame({"item_id": [10, 11], "description": ["A red mug", "A blue mug"], "colour": ["red", "blue"],
                  "price": ["3.5", "4"]}).write_parquet(tmp_path / "items.parquet")
    pl.DataFrame({"user_id": ["u", "u", "v"], "item_id": [10, 11, 10],
                  "timestamp": [30, 10, 20]}).write_parquet(tmp_path / "inter.parquet")
    data = import_table(tmp_path / "inter.parquet", tmp_path / "items.parquet", text_col="description",
                        extra_item_cols=["colour"], name="mugs")
    assert data.name == "mugs"
    assert data.items.rows() == [("10", "A red mug", 3.5, "red"), ("11", "A blue mug", 4.0, "blue")]
    assert data.interactions.rows() == [("u", "10", 30), ("u", "11", 10), ("v", "10", 20)]
    pl.DataFrame({"u": ["a"], "i": [10], "t": ["03/02/2024 08:30"]}).write_csv(tmp_path / "fmt.csv")
    data = import_table(tmp_path / "fmt.csv", tmp_path / "items.parquet", user_col="u", item_col="i", time_col="t",
                        text_col="description", timestamp_format="%d/%m/%Y %H:%M")
    assert data.interactions["timestamp"].to_list() == [1706949000]  # 2024-02-03 08:30 UTC
    pl.DataFrame({"user_id": ["a", "a"], "item_id": ["10", "11"],
                  "timestamp": [datetime(2024, 1, 1), datetime(2024, 1, 1, 0, 1)]}).write_parquet(tmp_path / "dt.pq")
    data = import_table(tmp_path / "dt.pq", tmp_path / "items.parquet", text_col="description")
    assert data.interactions["timestamp"].to_list() == [1704067200, 1704067260]


def test_whole_float_ids_match_integer_ids_and_nested_columns_are_refused(tmp_path: Path) -> None:
    # pandas writes an integer id column holding one missing value as floats: 26.0 must still be item "26"
    pl.DataFrame({"item_id": [26.0, 27.0, 2.5], "text": ["a mug", "a cup", "a jar"]}).write_parquet(tmp_path / "i.pq")
    pl.DataFrame({"user_id": [1.0, 1.0, 2.0], "item_id": [26, 27, 26],
                  "timestamp": [1, 2, 3]}).write_parquet(tmp_path / "e.pq")
    data = import_table(tmp_path / "e.pq", tmp_path / "i.pq")
    assert data.items["item_id"].to_list() == ["26", "27", "2.5"]
    assert data.interactions.rows() == [("1", "26", 1), ("1", "27", 2), ("2", "26", 3)]
    pl.DataFrame({"item_id": ["a", "b"], "tags": [["red", "mug"], ["cup"]],
                  "text": ["a mug", "a cup"]}).write_parquet(tmp_path / "nested.pq")
    pl.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [1, 2]}).write_parquet(tmp_path / "ev.pq")
    for kwargs in ({"text_template": "{text} {tags}"}, {"text_col": "tags"}, {"item_id_col": "tags"}):
        _raises(["nested.pq", "column 'tags' holds List(String) values, not single values"],
                import_table, tmp_path / "ev.pq", tmp_path / "nested.pq", **kwargs)
    # a NaN id (a float column's missing value, as pandas and numpy write it) was the id "NaN": one user held every
    # event without a user, one item every row without an id
    nan = float("nan")
    pl.DataFrame({"item_id": [26.0, nan], "text": ["a mug", "a cup"]}).write_parquet(tmp_path / "in.pq")
    pl.DataFrame({"user_id": [1.0, nan, nan], "item_id": [26.0, 26.0, nan],
                  "timestamp": [1, 2, 3]}).write_parquet(tmp_path / "en.pq")
    data = import_table(tmp_path / "en.pq", tmp_path / "in.pq", on_bad_rows="skip")
    assert data.items["item_id"].to_list() == ["26"] and data.interactions.rows() == [("1", "26", 1)]
    assert data.report.rejected.select("file", "row", "problem").rows() == [
        ("en.pq", 2, "missing user_id"), ("en.pq", 3, "missing user_id"), ("in.pq", 2, "missing item_id")]
    listed = pl.DataFrame({"user_id": [["u"], ["u"]], "item_id": ["a", "b"], "timestamp": [1, 2]})
    listed.write_parquet(tmp_path / "l.pq")
    _raises(["l.pq", "column 'user_id' holds List(String) values"], import_table, tmp_path / "l.pq",
            tmp_path / "nested.pq")


def test_import_table_mapping_and_no_time_column(tmp_path: Path) -> None:
    events, items = _toy_csv(tmp_path)
    data = import_table(events, items, user_col="customer", item_col="sku", time_col=None, item_id_col="sku",
                        text_col="brand", extra_item_cols={"name": "title"})
    assert data.interactions["timestamp"].to_list() == [0, 1, 2, 3]  # file order; row 4 is a repeat, kept
    assert "name" in data.items.columns


@pytest.mark.parametrize("edit, parts", [
    (("events.csv", "c3,S9,2024-01-05"), ["events.csv", "row 5", "unknown item id 'S9' (not in products.csv)"]),
    (("events.csv", "c3,S1,last tuesday"), ["events.csv", "row 5", "unparsable timestamp 'last tuesday'"]),
    (("events.csv", "c3,S1,2024-01-05,extra"), ["events.csv", "row 5", "unparsable line",
                                                "expected 3 fields, found 4"]),
    (("events.csv", ",S1,2024-01-05"), ["events.csv", "row 5", "missing customer"]),
    (("products.csv", "S2,Again,Socks,Fleetfoot,3"), ["products.csv", "row 5", "duplicate item id 'S2'"]),
    (("products.csv", "S5,,,,"), ["products.csv", "row 5", "empty item text for item 'S5'"]),
    (("products.csv", "S5,Mug,Mugs,Lumo,cheap"), ["products.csv", "row 5", "unparsable price 'cheap'"]),
])
def test_import_table_bad_rows(tmp_path: Path, edit: tuple[str, str], parts: list[str]) -> None:
    events, items = _toy_csv(tmp_path)
    with (tmp_path / edit[0]).open("a") as handle:
        handle.write(edit[1] + "\n")
    _raises(parts, import_table, events, items, **_csv_kwargs())


def test_ids_longer_than_the_api_serves_are_bad_rows(tmp_path: Path) -> None:
    """`recsys import` took ids of any length, and the API refuses ids over 256 characters (422): such users and
    items were imported and trained on, and could never be asked about."""
    events, items = _toy_csv(tmp_path)
    longest, over = "S" * 256, "S" * 257
    with items.open("a") as handle:
        handle.write(f"{longest},Long Lamp,Lamps,Lumo,20\n{over},Longer Lamp,Lamps,Lumo,20\n")
    with events.open("a") as handle:
        handle.write(f"{'c' * 256},{longest},2024-01-05\n{'c' * 257},S1,2024-01-06\n{'c' * 3},{over},2024-01-07\n")
    _raises(["products.csv, row 6", "sku longer than 256 characters, the longest id the API serves"], import_table,
            events, items, **_csv_kwargs())
    data = import_table(events, items, on_bad_rows="skip", **_csv_kwargs())
    assert longest in data.items["item_id"].to_list() and ("c" * 256, longest) in \
        data.interactions.select("user_id", "item_id").rows()
    assert data.report.rejected.rows() == [
        ("events.csv", 6, "customer longer than 256 characters, the longest id the API serves", "c" * 257),
        ("events.csv", 7, "sku longer than 256 characters, the longest id the API serves", over),
        ("products.csv", 6, "sku longer than 256 characters, the longest id the API serves", over)]


def test_an_item_listed_twice_alike_is_counted_once_and_unlike_is_a_bad_row(tmp_path: Path) -> None:
    # a product table joined with its variants repeats whole rows: the import stopped on "duplicate item id"
    events, items = _toy_csv(tmp_path)
    with items.open("a") as handle:
        handle.write("S1,Trail Shoe,Running Shoes,Stridex,89.5\nS2, Wool Socks ,,Fleetfoot,12\n")
    data = import_table(events, items, **_csv_kwargs())
    assert data.items["item_id"].to_list() == ["S1", "S2", "S3", "S4"]
    assert data.report.dropped["exact duplicate item rows: same id, text and attributes (products.csv)"] == 2
    with items.open("a") as handle:
        handle.write("S1,Trail Shoe,Running Shoes,Stridex,79\n")  # another price: which one is right?
    _raises(["products.csv, row 7: duplicate item id 'S1' (its text or attributes differ from its first row)"],
            import_table, events, items, **_csv_kwargs())


def test_ids_that_lost_their_leading_zeros_in_one_file_are_named_as_such(tmp_path: Path) -> None:
    # the CSV keeps "001" as text; the Parquet export stored the ids as integers (and pandas writes an integer column
    # with a missing value as "26.0"). Every event was an "unknown item id '001' (not in items.pq)", with nothing to
    # say why
    items = tmp_path / "items.pq"
    pl.DataFrame({"item_id": [1, 2, 100, 26], "text": ["Mug", "Cup", "Jar", "Pot"]}).write_parquet(items)
    events = _write(tmp_path / "events.csv", ["user_id,item_id,timestamp", "0042,001,1", "0042,100,2", "0042,0x,3",
                                              "0042,26.0,4"])
    data = import_table(events, items, on_bad_rows="skip")
    assert data.interactions.rows() == [("0042", "100", 2)]  # user ids keep their zeros: they stay text
    renumbered = ("unknown item id (items.pq writes the same number otherwise: ids stored as numbers lose leading "
                  "zeros or gain a '.0')")
    assert data.report.rejected.rows() == [("events.csv", 1, renumbered, "001"),
                                           ("events.csv", 3, "unknown item id (not in items.pq)", "0x"),
                                           ("events.csv", 4, renumbered, "26.0")]
    _raises(["events.csv: 3 bad rows: row 1: unknown item id '001' (items.pq writes the same number otherwise"],
            import_table, events, items)


def test_header_names_padded_with_spaces_are_found(tmp_path: Path) -> None:
    # "sku, title, price" (a comma and a space, as people type it) was "missing column(s) ['title']; found ['sku',
    # ' title', ' price']"
    items = _write(tmp_path / "items.csv", ["sku, title, price ", "S1, Trail Shoe, 89.5", "S2, Wool Socks, 12"])
    events = _write(tmp_path / "events.csv", ["customer ,sku", "c1, S1", "c1, S2"])
    data = import_table(events, items, user_col="customer", item_col="sku", time_col=None, item_id_col="sku",
                        text_col="title")
    assert data.items.rows() == [("S1", "Trail Shoe", "Trail Shoe", 89.5), ("S2", "Wool Socks", "Wool Socks", 12.0)]
    assert data.interactions.rows() == [("c1", "S1", 0), ("c1", "S2", 1)]


def test_import_table_missing_file_and_columns(tmp_path: Path) -> None:
    events, items = _toy_csv(tmp_path)
    _raises(["nope.csv", "file not found"], import_table, tmp_path / "nope.csv", items, **_csv_kwargs())
    _raises([str(tmp_path), "a directory, not a file"], import_table, tmp_path, items, **_csv_kwargs())
    _raises(["events.csv", "missing column 'user_id'", "found ['customer', 'sku', 'when']: name the file's "
             "column with user_col="],
            import_table, events, items, item_col="sku", time_col="when", item_id_col="sku", text_col="brand")
    _raises(["products.csv", "no item text: pass text_col= or text_template=",
             "found ['sku', 'title'"],
            import_table, events, items, item_id_col="sku")
    # both: the template was used and the text column silently ignored
    _raises(["pass text_col= ('title') or text_template=, not both"],
            import_table, events, items, **{**_csv_kwargs(), "text_col": "title", "text_template": "{title}"})
    _raises(["products.csv", "missing text_template field 'colour'", "found ['sku', 'title'"],
            import_table, events, items, **{**_csv_kwargs(), "text_template": "{title} in {colour}"})
    (tmp_path / "blank.csv").write_text("")
    _raises(["blank.csv", "the file is empty"], import_table, tmp_path / "blank.csv", items, **_csv_kwargs())


def test_events_of_a_rejected_item_say_so_and_a_one_column_header_names_its_delimiter(tmp_path: Path) -> None:
    events, items = _toy_csv(tmp_path)
    with items.open("a") as handle:
        handle.write("S5,Mug,Mugs,Lumo,cheap\n")  # a bad price rejects item S5
    with events.open("a") as handle:
        handle.write("c3,S5,2024-01-05\nc3,S9,2024-01-06\n")
    data = import_table(events, items, on_bad_rows="skip", **_csv_kwargs())
    assert data.report.rejected.rows() == [
        ("events.csv", 5, "item was rejected from products.csv (its row there is bad)", "S5"),
        ("events.csv", 6, "unknown item id (not in products.csv)", "S9"),
        ("products.csv", 5, "unparsable price", "cheap")]
    semicolons = _write(tmp_path / "semi.csv", ["customer;sku;when", "c1;S1;2024-01-01"])
    _raises(["semi.csv", "missing columns 'customer', 'sku', 'when'", "the header looks semicolon-separated",
             "pass delimiter=';' for both files, or items_delimiter=';' for the item file alone"],
            import_table, semicolons, items, on_bad_rows="skip", **_csv_kwargs())
    error = _raises(["missing column 'user_id'", "found ['customer', 'sku', 'when']"], import_table, events,
                    items, item_col="sku", time_col="when", item_id_col="sku", text_col="brand", on_bad_rows="skip")
    assert "separated" not in str(error)  # a real header gets no delimiter hint


def test_events_of_an_unreadable_item_line_say_it_was_rejected_and_its_text_is_the_value(tmp_path: Path) -> None:
    # the events of an item whose line could not be read (wrong number of fields, bytes not in the encoding) were
    # "unknown item id (not in products.csv)", and rejected.csv's value was empty, naming no line
    items = tmp_path / "products.csv"
    items.write_bytes(b'sku,title,brand\n1,mug,A\n4,"board, big",E,extra\n5,cup\n6,caf\xe9,F\n'
                      + b"7," + b"x" * 300 + b",G,H\n")
    events = _write(tmp_path / "events.csv", ["customer,sku,ts", "U1,1,1", "U1,5,2", "U1,6,3", "U1,7,4", "U1,8,5"])
    data = import_table(events, items, user_col="customer", item_col="sku", time_col="ts", item_id_col="sku",
                        text_template="{title} {brand}", on_bad_rows="skip")
    assert data.items.rows() == [("1", "mug A", "mug", "A")]
    rejected = "item was rejected from products.csv (its row there is bad)"
    undecodable = ("not valid utf-8 text (invalid continuation byte); pass the file's encoding with items_encoding "
                   "(e.g. cp1252 for a Windows export, latin-1)")
    assert data.report.rejected.rows() == [
        ("events.csv", 2, rejected, "5"), ("events.csv", 3, rejected, "6"), ("events.csv", 4, rejected, "7"),
        ("events.csv", 5, "unknown item id (not in products.csv)", "8"),
        ("products.csv", 2, "unparsable line: expected 3 fields, found 4", '4,"board, big",E,extra'),
        ("products.csv", 3, "unparsable line: expected 3 fields, found 2", "5,cup"),
        ("products.csv", 4, undecodable, "6,caf\ufffd,F"),
        ("products.csv", 5, "unparsable line: expected 3 fields, found 4", "7," + "x" * 197 + "…")]
    # the id column is not the first: a ragged line tells no id (its fields may be shifted), an undecodable line
    # with the header's number of fields does
    items.write_bytes(b"title,sku\nmug,1\npan,2,extra\ncaf\xe9,3\n")
    events = _write(tmp_path / "events.csv", ["customer,sku,ts", "U1,1,1", "U1,2,2", "U1,3,3"])
    data = import_table(events, items, user_col="customer", item_col="sku", time_col="ts", item_id_col="sku",
                        text_col="title", on_bad_rows="skip")
    assert data.report.rejected.select("file", "row", "problem").rows()[:2] == [
        ("events.csv", 2, "unknown item id (not in products.csv)"), ("events.csv", 3, rejected)]


def test_a_file_that_is_not_parquet_is_one_error_naming_it(tmp_path: Path) -> None:
    # it was a polars ComputeError traceback ("File out of specification: The file must end with PAR1")
    events, items = _toy_csv(tmp_path)
    (tmp_path / "events.parquet").write_bytes(events.read_bytes())  # a CSV export saved under a .parquet name
    _raises(["events.parquet: not a readable Parquet file (", "a CSV or TSV file needs a .csv, .tsv or .txt name"],
            import_table, tmp_path / "events.parquet", items, **_csv_kwargs())
    (tmp_path / "items.pq").write_bytes(b"PAR1 cut short")
    _raises(["items.pq: not a readable Parquet file ("], import_table, events, tmp_path / "items.pq", **_csv_kwargs())


def test_import_table_counts_blank_lines(tmp_path: Path) -> None:
    events, items = _toy_csv(tmp_path)
    events.write_text(events.read_text().replace("\nc2,", "\n\nc2,"))
    data = import_table(events, items, **_csv_kwargs())
    assert data.report.dropped["blank lines (events.csv)"] == 1
    assert data.interactions.height == 3
    with events.open("a") as handle:
        handle.write("c3,S9,2024-01-05\n")
    _raises(["events.csv, row 6"], import_table, events, items, **_csv_kwargs())  # row numbers keep blanks


def _messy_events(d: Path) -> Path:
    """The toy events plus seven bad rows of five kinds, one line that is not UTF-8, and a good row at the end."""
    events, _ = _toy_csv(d)
    with events.open("ab") as handle:
        handle.write(b"c3,SKU-9999,2024-01-05\n"            # row 5: unknown item
                     b"c3,S1,yesterday\n"                    # row 6: bad timestamp
                     b"c3,S2,31/02/2024\n"                   # row 7: bad timestamp
                     b"c3,S4,soon\n"                         # row 8: bad timestamp
                     b",S1,2024-01-05\n"                     # row 9: no user
                     b"c3,S1,2024-01-05,extra\n"             # row 10: ragged
                     b"caf\xe9,S1,2024-01-06\n"             # row 11: latin-1 byte
                     b"c4,S4,2024-01-07\n")                  # row 12: good
    return events


def test_fail_mode_lists_every_bad_row_at_once(tmp_path: Path) -> None:
    events = _messy_events(tmp_path)
    error = _raises(["events.csv: 7 bad rows: row 5: unknown item id 'SKU-9999' (not in products.csv); "
                     "row 6: unparsable timestamp 'yesterday'", "row 7: unparsable timestamp '31/02/2024'",
                     "row 8: unparsable timestamp 'soon'", "row 9: missing customer", "… and 2 more",
                     "(skip bad rows with on_bad_rows='skip'", "rejected.csv"], import_table, events,
                    tmp_path / "products.csv", **_csv_kwargs())
    assert error.row is None


def test_skip_mode_imports_the_rest_and_keeps_every_bad_row(tmp_path: Path) -> None:
    from recsys.data.dataset import Dataset

    events = _messy_events(tmp_path)
    data = import_table(events, tmp_path / "products.csv", on_bad_rows="skip", **_csv_kwargs())
    assert data.interactions.rows()[-1] == ("c4", "S4", 1704585600)
    assert data.interactions.height == 4
    rejected = data.report.rejected
    assert rejected["row"].to_list() == [5, 6, 7, 8, 9, 10, 11]
    assert rejected.filter(pl.col("row") == 5).row(0) == ("events.csv", 5, "unknown item id (not in products.csv)",
                                                          "SKU-9999")
    assert rejected.filter(pl.col("row") == 11)["problem"][0].startswith("not valid utf-8 text")
    out = data.save(tmp_path / "ds")
    on_disk = pl.read_csv(out / "rejected.csv")
    assert on_disk.columns == ["file", "row", "problem", "value"] and on_disk.height == 7
    report = json.loads((out / "schema.json").read_text())["import_report"]
    assert report["rejected_rows"] == 7 and report["rejected_file"] == "rejected.csv"
    assert report["rejected"]["unparsable timestamp: expected epoch seconds or milliseconds, an ISO 8601 datetime or "
                              "a date written YYYYMMDD, or another form with timestamp_format (events.csv)"] == 2
    assert report["rejected"]["unparsable timestamp: a date written day or month first is read only with "
                              "timestamp_format='%d/%m/%Y' (the day comes first: '31/02/2024') (events.csv)"] == 1
    assert Dataset.load(out).interactions.equals(data.interactions)
    data.report.rejected = data.report.rejected.head(0)  # a clean re-save leaves no stale rejected.csv
    assert not (data.save(out) / "rejected.csv").exists()


def test_encoding_delimiter_and_a_row_for_bad_bytes(tmp_path: Path) -> None:
    items = _write(tmp_path / "items.csv", ["item_id;text", "1;Café crème", "2;Thé vert"])
    items.write_bytes(items.read_text().encode("latin-1"))
    events = _write(tmp_path / "events.csv", ["user_id;item_id;timestamp", "u;1;10", "u;2;20"])
    _raises(["items.csv: 2 bad rows: row 1: not valid utf-8 text", "e.g. cp1252 for a Windows export, latin-1"],
            import_table, events, items, delimiter=";")
    data = import_table(events, items, delimiter=";", encoding="latin-1")
    assert data.items["text"].to_list() == ["Café crème", "Thé vert"]
    tabbed = _write(tmp_path / "events.txt", ["user_id\titem_id\ttimestamp", "u\t1\t10"])
    tab_items = _write(tmp_path / "items.txt", ["item_id\ttext", "1\tTea"])
    assert import_table(tabbed, tab_items, delimiter="tab").interactions.height == 1  # one delimiter, both files
    with pytest.raises(ValueError, match="unknown encoding"):
        import_table(events, items, encoding="klingon")


def test_the_item_file_can_have_its_own_delimiter_and_encoding(tmp_path: Path) -> None:
    # delimiter and encoding applied to both files: a `;` cp1252 shop export beside a `,` UTF-8 event log could not
    # be imported (with --encoding cp1252 the log's 'José' would have been read 'JosÃ©', silently)
    items = tmp_path / "items.csv"
    items.write_bytes("item_id;text\n1;Caf\u00e9 cr\u00e8me \u2013 \u20ac5\n".encode("cp1252"))
    events = _write(tmp_path / "events.csv", ["user_id,item_id,timestamp", "Jos\u00e9,1,10"])
    data = import_table(events, items, items_delimiter=";", items_encoding="cp1252")
    assert data.items["text"].to_list() == ["Caf\u00e9 cr\u00e8me \u2013 \u20ac5"]
    assert data.interactions["user_id"].to_list() == ["Jos\u00e9"]
    with pytest.raises(ValueError, match="unknown encoding 'klingon'"):
        import_table(events, items, items_encoding="klingon")


def test_epoch_milliseconds_and_decimals_are_read_as_seconds(tmp_path: Path) -> None:
    # a shop's millisecond clock (JavaScript, Kafka) was taken for seconds: the year 55970, silently, and a file
    # mixing the two ordered every millisecond event after every seconds one; decimal seconds were bad rows
    items = _write(tmp_path / "items.csv", ["item_id,text", "1,Mug", "2,Cup", "3,Jar"])
    events = _write(tmp_path / "events.csv", ["user_id,item_id,timestamp", "u,1,1704300000000", "u,2,1704300060",
                                              "u,3,1704300120.75", "v,1,1704300000123456", "v,2,1704300000123456789"])
    data = import_table(events, items)
    assert data.interactions["timestamp"].to_list() == [1704300000, 1704300060, 1704300120, 1704300000, 1704300000]
    assert data.report.notes[:3] == [
        "1 timestamp of events.csv read as nanoseconds since the epoch (from 10^17 on: as seconds they would fall "
        "after the year 5000)",
        "1 timestamp of events.csv read as microseconds since the epoch (from 10^14 on: as seconds they would fall "
        "after the year 5000)",
        "1 timestamp of events.csv read as milliseconds since the epoch (from 10^11 on: as seconds they would fall "
        "after the year 5000)"]
    pl.DataFrame({"user_id": ["u", "u", "u"], "item_id": ["1", "2", "3"],
                  "timestamp": [1704300000000, 1704300001000, 1704300002500]}).write_parquet(tmp_path / "ms.pq")
    data = import_table(tmp_path / "ms.pq", items)
    assert data.interactions["timestamp"].to_list() == [1704300000, 1704300001, 1704300002]
    assert data.report.notes[0].startswith("3 timestamps of ms.pq read as milliseconds")
    pl.DataFrame({"user_id": ["u", "u", "u", "u"], "item_id": ["1", "2", "3", "1"],
                  "timestamp": [1704300000.5, float("nan"), 2.0 ** 70, 1.7e18]}).write_parquet(tmp_path / "f.pq")
    data = import_table(tmp_path / "f.pq", items, on_bad_rows="skip")
    assert data.interactions["timestamp"].to_list() == [1704300000, 1700000000]
    assert data.report.rejected["row"].to_list() == [2, 3]  # NaN; 2^70 is too large even for nanoseconds
    huge = pl.DataFrame({"user_id": ["u"], "item_id": ["1"], "timestamp": [2**64 - 1]},
                        schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.UInt64})
    huge.write_parquet(tmp_path / "u.pq")
    _raises(["u.pq, row 1: unparsable timestamp '18446744073709551615'"], import_table, tmp_path / "u.pq", items)


def test_the_slow_csv_path_keeps_quoted_newlines_the_bom_and_old_mac_line_ends(tmp_path: Path) -> None:
    # one undecodable byte sends a file down the line-by-line path, which split a quoted field at its newline (the
    # item kept half its text, the other half was a bad row), kept the BOM in the first column's name ("missing
    # column 'item_id'") and repeated header names broke it; CR-only files and a header that is not UTF-8 were read
    # as one long header, or with U+FFFD in the names
    events = _write(tmp_path / "events.csv", ["user_id,item_id,timestamp", "u,1,10", "u,2,20", "u,3,30"])
    items = tmp_path / "items.csv"
    items.write_bytes(b'\xef\xbb\xbfitem_id,text,text\r\n1,"Red mug,\r\n 300 ml",a\r\n2,Caf\xe9 cup,b\r\n3,Jar,c\r\n')
    data = import_table(events, items, on_bad_rows="skip")
    assert data.items.rows() == [("1", "Red mug,\r\n 300 ml"), ("3", "Jar")]
    assert data.report.rejected.select("file", "row").rows() == [("events.csv", 2), ("items.csv", 2)]
    assert data.report.rejected["problem"][1] == ("not valid utf-8 text (invalid continuation byte); pass the "
                                                  "file's encoding with items_encoding (e.g. cp1252 for a Windows "
                                                  "export, latin-1)")
    assert data.report.rows_read["items.csv"] == 3  # the bad row was read too
    items.write_bytes(b"item_id,text\n1,Mug\n2,\"Caf\xe9 cup\n3,Jar\n4,Pot\n")
    _raises(["items.csv, row 2: a quoted field opened on line 3 of the file is never closed: the 2 lines after it "
             "would be read as its text"], import_table, events, items, on_bad_rows="skip")
    items.write_bytes(b"item_id,text\r1,Mug\r2,Cup\r3,Jar\r")
    assert import_table(events, items).items.rows() == [("1", "Mug"), ("2", "Cup"), ("3", "Jar")]
    items.write_bytes(b"item_id,t\xe9xt\n1,Mug\n")
    _raises(["items.csv: the header line is not valid utf-8 text (invalid continuation byte); pass the file's "
             "encoding"], import_table, events, items)


def test_a_field_that_opens_with_a_quote_but_is_not_quoted_is_read_as_written(tmp_path: Path) -> None:
    # `"Best" pan` (the quote closes before the field ends) sent a file down the slow path, where Python's csv module
    # made it `Best pan`; polars took `"Best" pan "large"` in and made it `Best pan large`: quotes lost silently
    events = _write(tmp_path / "events.csv", ["user_id,item_id,timestamp", "u,1,10", "u,2,20", "u,3,30"])
    items = _write(tmp_path / "items.csv", ["item_id,text", '1,"Best" pan', '2,"Red mug, 300 ml"', '3,"" pan'])
    data = import_table(events, items)
    assert data.items["text"].to_list() == ['"Best" pan', "Red mug, 300 ml", '"" pan']
    assert data.report.notes[0] == ("2 rows of items.csv have a field that opens with a quote but is not a quoted "
                                    "field (row 1: '\"Best\" pan'): read as written, quotes kept")
    _write(items, ["item_id,text", '1,"Best" pan "large"', '2,"say ""hi"""', "3,a \"mid\" quote"])
    data = import_table(events, items)
    assert data.items["text"].to_list() == ['"Best" pan "large"', 'say "hi"', 'a "mid" quote']
    assert data.report.notes[0].startswith("1 row of items.csv has a field that opens with a quote")


@pytest.mark.parametrize("field", ['"Best" pan "large"', '"Best" pan', '""', '"say, ""hi"""', 'a "mid" quote',
                                   '"two\nlines"', "x\"", "", "plain"])
def test_both_csv_paths_read_a_field_alike(tmp_path: Path, field: str) -> None:
    # the fast path (polars) and the slow one (record by record) read some fields differently: `""` was "" on one
    # and missing on the other, `"Best" pan "large"` lost its quotes on one
    from recsys.data.bad_rows import BadRows
    from recsys.data.dataset import ImportReport
    from recsys.data.table_files import _line_by_line, read_table

    path = tmp_path / "items.csv"
    path.write_text(f"item_id,text,n\n1,{field},9\n2,Cup,8\n", encoding="utf-8")
    either = read_table(path, ImportReport())
    assert either.equals(_line_by_line(path, ",", "utf-8", BadRows(), ImportReport()))
    assert either.height == 2


def test_a_byte_order_mark_decides_a_files_encoding(tmp_path: Path) -> None:
    # Excel's "Unicode text" export (UTF-16 with a BOM) could not be imported with the UTF-8 events beside it, and
    # with --encoding utf-16 the events file was a "'utf-16-le' codec can't decode" ValueError naming no file (the
    # CLI's "Invalid value"); a UTF-8 file with a BOM read with the other file's latin-1 got 'ï»¿item_id'
    events = _write(tmp_path / "events.tsv", ["user_id\titem_id\ttimestamp", "u\t1\t10", "u\t2\t20"])
    items = tmp_path / "items.txt"
    items.write_bytes("item_id\ttext\n1\tCafé mug\n2\tThé\tvert\n".encode("utf-16"))  # row 2: three fields
    data = import_table(events, items, delimiter="tab", on_bad_rows="skip")
    assert data.items.rows() == [("1", "Café mug")]
    assert data.report.rejected.select("file", "row", "problem").rows() == [
        ("events.tsv", 2, "item was rejected from items.txt (its row there is bad)"),  # the ragged line's first field
        ("items.txt", 2, "unparsable line: expected 2 fields, found 3")]
    items.write_bytes(codecs.BOM_UTF8 + "item_id\ttext\n1\tCafé mug\n2\tThé\n".encode())
    latin = tmp_path / "events.txt"
    latin.write_bytes("user_id\titem_id\ttimestamp\nJosé\t1\t10\n".encode("latin-1"))
    data = import_table(latin, items, delimiter="tab", encoding="latin-1")
    assert data.items["text"].to_list() == ["Café mug", "Thé"] and data.interactions["user_id"].to_list() == ["José"]
    items.write_bytes("item_id\ttext\n1\tCafé mug\n".encode("utf-16")[:-1])  # cut inside its last character
    _raises(["items.txt: not valid utf-16 text (truncated data at byte 48); pass the file's encoding with "
             "items_encoding"],
            import_table, events, items, delimiter="tab")


def test_a_windows_file_read_as_latin_1_is_noted(tmp_path: Path) -> None:
    # the error's advice was "e.g. latin-1", which decodes every byte: a cp1252 export's curly quotes became C1
    # control characters in the item texts ('\x93Best\x94 mug'), silently
    items = tmp_path / "items.csv"
    items.write_bytes("item_id,text\n1,\u201cBest\u201d mug \u2013 \u20ac5\n2,Cup\n".encode("cp1252"))
    events = _write(tmp_path / "events.csv", ["user_id,item_id,timestamp", "u,1,10", "u,2,20"])
    _raises(["items.csv, row 1: not valid utf-8 text (invalid start byte); pass the file's encoding with "
             "items_encoding (e.g. cp1252 for a Windows export, latin-1)"], import_table, events, items)
    data = import_table(events, items, encoding="latin-1")
    assert data.items["text"][0] == "\x93Best\x94 mug \x96 \x805"  # what latin-1 makes of it, now not silently:
    assert data.report.notes[0] == ("1 line of items.csv holds control characters (U+0080-U+009F), which latin-1 "
                                    "makes of a Windows file's curly quotes, dashes and €: the file is probably "
                                    "cp1252 (pass cp1252 with items_encoding)")
    data = import_table(events, items, encoding="cp1252")
    assert data.items["text"][0] == "\u201cBest\u201d mug \u2013 \u20ac5"
    assert not any("control characters" in note for note in data.report.notes)
    items.write_bytes("item_id,text\n1,Mug\u2026 large\n2,Cup \u2026\n".encode("cp1252"))  # … is byte 0x85: U+0085 in
    data = import_table(events, items, encoding="latin-1")  # latin-1, a line end to str.splitlines ("0 lines … hold")
    assert data.report.notes[0].startswith("2 lines of items.csv hold control characters (U+0080-U+009F)")


def test_dates_written_as_one_number_are_dates(tmp_path: Path) -> None:
    # a warehouse's date keys (20240102) were epoch seconds: every event in August 1970; with a time (20240102103000)
    # they were milliseconds: the year 2611. Both silently
    items = _write(tmp_path / "items.csv", ["item_id,text", "1,Mug", "2,Cup", "3,Jar"])
    events = _write(tmp_path / "events.csv", ["user_id,item_id,timestamp", "u,1,20240102", "u,2,20240102103000",
                                              "u,3,20240132"])
    data = import_table(events, items, on_bad_rows="skip")
    assert data.interactions["timestamp"].to_list() == [1704153600, 1704191400]
    assert data.report.rejected.select("row", "value").rows() == [(3, "20240132")]  # no 32nd of January
    assert data.report.notes[0] == "3 timestamps of events.csv read as dates written YYYYMMDD or YYYYMMDDHHMMSS"
    pl.DataFrame({"user_id": ["u", "u"], "item_id": ["1", "2"], "timestamp": [20240102, 20240103]}).write_parquet(
        tmp_path / "keys.pq")
    assert import_table(tmp_path / "keys.pq", items).interactions["timestamp"].to_list() == [1704153600, 1704240000]
    _write(events, ["user_id,item_id,timestamp", "u,1,0", "u,2,7", "u,3,9999999999"])  # positions stay numbers
    data = import_table(events, items, on_bad_rows="skip")
    assert data.interactions["timestamp"].to_list() == [0, 7]
    assert data.report.rejected["value"].to_list() == ["9999999999"]  # the year 2286: no shop's time


def test_dates_written_as_one_number_beside_other_forms_are_dates_each(tmp_path: Path) -> None:
    """A column mixing 20240101-style dates with epoch seconds, milliseconds or ISO times read the dates as epoch
    seconds (August 1970), silently: a user's latest event came first, and split picked the wrong targets."""
    items = _write(tmp_path / "items.csv", ["item_id,text", "1,Mug", "2,Cup", "3,Jar", "4,Pan"])
    events = _write(tmp_path / "events.csv", ["user_id,item_id,timestamp", "u,1,20240101", "u,2,20240103",
                                              "u,3,1704153600", "v,1,1704067200000", "v,2,2024-01-02T00:00:00Z",
                                              "v,4,20240104103000", "w,1,20240132", "w,2,1704067200.5"])
    data = import_table(events, items, on_bad_rows="skip")
    day = 86_400
    start = 1704067200  # 2024-01-01
    assert data.interactions.select("user_id", "item_id", "timestamp").rows() == [
        ("u", "1", start), ("u", "2", start + 2 * day), ("u", "3", start + day), ("v", "1", start),
        ("v", "2", start + day), ("v", "4", start + 3 * day + 37800), ("w", "2", start)]
    assert data.report.rejected.select("row", "value").rows() == [(7, "20240132")]  # no 32nd of January
    assert "4 timestamps of events.csv read as dates written YYYYMMDD or YYYYMMDDHHMMSS, each value by its own " \
           "form" in data.report.notes
    pl.DataFrame({"user_id": ["u", "u"], "item_id": ["1", "2"], "timestamp": [20240102, 1704240000]}).write_parquet(
        tmp_path / "mixed.pq")
    assert import_table(tmp_path / "mixed.pq", items).interactions["timestamp"].to_list() == [start + day,
                                                                                              start + 2 * day]


def test_header_only_or_fully_rejected_interactions_are_errors(tmp_path: Path) -> None:
    events, items = _toy_csv(tmp_path)
    events.write_text("customer,sku,when\n")
    _raises(["events.csv", "no interactions: the file has a header but no rows"], import_table, events, items,
            **_csv_kwargs())
    events.write_text("customer,sku,when\nc1,NOPE,2024-01-01\n")
    _raises(["events.csv", "no interactions: none of its 1 row is usable (row 1: unknown item id 'NOPE' (not in "
             "products.csv))"], import_table, events, items,
            on_bad_rows="skip", **_csv_kwargs())


# ---------------------------------------------------------------- the real benchmark files
@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "amazon-scientific").is_dir(), reason="shared/data not present")
def test_real_amazon_scientific() -> None:
    data = import_recbole_sequential(SHARED_DATA / "amazon-scientific")
    inter = data.interactions
    assert (data.items.height, data.n_users, inter.height) == (4385, 8442, 59427)
    last_two = inter.sort("user_id", "timestamp").group_by("user_id").agg(pl.col("split").tail(2))
    assert last_two["split"].list.get(0).eq("valid").all() and last_two["split"].list.get(1).eq("test").all()
    assert inter.filter(pl.col("split") == "train").height == 59427 - 2 * 8442
    assert data.report.dropped == {}
    assert any("train=0, valid=0, test=0" in note for note in data.report.notes)
    assert data.items["title"].str.len_chars().min() > 0


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "movielens-100k").is_dir(), reason="shared/data not present")
def test_real_movielens_100k() -> None:
    data = import_recbole_movielens(SHARED_DATA / "movielens-100k")
    assert (data.items.height, data.n_users, data.interactions.height) == (1682, 943, 100000)
    toy_story = data.items.filter(pl.col("item_id") == "1").row(0, named=True)
    assert toy_story["text"] == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    assert re.fullmatch(r"\d{9}", str(data.interactions["timestamp"][0]))


def test_the_events_columns_an_import_does_not_read_are_named_in_its_notes(tmp_path: Path) -> None:
    """An event-type column (view / cart / purchase) was dropped without a word: every event counts alike."""
    items = _write(tmp_path / "items.csv", ["item_id,text", "1,Mug", "2,Cup"])
    events = _write(tmp_path / "events.csv", ["user_id,item_id,timestamp,event_type,session",
                                              "u,1,1704300000,view,s1", "u,2,1704300060,purchase,s1"])
    data = import_table(events, items)
    assert "events.csv: 2 columns not read ('event_type', 'session'): an interaction is a user, an item and a " \
           "time; an event-kind column (view, cart, purchase) is read with --kind-col, and --kinds keeps some kinds " \
           "only" in data.report.notes
    plain = import_table(_write(tmp_path / "plain.csv", ["user_id,item_id,timestamp", "u,1,1704300000"]), items)
    assert not any("not read" in note for note in plain.report.notes)
    kinds = import_table(events, items, kind_col="event_type")
    assert "events.csv: 1 column not read ('session'): an interaction is a user, an item and a time" \
        in kinds.report.notes


def test_an_event_kind_column_is_counted_and_kinds_keep_only_their_events(tmp_path: Path) -> None:
    """A shop's export of views, cart adds and purchases: `--kind-col` counts them, `--kinds` keeps some."""
    items = _write(tmp_path / "items.csv", ["item_id,text", "1,Mug", "2,Cup", "3,Jar"])
    rows = [("a", 1, "view"), ("a", 2, "Purchase"), ("a", 3, " cart "), ("b", 1, "view"), ("b", 3, "view"),
            ("b", 2, "purchase"), ("c", 2, ""), ("c", 9, "view")]  # item 9 is unknown, but only on a view
    events = _write(tmp_path / "events.csv", ["user_id,item_id,timestamp,type"]
                    + [f"{u},{i},{1704300000 + n},{k}" for n, (u, i, k) in enumerate(rows)])
    everything = import_table(events, items, kind_col="type", on_bad_rows="skip")
    assert "events.csv: 8 events by 'type': view 4, Purchase 2, cart 1, (empty) 1" in everything.report.notes
    assert everything.interactions.height == 7 and everything.report.rejected.height == 1  # item 9's view

    bought = import_table(events, items, kind_col="type", kinds=["purchase", "CART"])  # no bad row is left
    assert bought.interactions.select("user_id", "item_id").rows() == [("a", "2"), ("a", "3"), ("b", "2")]
    assert bought.report.dropped == {"events of other kinds than purchase, CART (events.csv, kinds)": 5}
    with pytest.raises(DataError, match=r": kinds names 'purchases', which the 'type' column never holds; it holds "
                                        r"'view', 'Purchase', 'cart', '\(empty\)'"):
        import_table(events, items, kind_col="type", kinds=["purchases"])
    with pytest.raises(DataError, match="missing column 'kind'"):
        import_table(events, items, kind_col="kind")
    with pytest.raises(ValueError, match="^kinds: needs kind_col, the column that holds each event's kind$"):
        import_table(events, items, kinds=["view"])
    with pytest.raises(ValueError, match=r"^kinds: names no kind: give some, such as \['purchase', 'cart'\]$"):
        import_table(events, items, kind_col="type", kinds=[])


def test_an_imports_event_kinds_are_stored_and_a_dataset_without_them_still_loads(tmp_path: Path) -> None:
    """The kinds were counted and then dropped, so an imported purchase could only read "… in your history": each
    kept event's kind is stored (stripped, lower-cased; empty: null). Events of one user and item at one time stay
    one interaction, as without kinds, of the last row's kind."""
    items = _write(tmp_path / "items.csv", ["item_id,text", "1,Mug", "2,Cup", "3,Jar"])
    events = _write(tmp_path / "events.csv", ["user_id,item_id,timestamp,type", "a,1,100,View", "a,1,100,Purchase",
                                              "a,2,101, Cart ", "b,3,102,", "b,3,102,", "b,1,103,view"])
    kept = import_table(events, items, kind_col="type").save(tmp_path / "kinds")
    stored = pl.read_parquet(kept / "interactions.parquet")
    assert stored.columns == ["user_id", "item_id", "timestamp", "kind"]
    assert stored.rows() == [("a", "1", 100, "purchase"), ("a", "2", 101, "cart"), ("b", "3", 102, None),
                             ("b", "1", 103, "view")]
    schema = json.loads((kept / "schema.json").read_text())
    assert schema["interaction_columns"]["kind"] == "String"
    assert schema["import_report"]["dropped"] == {
        "exact duplicate interaction rows (events.csv)": 1,
        "events at the time of another of the same user and item, of another kind: the last row's kind is kept "
        "(events.csv)": 1}
    assert Dataset.load(kept).interactions.equals(stored)
    bought = import_table(events, items, kind_col="type", kinds=["purchase"]).interactions
    assert bought.rows() == [("a", "1", 100, "purchase")]

    plain = import_table(events, items).save(tmp_path / "plain")  # as before: no kind column, the same events
    loaded = Dataset.load(plain)
    assert loaded.interactions.columns == ["user_id", "item_id", "timestamp"]
    assert loaded.interactions.rows() == stored.drop("kind").rows()
    assert loaded.report.dropped == {"exact duplicate interaction rows (events.csv)": 2}
    with pytest.raises(DataError, match="column 'kind' has type Int64, expected String"):
        Dataset("odd", loaded.items, loaded.interactions.with_columns(kind=pl.lit(1, pl.Int64)))


def test_an_exports_own_kind_names_are_stored_as_the_apis(tmp_path: Path) -> None:
    """A RetailRocket-style export says 'transaction' and 'addtocart': stored as such, the API read them "… in your
    history". `kind_names` stores them as the API's purchase and cart; a kind it does not rename is kept as it is."""
    items = _write(tmp_path / "items.csv", ["item_id,text", "1,Mug", "2,Cup", "3,Jar"])
    events = _write(tmp_path / "events.csv", ["user_id,item_id,timestamp,event", "a,1,100,Transaction",
                                              "a,2,101,addtocart", "a,3,102,view", "b,1,103,refund"])
    data = import_table(events, items, kind_col="event",
                        kind_names={"transaction": "purchase", "addtocart": "cart"})
    assert data.interactions["kind"].to_list() == ["purchase", "cart", "view", "refund"]
    assert "events.csv: stored as the API's kinds: Transaction → purchase, addtocart → cart" in data.report.notes
    kept = import_table(events, items, kind_col="event", kinds=["transaction"],
                        kind_names={"transaction": "purchase"})
    assert kept.interactions.rows() == [("a", "1", 100, "purchase")]
    with pytest.raises(DataError, match=r"kind_names names 'purchased', which the 'event' column never holds; it "
                                        r"holds 'addtocart', 'refund', 'Transaction', 'view'"):
        import_table(events, items, kind_col="event", kind_names={"purchased": "purchase"})
    with pytest.raises(ValueError, match=r"^kind_names: needs kind_col, the column that holds each event's kind$"):
        import_table(events, items, kind_names={"transaction": "purchase"})


def test_prices_in_a_shops_notation_are_read_and_an_ambiguous_one_stays_a_bad_row(tmp_path: Path) -> None:
    """'12,50' or '€19.99' rejected the product and every event on it."""
    items = _write(tmp_path / "items.csv", ["item_id,text,price", '1,Mug,"12,50"', "2,Cup,€19.99",
                                            '3,Jar,"1.234,50 EUR"', '4,Pan,"1,299.00"', "5,Pot,7", "6,Lid,"])
    events = _write(tmp_path / "events.csv", ["user_id,item_id,timestamp"]
                    + [f"u,{i},{1704300000 + i}" for i in range(1, 7)])
    data = import_table(events, items, extra_item_cols=["price"])
    assert data.items["price"].to_list() == [12.5, 19.99, 1234.5, 1299.0, 7.0, None]
    assert data.interactions.height == 6
    assert "4 prices of items.csv read from a shop's notation (a decimal comma, digit groups, a currency sign: " \
           "'1.234,50 €' → 1234.5)" in data.report.notes
    ambiguous = _write(tmp_path / "ambiguous.csv", ["item_id,text,price", '1,Mug,"1,234"', "2,Cup,12abc"])
    with pytest.raises(DataError, match=r"row 1: unparsable price '1,234'; row 2: unparsable price '12abc'"):
        import_table(events, ambiguous, extra_item_cols=["price"])
