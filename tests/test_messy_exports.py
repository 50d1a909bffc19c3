"""`import table` on exports as shops write them (walk D): dates written day or month first, ids a float column
wrote out, error messages that name the option which fixes the file."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from recsys.data import import_table
from recsys.data.option_names import IMPORT_TABLE_FLAGS
from recsys.errors import DataError


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _items(d: Path) -> Path:
    return _write(d / "items.csv", ["sku,title", "00001,Mug", "00002,Pan", "00003,Pot"])


def _error(*args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        import_table(*args, **kwargs)
    return str(info.value)


def _utc(stamp: int) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M")


KW = dict(user_col="customer", item_col="sku", time_col="ts", item_id_col="sku", text_col="title")


def test_a_date_written_month_first_is_never_read_day_first(tmp_path: Path) -> None:
    """A US export's 1/2/2024 (January 2) was read as 1 February, silently, when every value of the column was so
    written (polars guesses the day first); after an ISO value the same text was a bad row. Now such a date is a bad
    row whose message names the format to pass, and with it the dates are right."""
    events = _write(tmp_path / "events.csv", ["customer,sku,ts", "U1,00001,1/2/2024 10:00", "U1,00002,1/3/2024 9:00",
                                              "U2,00003,1/9/2024 8:00"])
    message = _error(events, _items(tmp_path), names=IMPORT_TABLE_FLAGS, **KW)
    assert "row 1: unparsable timestamp '1/2/2024 10:00': a date written day or month first is read only with " \
           "--timestamp-format '%d/%m/%Y %H:%M' (day first) or --timestamp-format '%m/%d/%Y %H:%M' (month first)" \
           in message
    data = import_table(events, tmp_path / "items.csv", timestamp_format="%m/%d/%Y %H:%M", **KW)
    assert [_utc(t) for t in data.interactions["timestamp"]] == ["2024-01-02 10:00", "2024-01-03 09:00",
                                                                 "2024-01-09 08:00"]


def test_the_order_a_column_tells_is_the_one_suggested(tmp_path: Path) -> None:
    items = _items(tmp_path)
    us = _write(tmp_path / "us.csv", ["customer,sku,ts", "U1,00001,01/02/2024", "U1,00002,01/15/2024"])
    assert "timestamp_format='%m/%d/%Y' (the month comes first: '01/15/2024')" in _error(us, items, **KW)
    eu = _write(tmp_path / "eu.csv", ["customer,sku,ts", "U1,00001,02.01.2024 10:00:05", "U1,00002,15.01.2024 1:00:00"])
    assert "timestamp_format='%d.%m.%Y %H:%M:%S' (the day comes first: '15.01.2024 1:00:00')" in _error(eu, items, **KW)
    data = import_table(eu, items, timestamp_format="%d.%m.%Y %H:%M:%S", **KW)
    assert [_utc(t) for t in data.interactions["timestamp"]] == ["2024-01-02 10:00", "2024-01-15 01:00"]


def test_year_first_forms_still_read_beside_epoch_numbers_and_offsets(tmp_path: Path) -> None:
    events = _write(tmp_path / "events.csv", ["customer,sku,ts", "U1,00001,2024-01-02T10:00:00+02:00",
                                              "U1,00002,2024-01-03 10:00", "U1,00003,1704362400000"])
    data = import_table(events, _items(tmp_path), **KW)
    assert [_utc(t) for t in data.interactions["timestamp"]] == ["2024-01-02 08:00", "2024-01-03 10:00",
                                                                 "2024-01-04 10:00"]
    other = _write(tmp_path / "other.csv", ["customer,sku,ts", "U1,00001,Tue 2 Jan 2024"])
    assert "unparsable timestamp 'Tue 2 Jan 2024': expected epoch seconds or milliseconds, an ISO 8601 datetime or " \
           "a date written YYYYMMDD, or another form with --timestamp-format" in _error(
               other, tmp_path / "items.csv", names=IMPORT_TABLE_FLAGS, **KW)


def test_ids_a_float_column_wrote_to_a_csv_are_the_integers_they_hold(tmp_path: Path) -> None:
    """pandas writes an integer column with one missing value as floats: `to_csv` gives "1.0". The events' items
    were all unknown ("1.0" is not "1") and the users were "1.0", which the API is never asked about."""
    items = _write(tmp_path / "items.csv", ["sku,title", "1,Mug", "2,Pan", "3,Pot"])
    events = _write(tmp_path / "events.csv", ["customer,sku,ts", "1.0,1.0,10", "1.0,2.0,20", "2.0,3.0,30",
                                              ",1.0,40", "2.0,,50"])
    data = import_table(events, items, on_bad_rows="skip", **KW)
    assert data.interactions.rows() == [("1", "1", 10), ("1", "2", 20), ("2", "3", 30)]
    assert data.report.rejected["problem"].to_list() == ["missing customer", "missing sku"]
    assert ("events.csv: the 4 ids of column 'sku' are written as whole floats ('1.0'): read as the integers they "
            "hold ('1')") in data.report.notes[1]
    mixed = _write(tmp_path / "mixed.csv", ["customer,sku,ts", "A7,1,10", "1.0,2,20"])  # one id otherwise: as written
    assert sorted(import_table(mixed, items, **KW).interactions["user_id"]) == ["1.0", "A7"]


def test_an_encoding_error_names_the_option_for_that_file(tmp_path: Path) -> None:
    """It said "pass the file's encoding", naming no option: --encoding reads both files, --items-encoding the item
    file alone."""
    items = tmp_path / "items.csv"
    items.write_bytes("sku;title\n00001;Crème brûlée\n".encode("latin-1"))
    events = _write(tmp_path / "events.csv", ["customer;sku;ts", "U1;00001;10"])
    assert "row 1: not valid utf-8 text (invalid continuation byte); pass the file's encoding with --items-encoding " \
           "(e.g. cp1252" in _error(events, items, delimiter=";", names=IMPORT_TABLE_FLAGS, **KW)
    events.write_bytes("customer;sku;ts\nJosé;00001;10\n".encode("latin-1"))
    assert "pass the file's encoding with --encoding" in _error(events, items, delimiter=";", items_encoding="latin-1",
                                                                names=IMPORT_TABLE_FLAGS, **KW)
    data = import_table(events, items, delimiter=";", encoding="latin-1", **KW)
    assert data.interactions.rows() == [("José", "00001", 10)] and data.items["text"].to_list() == ["Crème brûlée"]


def test_a_header_in_another_case_is_named_with_the_option_and_attributes_are_carried(tmp_path: Path) -> None:
    """`--item-id-col sku` on a file headed 'SKU' said only "missing column(s) ['sku']"; a 'Category' column was
    left out of the catalogue without a word (only 'category' was read as the items' category)."""
    items = _write(tmp_path / "items.csv", [" SKU , Title ,Category,Price", "00001,Mug,Kitchen,\"12,50\"",
                                            "00002,Pan,Kitchen,3"])
    events = _write(tmp_path / "events.csv", ["Customer,SKU,TS", "U1,00001,10", "U1,00002,20"])
    assert "missing column 'sku'; found ['SKU', 'Title', 'Category', 'Price'] ('SKU' differs only in case: " \
           "--item-id-col 'SKU')" in _error(events, items, names=IMPORT_TABLE_FLAGS, **KW)
    kw = dict(KW, item_id_col="SKU", text_col="Title")
    assert "('Customer' differs only in case: --user-col 'Customer'; 'SKU' differs only in case: --item-col 'SKU'; " \
           "'TS' differs only in case: --time-col 'TS')" in _error(events, items, names=IMPORT_TABLE_FLAGS, **kw)
    data = import_table(events, items, **dict(kw, user_col="Customer", item_col="SKU", time_col="TS"))
    assert data.items.select("item_id", "title", "category", "price").rows() == [
        ("00001", "Mug", "Kitchen", 12.5), ("00002", "Pan", "Kitchen", 3.0)]
    assert "items.csv: column 'Title' read as the items' title, column 'Category' read as the items' category, " \
           "column 'Price' read as the items' price" in data.report.notes


def test_grouplens_files_given_to_import_movielens_say_what_reads_them(tmp_path: Path) -> None:
    """`import movielens` reads RecBole's atomic files; GroupLens' own download said only "expected exactly one
    *.inter file, found []"."""
    from recsys.data import import_recbole_movielens

    _write(tmp_path / "ratings.csv", ["userId,movieId,rating,timestamp", "1,1,4.0,964982703", "1,3,4.0,964981247"])
    _write(tmp_path / "movies.csv", ["movieId,title,genres", "1,Toy Story (1995),Animation|Comedy",
                                     '3,"Heat, The (1995)",Action|Crime'])
    with pytest.raises(DataError) as info:
        import_recbole_movielens(tmp_path)
    assert "it holds GroupLens' ratings.csv and movies.csv, read by `recsys import table --interactions" \
        in str(info.value)
    data = import_table(tmp_path / "ratings.csv", tmp_path / "movies.csv", user_col="userId", item_col="movieId",
                        item_id_col="movieId", text_template="{title} | genres: {genres}")  # the command it names
    assert data.items["text"].to_list() == ["Toy Story (1995) | genres: Animation|Comedy",
                                            "Heat, The (1995) | genres: Action|Crime"]
    old = tmp_path / "ml-100k"
    old.mkdir()
    (old / "u.data").write_text("196\t242\t3\t881250949\n")
    with pytest.raises(DataError) as info:
        import_recbole_movielens(old)
    assert "it holds GroupLens' own files (u.data / ratings.dat): `recsys import movielens` reads RecBole's atomic " \
           "files" in str(info.value)


def test_excels_sep_line_names_the_separator(tmp_path: Path) -> None:
    """A first line `sep=;` (how Excel is told a CSV's separator) was read as the header: "missing column(s) ['sku'];
    found ['sep=', '']". It is skipped now and its separator used, on both the fast and the record-by-record path."""
    events = _write(tmp_path / "events.csv", ["customer,sku,ts", "U1,00001,10", "U1,00002,20", "U1,00003,30"])
    items = tmp_path / "items.csv"
    items.write_bytes(b'sep=;\r\nsku;title\r\n00001;"Mug; big"\r\n00002;Pan\r\n00003;Pot\r\n')
    data = import_table(events, items, **KW)
    assert data.items.select("item_id", "text").rows() == [("00001", "Mug; big"), ("00002", "Pan"), ("00003", "Pot")]
    assert "items.csv: its first line, 'sep=;', names the separator: read so" in data.report.notes
    items.write_bytes(b'\xef\xbb\xbfsep=;\nsku;title\n00001;"Best" mug\n00002;Pan\n00003;Pot\n')  # the slow path
    data = import_table(events, items, **KW)
    assert data.items["text"].to_list() == ['"Best" mug', "Pan", "Pot"] and data.report.rows_read["items.csv"] == 3


def test_html_in_item_texts_is_noted(tmp_path: Path) -> None:
    """A shop's description column is often HTML; it was imported as written without a word, so BERT read `<p>` and
    `&nbsp;` as words. It still is (the texts are the shop's), and the notes say so."""
    items = _write(tmp_path / "items.csv", ["sku,title", '00001,"<p>Great&nbsp;<b>mug</b></p>"',
                                            "00002,Tom & Jerry pan", "00003,Pot &amp; lid", "00004,5 < 7 > 3"])
    events = _write(tmp_path / "events.csv", ["customer,sku,ts", "U1,00001,10", "U1,00002,20"])
    data = import_table(events, items, **KW)
    assert data.items["text"][0] == "<p>Great&nbsp;<b>mug</b></p>"
    assert data.report.notes[0].startswith("2 item texts of items.csv hold HTML markup (row 1: "
                                           "'<p>Great&nbsp;<b>mug</b></p>'): read as written")


def test_a_file_name_with_braces_is_listed_not_a_traceback(tmp_path: Path) -> None:
    """The bad-row messages were filled in with str.format, so an item file named 'items{1}.csv' ended an import with
    bad rows in an IndexError traceback."""
    items = _write(tmp_path / "items{1}.csv", ["sku,title", "00001,Mug"])
    events = _write(tmp_path / "events.csv", ["customer,sku,ts", "U1,00001,10", "U1,99999,20"])
    assert "row 2: unknown item id '99999' (not in items{1}.csv)" in _error(events, items, **KW)


def test_utf16_without_a_byte_order_mark_names_the_encoding(tmp_path: Path) -> None:
    """SQL Server's `bcp -w` writes UTF-16 without a BOM: it was "missing column(s) ['customer', …]; found
    ['c\\x00u\\x00s\\x00…']"."""
    items = _items(tmp_path)
    events = tmp_path / "events.csv"
    events.write_bytes("customer,sku,ts\nU1,00001,10\n".encode("utf-16-le"))
    assert "the header holds NUL bytes between its letters: the file is probably UTF-16 without a byte-order mark; " \
           "pass --encoding utf-16-le" in _error(events, items, names=IMPORT_TABLE_FLAGS, **KW)
    data = import_table(events, items, encoding="utf-16-le", items_encoding="utf-8", **KW)
    assert data.interactions.rows() == [("U1", "00001", 10)]


def test_skipping_every_row_says_why(tmp_path: Path) -> None:
    """With on_bad_rows='skip' and no usable row the error said only "none of its 2 rows is usable": no dataset, so
    no rejected.csv, and the reason (here, the format to pass) was nowhere."""
    events = _write(tmp_path / "events.csv", ["customer,sku,ts", "U1,00001,1/2/2024", "U1,00002,1/3/2024"])
    assert "no interactions: none of its 2 rows is usable (row 1: unparsable timestamp '1/2/2024': a date written " \
           "day or month first is read only with --timestamp-format '%d/%m/%Y'" in _error(
               events, _items(tmp_path), on_bad_rows="skip", names=IMPORT_TABLE_FLAGS, **KW)


def test_year_first_forms_read_the_same_beside_any_other(tmp_path: Path) -> None:
    """`2024/01/03 10:00` was read when the whole column was so written and a bad row after an ISO value (polars
    infers one pattern per column; the fallback, fromisoformat, reads no slashes); BigQuery's `… 10:00:00 UTC` was a
    bad row."""
    events = _write(tmp_path / "events.csv", ["customer,sku,ts", "U1,00001,2024-01-02T10:00:00+02:00",
                                              "U1,00002,2024/01/03 10:00", "U1,00003,2024-1-4",
                                              "U2,00001,2024-01-05 10:00:00 UTC", "U2,00002,2024-01-06 10:00:00 GMT"])
    data = import_table(events, _items(tmp_path), **KW)
    assert [_utc(t) for t in data.interactions["timestamp"]] == ["2024-01-02 08:00", "2024-01-03 10:00",
                                                                 "2024-01-04 00:00", "2024-01-05 10:00",
                                                                 "2024-01-06 10:00"]
