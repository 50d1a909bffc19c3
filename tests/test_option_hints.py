"""Each command's error hints name its own options, as a command line writes them; the Python importers name their
own keywords. `push-items` reads one file (no --items-delimiter), and a
malformed --text-template is named as the option, not as `text_template:`."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from jobs.cli import app
from recsys.data import import_recbole_movielens, import_table
from recsys.data.dataset import Dataset
from recsys.errors import DataError


def run(*args) -> tuple[int, str]:
    """(exit code, output on one line: the terminal wraps long messages and draws boxes)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def shop(tmp_path) -> tuple[Path, Path]:
    """(events.csv with an event on an unknown item S9, products.csv)."""
    items = write(tmp_path / "products.csv", "sku,title", "S1,Trail Shoe", "S2,Wool Socks")
    events = write(tmp_path / "events.csv", "customer,sku,ts", "c1,S1,1", "c1,S9,2")
    return events, items


def test_import_movielens_names_its_on_bad_rows_option_as_each_caller_writes_it(tmp_path):
    """`import movielens` had no --on-bad-rows (its error offered none); now it has, and names it."""
    write(tmp_path / "ml.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
          "1\tToy Story\t1995\tComedy")
    write(tmp_path / "ml.inter", "user_id:token\titem_id:token\ttimestamp:float", "196\t1\t881250949",
          "196\t9\t881250950")
    code, said = run("import", "movielens", tmp_path, "--out", tmp_path / "ds")
    assert code == 2
    assert said == (f"error: {tmp_path / 'ml.inter'}, row 2: unknown item id '9' (not in ml.item) (skip bad rows with "
                    "--on-bad-rows skip: the other rows are imported and every bad row is listed in rejected.csv)")
    with pytest.raises(DataError) as raised:
        import_recbole_movielens(tmp_path)
    # one bad row: "skip bad rows", not "skip them"
    assert str(raised.value) == (f"{tmp_path / 'ml.inter'}, row 2: unknown item id '9' (not in ml.item) (skip bad rows "
                                 "with on_bad_rows='skip': the other rows are imported and every bad row is listed in "
                                 "rejected.csv)")
    code, said = run("import", "movielens", tmp_path, "--out", tmp_path / "ds", "--on-bad-rows", "skip")
    assert code == 0, said
    assert f"rejected 1 bad row → {tmp_path / 'ds' / 'rejected.csv'}" in said, said


def test_import_table_names_its_flags_and_python_its_keywords(shop, tmp_path):
    events, items = shop
    args = ("import", "table", "--interactions", events, "--items", items, "--out", tmp_path / "ds",
            "--user-col", "customer", "--item-col", "sku", "--time-col", "ts", "--item-id-col", "sku")
    code, said = run(*args, "--text-col", "title")
    assert code == 2
    assert said == (f"error: {events}, row 2: unknown item id 'S9' (not in products.csv) (skip bad rows with "
                    "--on-bad-rows skip: the other rows are imported and every bad row is listed in rejected.csv)")
    code, said = run(*args)
    assert code == 2
    assert said == (f"error: {items}: no item text: pass --text-col or --text-template (no 'text' column); found "
                    "['sku', 'title']")
    code, said = run(*args, "--text-template", "{title")
    assert code == 2 and "Invalid value for --text-template: expected '}' before end of string" in said, said
    assert "text_template" not in said
    mapping = {"user_col": "customer", "item_col": "sku", "time_col": "ts", "item_id_col": "sku"}
    with pytest.raises(DataError) as raised:
        import_table(events, items, text_col="title", **mapping)
    assert str(raised.value) == (f"{events}, row 2: unknown item id 'S9' (not in products.csv) (skip bad rows with "
                                 "on_bad_rows='skip': the other rows are imported and every bad row is listed in "
                                 "rejected.csv)")
    with pytest.raises(ValueError, match=r"^text_template: expected '\}' before end of string$"):
        import_table(events, items, text_template="{title", **mapping)


def test_a_semicolon_header_names_the_delimiter_options_each_caller_has(shop, tmp_path):
    events, items = shop
    semicolons = write(tmp_path / "semi.csv", "sku;title", "S1;Trail Shoe")
    code, said = run("push-items", "--url", "http://127.0.0.1:9", "--items", semicolons, "--item-id-col", "sku",
                     "--text-col", "title")
    assert code == 2
    assert said == (f"error: {semicolons}: missing column 'sku'; found ['sku;title'] (one column: the header "
                    "looks semicolon-separated; pass --delimiter semicolon)")
    code, said = run("import", "table", "--interactions", events, "--items", semicolons, "--out", tmp_path / "ds",
                     "--user-col", "customer", "--item-col", "sku", "--time-col", "ts", "--item-id-col", "sku",
                     "--text-col", "title")
    assert code == 2
    assert said.endswith("(one column: the header looks semicolon-separated; pass --delimiter semicolon for both "
                         "files, or --items-delimiter semicolon for the item file alone)"), said
    with pytest.raises(DataError) as raised:
        import_table(events, semicolons, user_col="customer", item_col="sku", time_col="ts", item_id_col="sku",
                     text_col="title")
    assert str(raised.value).endswith("(one column: the header looks semicolon-separated; pass delimiter=';' for "
                                      "both files, or items_delimiter=';' for the item file alone)")


def test_a_bad_delimiter_or_encoding_names_the_option_it_came_from(shop, tmp_path):
    # "--items-delimiter ';;'" was "Invalid value: delimiter must be one character …", naming no option
    events, items = shop
    args = ("import", "table", "--interactions", events, "--items", items, "--out", tmp_path / "ds", "--user-col",
            "customer", "--item-col", "sku", "--time-col", "ts", "--item-id-col", "sku", "--text-col", "title")
    for option, value, problem in (
            ("--items-delimiter", ";;", "one character, or tab, comma, semicolon or pipe, not ';;'"),
            ("--delimiter", ";;", "one character, or tab, comma, semicolon or pipe, not ';;'"),
            ("--items-encoding", "klingon", "unknown encoding 'klingon'"),
            ("--encoding", "klingon", "unknown encoding 'klingon'")):
        code, said = run(*args, option, value)
        assert code == 2 and f"Invalid value for {option}: {problem}" in said, said
    code, said = run("push-items", "--url", "http://127.0.0.1:9", "--items", items, "--item-id-col", "sku",
                     "--text-col", "title", "--delimiter", "semi")
    assert code == 2 and "Invalid value for --delimiter: one character, or tab, comma, semicolon or pipe, not " \
        "'semi'" in said, said
    mapping = {"user_col": "customer", "item_col": "sku", "time_col": "ts", "item_id_col": "sku", "text_col": "title"}
    with pytest.raises(ValueError, match=r"^items_delimiter: one character, or tab, comma, semicolon or pipe, "
                                         r"not ';;'$"):
        import_table(events, items, items_delimiter=";;", **mapping)
    with pytest.raises(ValueError, match=r"^items_encoding: unknown encoding 'klingon'$"):
        import_table(events, items, items_encoding="klingon", **mapping)


def test_event_kind_errors_name_the_callers_options(shop, tmp_path):
    """`--kinds` without `--kind-col`, an empty `--kinds`, a kind the column never holds: a command names its flags,
    Python its keywords (both said "--kinds needs --kind-col" and "(events.csv, --kinds)")."""
    events, items = shop
    args = ("import", "table", "--interactions", events, "--items", items, "--out", tmp_path / "ds", "--user-col",
            "customer", "--item-col", "sku", "--time-col", "ts", "--item-id-col", "sku", "--text-col", "title")
    code, said = run(*args, "--kinds", "purchase")
    assert code == 2 and "Invalid value for --kinds: needs --kind-col, the column that holds each event's kind " \
        in said, said
    code, said = run(*args, "--kinds", " , ", "--kind-col", "ts")
    assert code == 2 and "Invalid value for --kinds: names no kind: give some, such as purchase,cart " in said, said
    code, said = run(*args, "--kinds", "refund", "--kind-col", "customer")
    assert code == 2 and said == f"error: {events}: --kinds names 'refund', which the 'customer' column never " \
        "holds; it holds 'c1'", said
    with pytest.raises(DataError, match=r": kinds names 'refund', which the 'customer' column never holds"):
        import_table(events, items, user_col="customer", item_col="sku", time_col="ts", item_id_col="sku",
                     text_col="title", kind_col="customer", kinds=["refund"])


def test_kind_names_are_checked_before_the_import_reads_anything(shop, tmp_path):
    """`--kind-names` maps the export's kinds to the API's three: a malformed entry, a kind the API does not word, a
    kind renamed twice, no `--kind-col`, a kind the column never holds: each a one-line error naming the flag."""
    events, items = shop
    args = ("import", "table", "--interactions", events, "--items", items, "--out", tmp_path / "ds", "--user-col",
            "customer", "--item-col", "sku", "--time-col", "ts", "--item-id-col", "sku", "--text-col", "title",
            "--kind-col", "customer")
    for value, problem in (("transaction", "'transaction' is not OWN=KIND, e.g. transaction=purchase"),
                           ("transaction=bought", "'transaction=bought' renames to 'bought'; the kinds the API words "
                                                  "are view, cart, purchase"),
                           ("t=purchase, T=cart", "'T' is renamed twice"),
                           (" , ", "names no kind: give some, such as transaction=purchase")):
        code, said = run(*args, "--kind-names", value)
        assert code == 2 and f"Invalid value for --kind-names: {problem}" in said, said
    code, said = run(*args[:-2], "--kind-names", "c1=purchase")
    assert code == 2 and "Invalid value for --kind-names: needs --kind-col, the column that holds each event's " \
        "kind" in said, said
    code, said = run(*args, "--kind-names", "refund=purchase")
    assert code == 2 and said == f"error: {events}: --kind-names names 'refund', which the 'customer' column never " \
        "holds; it holds 'c1'", said
    assert not (tmp_path / "ds").exists()
    code, said = run(*args, "--kind-names", "C1=purchase", "--on-bad-rows", "skip")
    assert code == 0, said
    assert pl.read_parquet(tmp_path / "ds" / "interactions.parquet")["kind"].unique().to_list() == ["purchase"]


def test_import_recbole_names_its_name_option_when_a_folder_holds_several_datasets(tmp_path):
    """The error said "pass name=", a keyword of the Python importer that the command did not have."""
    for name in ("Arts", "Tools"):
        write(tmp_path / f"{name}.text", "item_id:token\ttext:token_seq", "A1\tA widget.", "A2\tA gadget.")
        write(tmp_path / f"{name}.item2index", "A1\t1", "A2\t2")
        write(tmp_path / f"{name}.user2index", "u1\t1")
        write(tmp_path / f"{name}.train.inter", "user_id:token\titem_id_list:token_seq\titem_id:token", "1\t1\t2")
        write(tmp_path / f"{name}.valid.inter", "user_id:token\titem_id_list:token_seq\titem_id:token", "1\t1 2\t1")
        write(tmp_path / f"{name}.test.inter", "user_id:token\titem_id_list:token_seq\titem_id:token", "1\t1 2 1\t2")
    code, said = run("import", "recbole", tmp_path, "--out", tmp_path / "ds")
    assert code == 2
    assert "found ['Arts.text', 'Tools.text']; pass --name Arts (the files' common prefix)" in said, said
    code, said = run("import", "recbole", tmp_path, "--out", tmp_path / "ds", "--name", "Tools")
    assert code == 0, said
    assert Dataset.load(tmp_path / "ds").name == "Tools"
