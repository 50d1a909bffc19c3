"""RecBole atomic files read line by line: tab-separated fields under a `name:type` header, every problem a
`DataError` naming the file and the row (1-based, header excluded), or a bad row of a `BadRows` where the caller
collects them (`recsys.data.movielens`)."""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from pathlib import Path

from recsys.data.bad_rows import BadRows
from recsys.data.dataset import ImportReport
from recsys.data.table_files import shown_line
from recsys.errors import DataError
from recsys.text_format import named

Row = tuple[int, list[str]]  # (1-based row number, header excluded; fields)


def read_lines(path: Path, header: bool) -> tuple[str | None, list[tuple[int, str]]]:
    """Decoded lines of a UTF-8 text file as (row, line), without a byte-order mark; `header` lines are not
    numbered."""
    if not path.is_file():
        raise DataError("a directory, not a file" if path.is_dir() else "file not found", source=str(path))
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = data[: exc.start].count(b"\n") + 1
        raise DataError(f"unparsable line: not valid UTF-8 ({exc.reason})", source=str(path),
                        row=line_no - int(header)) from None
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    first = lines[0] if header and lines else None
    body = lines[1:] if header else lines
    return first, list(enumerate(body, start=1))


def split_rows(path: Path, rows: list[tuple[int, str]], n_fields: int, report: ImportReport,
                free_last: bool = False, bad: BadRows | None = None) -> list[Row]:
    """Split tab-separated lines, skipping (and counting) blank ones; a wrong field count is an error, or a bad row
    of `bad` (its line the value, as `shown_line` cuts it) when given."""
    out: list[Row] = []
    for row, line in rows:
        if not line.strip():
            report.drop(f"blank lines ({path.name})", 1)
            continue
        fields = line.split("\t", n_fields - 1) if free_last else line.split("\t")
        if len(fields) != n_fields:
            problem = f"unparsable line: expected {n_fields} tab-separated fields, found {len(fields)}"
            if bad is None:
                raise DataError(problem, source=str(path), row=row)
            bad.add(path, row, problem, shown_line(line), unread=list(fields))
            continue
        out.append((row, fields))
    report.rows_read[path.name] = len(rows)  # every data line, the blank ones (counted as dropped) too
    return out


def atomic_file(path: Path, required: Sequence[str], report: ImportReport, free_last: bool = False,
            bad: BadRows | None = None) -> tuple[dict[str, int], list[Row]]:
    """Read a RecBole atomic file (`name:type` header); returns column positions and rows (`bad`: where lines with
    the wrong field count go, instead of an error)."""
    header, body = read_lines(path, header=True)
    if header is None:
        raise DataError("the file is empty (expected a `name:type` header line)", source=str(path))
    names = [h.split(":", 1)[0].strip() for h in header.split("\t")]
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(f"missing {named('column', missing)}; found {names}", source=str(path))
    return {c: i for i, c in enumerate(names)}, split_rows(path, body, len(names), report, free_last, bad)


def parse_int(value: str, what: str, path: Path, row: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"unparsable {what} {value!r}: expected an integer", source=str(path), row=row) from None


def format_hint(directory: Path, command: str) -> str:
    """"; … use `recsys import X`" when `directory` holds the other RecBole layout than `command` reads."""
    if command != "recbole" and list(directory.glob("*.train.inter")):
        return "; it holds *.train.inter files: RecBole/UniSRec sequential data, read by `recsys import recbole`"
    if command != "movielens" and list(directory.glob("*.item")) and list(directory.glob("*.inter")):
        return "; it holds *.inter and *.item files: RecBole MovieLens data, read by `recsys import movielens`"
    if (directory / "ratings.csv").is_file() and (directory / "movies.csv").is_file():
        return ("; it holds GroupLens' ratings.csv and movies.csv, read by `recsys import table --interactions "
                f"{directory / 'ratings.csv'} --items {directory / 'movies.csv'} --user-col userId --item-col movieId "
                "--item-id-col movieId --text-template '{title} | genres: {genres}'`")
    if (directory / "schema.json").is_file():  # `recsys import movielens data/ml100k`, the import's own output
        return ("; it holds a dataset already imported (schema.json): commands read it as it is "
                f"(`recsys build --data {directory}`)")
    if (directory / "u.data").is_file() or (directory / "ratings.dat").is_file():
        return ("; it holds GroupLens' own files (u.data / ratings.dat): `recsys import movielens` reads RecBole's "
                "atomic files (<name>.inter, <name>.item), which RecBole's conversion scripts write from them")
    return ""
