"""Plain CSV / Parquet tables -> canonical `Dataset`, with a column mapping and an item-text template.

Bad rows (a missing or unknown id, an unparsable timestamp or price, an item id listed again with another text, a
line that does not decode or has the wrong number of fields) are collected over the whole file: by default the
import then stops with one `DataError` naming the file and listing them (row 1-based, header excluded); with
`on_bad_rows="skip"` they are left out and listed in the report (rejected.csv beside the dataset). Every row that is
legitimately skipped (blank lines, exact duplicates) is counted in the dataset's `ImportReport`.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import polars as pl

from recsys.data.dataset import OPTIONAL_ITEM_SCHEMA, REJECTED_FILE, REJECTED_SCHEMA, Dataset, ImportReport
from recsys.data.item_text import template_expr, template_fields
from recsys.errors import DataError

OnBadRows = Literal["fail", "skip"]
MIN_EVALUATED_EVENTS = 3  # a user's events for a leave-one-out valid and test example (`recsys.splits`)
LISTED = 5  # bad rows an error message shows


class BadRows:
    """Bad input rows, collected over a whole file instead of stopping at the first one. With `fail` the file's
    checks end in one DataError listing them (the first few and the total); with `skip` they are left out and
    kept (file, row, problem, value) in the import report, which `Dataset.save` writes to rejected.csv."""

    def __init__(self, mode: OnBadRows = "fail") -> None:
        if mode not in ("fail", "skip"):
            raise ValueError(f"on_bad_rows must be 'fail' or 'skip', got {mode!r}")
        self.mode = mode
        self.found: list[pl.DataFrame] = []

    def reject(self, frame: pl.DataFrame, mask: pl.Series | pl.Expr, problem: str, path: Path,
               value: str | pl.Series | None = None) -> pl.DataFrame:
        """Record the rows of `frame` (with `__row`) where `mask` holds; return the others. `{value!r}` in
        `problem` stands for that row's `value` (a column name or a Series aligned with `frame`)."""
        if isinstance(value, pl.Series):
            frame, value = frame.with_columns(value.alias("__value")), "__value"
        flagged = frame.with_columns(pl.lit(False).or_(mask).fill_null(False).alias("__bad")) \
            if isinstance(mask, pl.Expr) else frame.with_columns(mask.fill_null(False).alias("__bad"))
        bad = flagged.filter(pl.col("__bad"))
        if bad.height:
            values = bad[value].cast(pl.Utf8) if value else pl.Series([None] * bad.height, dtype=pl.Utf8)
            self.found.append(pl.DataFrame({"file": [path.name] * bad.height, "row": bad["__row"].cast(pl.Int64),
                                            "problem": [problem.replace(" {value!r}", "")] * bad.height,
                                            "value": values, "__template": [problem] * bad.height}))
        return flagged.filter(~pl.col("__bad")).drop("__bad", *(["__value"] if value == "__value" else []))

    def add(self, path: Path, row: int, problem: str, value: str | None = None) -> None:
        self.found.append(pl.DataFrame({"file": [path.name], "row": [row], "problem": [problem], "value": [value],
                                        "__template": [problem]},
                                       schema={"file": pl.Utf8, "row": pl.Int64, "problem": pl.Utf8, "value": pl.Utf8,
                                               "__template": pl.Utf8}))

    def table(self) -> pl.DataFrame:
        """Every bad row so far, by file and row, with its template (dropped by `rejected`)."""
        if not self.found:
            return pl.DataFrame(schema={**REJECTED_SCHEMA, "__template": pl.Utf8})
        return pl.concat(self.found).sort("file", "row", maintain_order=True)

    def rejected(self) -> pl.DataFrame:
        return self.table().drop("__template")

    def check(self, path: Path) -> None:
        """In `fail` mode, raise for `path`'s bad rows (all of them counted, the first few shown)."""
        if self.mode != "fail":
            return
        bad = self.table().filter(pl.col("file") == path.name)
        if not bad.height:
            return
        shown = [(row, template.format(value=value) if "{value" in template else template)
                 for row, template, value in bad.select("row", "__template", "value").head(LISTED).iter_rows()]
        if bad.height == 1:
            raise DataError(shown[0][1], source=str(path), row=shown[0][0])
        listed = "; ".join(f"row {row}: {problem}" for row, problem in shown)
        more = f"; … and {bad.height - LISTED} more" if bad.height > LISTED else ""
        raise DataError(f"{bad.height} bad rows: {listed}{more} (skip them with on_bad_rows='skip' / "
                        f"--on-bad-rows skip: the other rows are imported and every bad row is listed in "
                        f"{REJECTED_FILE})", source=str(path))


def _separator(path: Path, delimiter: str | None) -> str:
    if delimiter is None:
        return "\t" if path.suffix.lower() == ".tsv" else ","
    named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
    sep = named.get(delimiter.lower(), delimiter)
    if len(sep) != 1:
        raise ValueError(f"delimiter must be one character (or tab, comma, semicolon, pipe), got {delimiter!r}")
    return sep


_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes that did not decode, kept by the surrogateescape handler


def _undecodable(fields: list[str], sep: str, encoding: str) -> str | None:
    """Why a record read with surrogateescape holds bytes that are not `encoding` text; None when it has none."""
    text = sep.join(fields)
    if not _UNDECODED.search(text):
        return None
    try:
        text.encode(encoding, "surrogateescape").decode(encoding)
    except UnicodeDecodeError as exc:
        return exc.reason
    return "undecodable bytes"


def _line_by_line(path: Path, sep: str, encoding: str, bad: BadRows) -> pl.DataFrame:
    """The slow path for a file the CSV reader refused: Python's csv module, record by record (a quoted field may
    span lines; a UTF-8 byte-order mark is dropped); records that do not decode or have the wrong number of fields
    become bad rows (blank lines stay, as rows of nulls). A quoted field still open at the end of the file, having
    swallowed the lines after it, is an error."""
    try:
        text = path.read_bytes().decode(encoding, errors="surrogateescape")
    except UnicodeDecodeError as exc:  # what surrogateescape cannot keep: a UTF-16 file cut inside a character
        raise DataError(f"not valid {encoding} text ({exc.reason} at byte {exc.start:,}); pass the file's encoding",
                        source=str(path)) from None
    if codecs.lookup(encoding).name == "utf-8":
        text = text.removeprefix("\ufeff")
    lines = io.StringIO(text, newline="")
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))  # a long item text is one field (the default cap is 128 KiB)
    try:
        reader = csv.reader(lines, delimiter=sep)
        header = next(reader, None)
        if header is None:
            raise DataError("the file is empty", source=str(path))
        reason = _undecodable(header, sep, encoding)
        if reason:
            raise DataError(f"the header line is not valid {encoding} text ({reason}); pass the file's encoding",
                            source=str(path))
        rows, numbers, number, line = [], [], 0, reader.line_num
        first = line
        for number, fields in enumerate(reader, start=1):
            first, line = line + 1, reader.line_num
            reason = _undecodable(fields, sep, encoding)
            if reason:
                bad.add(path, number, f"not valid {encoding} text ({reason}); pass the file's encoding (e.g. cp1252 "
                        "for a Windows export, latin-1)")
            elif fields and len(fields) != len(header):
                bad.add(path, number, f"unparsable line: expected {len(header)} fields, found {len(fields)}")
            else:
                rows.append([f if f != "" else None for f in fields] or [None] * len(header))
                numbers.append(number)
        if line > first and _unclosed_quote(text, first, sep):
            swallowed = f"{line - first} line{'s' * (line - first > 1)}"
            raise DataError(f"a quoted field opened on line {first} of the file is never closed: the {swallowed} "
                            "after it would be read as its text; close or remove the stray quote",
                            source=str(path), row=number)
    finally:
        csv.field_size_limit(limit)
    names = _unique_names(header)
    frame = pl.DataFrame(rows, schema={h: pl.Utf8 for h in names}, orient="row")
    return frame.with_columns(pl.Series("__row", numbers, dtype=pl.UInt32)).select("__row", *names)


def _unclosed_quote(text: str, first: int, sep: str) -> bool:
    """Whether the record starting on line `first` (1-based) of `text` runs to the end inside a quoted field."""
    tail = io.StringIO(text, newline="")
    for _ in range(first - 1):
        tail.readline()
    try:
        for _ in csv.reader(tail, delimiter=sep, strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _unique_names(header: list[str]) -> list[str]:
    """Header names with repeats renamed as polars' CSV reader does ("text", "text_duplicated_0")."""
    names: list[str] = []
    for name in header:
        repeats = sum(1 for n in names if n == name or n.startswith(f"{name}_duplicated_"))
        names.append(f"{name}_duplicated_{repeats - 1}" if repeats else name)
    return names


_C1 = re.compile("[\x80-\x9f]")  # control characters latin-1 makes of cp1252's curly quotes, dashes, € and …


def _decoded(path: Path, encoding: str, report: ImportReport) -> str:
    """The text of `path` in `encoding` (UnicodeDecodeError when it is not); read as latin-1, the lines holding C1
    control characters are noted: latin-1 decodes every byte, so a Windows (cp1252) file read so gives no error and
    texts with control characters where its quotes, dashes and € were."""
    text = path.read_bytes().decode(encoding)
    if codecs.lookup(encoding).name == "iso8859-1" and _C1.search(text):
        lines = sum(1 for line in text.splitlines() if _C1.search(line))
        report.notes.append(f"{lines:,} line{'s' * (lines > 1)} of {path.name} hold{'s' * (lines == 1)} control "
                            "characters (U+0080-U+009F), which latin-1 makes of a Windows file's curly quotes, dashes "
                            "and €: the file is probably cp1252 (--encoding cp1252)")
    return text


BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _bom_encoding(path: Path) -> str | None:
    """The encoding a text file's byte-order mark names (Excel's "Unicode text" is UTF-16 with one), or None: a BOM
    decides over `encoding`, which then serves the other file."""
    with path.open("rb") as handle:
        start = handle.read(4)
    return next((name for bom, name in BOMS if start.startswith(bom)), None)


def _read_table(path: Path, report: ImportReport, bad: BadRows | None = None, delimiter: str | None = None,
                encoding: str = "utf-8") -> pl.DataFrame:
    """CSV/TSV (all columns as strings; `delimiter` and `encoding` when not the defaults) or Parquet, with a
    1-based `__row`; blank CSV lines are counted, undecodable or ragged lines are bad rows."""
    bad = bad or BadRows()
    if not path.is_file():
        raise DataError("file not found", source=str(path))
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".parquet", ".pq", ".txt"):
        raise DataError(f"unsupported file type {suffix!r}: expected .csv, .tsv, .txt or .parquet", source=str(path))
    if suffix in (".parquet", ".pq"):
        try:
            frame = pl.read_parquet(path).with_row_index("__row", offset=1)
        except (OSError, pl.exceptions.PolarsError) as exc:
            problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"not a readable Parquet file ({problem}); a CSV or TSV file needs a .csv, .tsv or .txt "
                            "name", source=str(path)) from None
    else:
        sep, encoding = _separator(path, delimiter), _bom_encoding(path) or encoding
        utf8, bad_before = codecs.lookup(encoding).name == "utf-8", sum(found.height for found in bad.found)
        try:
            source = path if utf8 else _decoded(path, encoding, report).encode("utf-8")
            frame = pl.read_csv(source, separator=sep, infer_schema=False).with_row_index("__row", offset=1)
            if any("\r" in name or "\ufffd" in name for name in frame.columns):
                frame = _line_by_line(path, sep, encoding, bad)  # old Mac line ends (CR alone), a header not UTF-8
        except pl.exceptions.NoDataError:
            raise DataError("the file is empty", source=str(path)) from None
        except (pl.exceptions.PolarsError, UnicodeDecodeError):
            frame = _line_by_line(path, sep, encoding, bad)
    report.rows_read[path.name] = frame.height  # every data row: the blank lines and the bad rows found here too
    if suffix not in (".parquet", ".pq"):
        stripped = [name.strip() for name in frame.columns]
        if len(set(stripped)) == len(stripped):  # "sku, title, price": the names after a comma and a space
            frame = frame.rename(dict(zip(frame.columns, stripped)))
        report.rows_read[path.name] += sum(found.height for found in bad.found) - bad_before
        if frame.width > 1:
            blank = pl.all_horizontal(pl.exclude("__row").is_null())
            report.drop(f"blank lines ({path.name})", frame.filter(blank).height)
            frame = frame.filter(~blank)
    return frame


def _require(frame: pl.DataFrame, columns: Sequence[str], path: Path, what: str = "column",
             single: bool = False) -> None:
    """DataError naming the `columns` the table lacks (and, with `single`, the first holding lists or records)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = [c for c in frame.columns if c != "__row"]
        raise DataError(f"missing {what}(s) {missing}; found {found}{_delimiter_hint(found)}", source=str(path))
    if single:
        check_single_values(frame, columns, path)


def _delimiter_hint(header: list[str]) -> str:
    """When a text file's header was read as one column that holds another delimiter: which one to pass."""
    if len(header) != 1:
        return ""
    for name, sep in (("comma", ","), ("semicolon", ";"), ("tab", "\t"), ("pipe", "|")):
        if sep in header[0]:
            return (f" (one column: the header looks {name}-separated; pass delimiter={sep!r} / --delimiter {name}, "
                    "which applies to both files)")
    return ""


def _id(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Utf8).str.strip_chars()


def check_single_values(frame: pl.DataFrame, columns: Sequence[str], path: Path) -> None:
    """DataError naming the first of `columns` that holds lists, arrays or records instead of single values."""
    for column in columns:
        dtype = frame.schema[column]
        if dtype.is_nested() or dtype == pl.Object:
            raise DataError(f"column {column!r} holds {dtype} values, not single values: join or pick one value "
                            "per row before importing", source=str(path))


def whole_floats_as_integers(frame: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """Float id columns with whole values written as integers (26.0 → "26"): pandas stores an integer column with
    a missing value as floats, and the same ids written as integers elsewhere must match. NaN (how such a column
    may hold the missing value) is missing, not the id "NaN"; other floats keep their own text."""
    fixes = []
    for column in dict.fromkeys(columns):
        if frame.schema[column].is_float():
            value = pl.col(column)
            whole = value.is_finite() & (value == value.floor()) & (value.abs() < 2.0 ** 53)
            fixes.append(pl.when(value.is_nan()).then(None)
                         .when(whole).then(value.cast(pl.Int64, strict=False).cast(pl.Utf8))
                         .otherwise(value.cast(pl.Utf8)).alias(column))
    return frame.with_columns(fixes) if fixes else frame


def _as_number(ids: pl.Expr) -> pl.Expr:
    """Ids written as a number would write them: without leading zeros and a whole float's ".0" ("007" and "7.0" ->
    "7"; "0" stays): what an id column stored as numbers (and then written out by pandas) makes of them."""
    return ids.str.replace(r"^0+(\d)", "$1").str.replace(r"^(\d+)\.0+$", "$1")


def _present(frame: pl.DataFrame, columns: Sequence[str], path: Path, bad: BadRows) -> pl.DataFrame:
    """Rows with every id column filled (the others are bad rows: "missing <column>")."""
    for column in columns:
        frame = bad.reject(frame, _id(column).is_null() | (_id(column) == ""), f"missing {column}", path)
    return frame


def _render(frame: pl.DataFrame, template: str, path: Path) -> pl.Expr:
    """The item-text template over the table's columns (`recsys.data.item_text`; every field must exist)."""
    try:
        fields = template_fields(template)
    except ValueError as exc:
        raise ValueError(f"text_template: {exc}") from None
    _require(frame, fields, path, "text_template field", single=True)
    return template_expr(template)


def _iso_seconds(value: str) -> int | None:
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return int((stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp())


EPOCH_UNITS = ((10**17, 10**9, "nanoseconds"), (10**14, 10**6, "microseconds"), (10**11, 10**3, "milliseconds"))
"""(least magnitude, per second, name): an epoch number this large is read in that unit, value by value (as seconds
10**11 is past the year 5000, so shops' millisecond clocks and the seconds beside them both come out right)."""


LATEST_EPOCH = 7_258_118_400
"""2200-01-01 in epoch seconds: an epoch number later than that, in whichever unit, is a bad row, not a time."""


def _epoch_numbers(numbers: pl.Series, report: ImportReport | None = None, path: Path | None = None) -> pl.Series:
    """Epoch numbers (integers or decimals; seconds, or milliseconds / microseconds / nanoseconds by magnitude,
    see `EPOCH_UNITS`) -> Int64 whole seconds (floored; null where a value is missing or not finite). How many
    values were read in each finer unit goes into `report`'s notes."""
    decimal = numbers.dtype.is_float()
    values = numbers.cast(pl.Float64 if decimal else pl.Int64, strict=False)  # past Int64: null, a bad row
    if decimal:
        values = pl.select(pl.when(values.is_finite()).then(values)).to_series()
    size, seconds, below = values.cast(pl.Float64).abs(), values, float("inf")
    for least, per_second, unit in EPOCH_UNITS:
        finer = ((size >= least) & (size < below)).fill_null(False)
        below, count = least, int(finer.sum())
        if not count:
            continue
        scaled = values / per_second if decimal else values // per_second
        seconds = pl.select(pl.when(finer).then(scaled).otherwise(seconds)).to_series()
        if report is not None:
            where = f" of {path.name}" if path else ""
            report.notes.append(f"{count:,} timestamp{'s' * (count > 1)}{where} read as {unit} since the epoch "
                                f"(from 10^{len(str(least)) - 1} on: as seconds they would fall after the year 5000)")
    if decimal:
        seconds = seconds.floor().cast(pl.Int64, strict=False)
    too_large = seconds.cast(pl.Float64).abs() >= LATEST_EPOCH  # not a shop's time (a date's digits): a bad row
    return pl.select(pl.when(~too_large).then(seconds)).to_series().cast(pl.Int64)


COMPACT_DATES = {8: ("%Y%m%d", 19000101, 21001231), 14: ("%Y%m%d%H%M%S", 19000101000000, 21001231235959)}
"""Digits: (format, least, most) of a date written as one number (YYYYMMDD, YYYYMMDDHHMMSS; years 1900-2100)."""


def _compact_dates(whole: pl.Series, report: ImportReport | None, path: Path | None) -> pl.Series | None:
    """Int64 seconds when every integer of `whole` (nulls aside) is shaped as a date written YYYYMMDD or
    YYYYMMDDHHMMSS (as epoch seconds or milliseconds those numbers would be August 1970 or the 26th century); one
    that is no such date (20240132) is null, a bad row. None when `whole` is not so shaped."""
    values = whole.drop_nulls()
    digits = values.cast(pl.Utf8).str.len_chars()
    shaped = pl.lit(False)
    for count, (_, least, most) in COMPACT_DATES.items():
        shaped = shaped | ((digits == count) & values.is_between(least, most))
    if values.is_empty() or not pl.select(shaped.all()).item():
        return None
    text = whole.cast(pl.Utf8)
    parsed = pl.Series([None] * whole.len(), dtype=pl.Datetime("us"))
    for count, (fmt, _, _) in COMPACT_DATES.items():
        these = pl.select(pl.when(text.str.len_chars() == count).then(text)).to_series()
        parsed = parsed.fill_null(these.str.to_datetime(fmt, strict=False, time_unit="us"))
    if report is not None:
        where = f" of {path.name}" if path else ""
        report.notes.append(f"{values.len():,} timestamp{'s' * (values.len() > 1)}{where} read as dates written "
                            "YYYYMMDD or YYYYMMDDHHMMSS")
    return parsed.dt.epoch("s")


def _epoch_seconds(frame: pl.DataFrame, column: str, fmt: str | None, report: ImportReport | None = None,
                   path: Path | None = None) -> pl.Series:
    """Numbers (epoch seconds / milliseconds / microseconds / nanoseconds, `_epoch_numbers`), datetimes, or strings
    (such numbers, ISO 8601 or `fmt`) -> Int64 seconds (null where a value is missing or does not parse)."""
    raw = frame[column]
    if raw.dtype.is_integer():
        compact = _compact_dates(raw.cast(pl.Int64, strict=False), report, path)
        return compact if compact is not None else _epoch_numbers(raw, report, path)
    if raw.dtype.is_numeric():
        return _epoch_numbers(raw, report, path)
    if raw.dtype in (pl.Date, pl.Datetime):
        return raw.cast(pl.Datetime("us")).dt.epoch("s") if raw.dtype == pl.Date else raw.dt.epoch("s")
    text = raw.cast(pl.Utf8).str.strip_chars()
    if fmt:
        return text.str.to_datetime(fmt, strict=False).dt.epoch("s")
    is_int = text.str.contains(r"^-?\d+$")  # epoch numbers row by row, then ISO 8601 for the rest
    is_decimal = text.str.contains(r"^-?\d*\.\d*$") & text.str.contains(r"\d")
    whole = pl.select(pl.when(is_int).then(text)).to_series().cast(pl.Int64, strict=False)
    numbers = whole.cast(pl.Float64) if is_decimal.any() else whole
    if is_decimal.any():
        numbers = numbers.fill_null(pl.select(pl.when(is_decimal).then(text)).to_series().cast(pl.Float64,
                                                                                               strict=False))
    compact = None if is_decimal.any() else _compact_dates(whole, report, path)
    seconds = compact if compact is not None else _epoch_numbers(numbers, report, path) \
        if numbers.is_not_null().any() else whole
    is_number = is_int | is_decimal
    iso_text = pl.select(pl.when(~is_number).then(text)).to_series()
    if iso_text.null_count() < len(iso_text):
        try:
            parsed = iso_text.str.to_datetime(strict=False).dt.epoch("s")
        except pl.exceptions.PolarsError:
            parsed = pl.Series([None] * len(text), dtype=pl.Int64)
        seconds = seconds.fill_null(parsed)
        if (seconds.is_null() & ~is_number & text.is_not_null()).any():  # mixed ISO forms: Python finishes the rest
            seconds = pl.Series([_iso_seconds(v) if s is None and v is not None else s for v, s in zip(text, seconds)],
                                dtype=pl.Int64)
    return seconds


def import_table(interactions_path: str | Path, items_path: str | Path, *, user_col: str = "user_id",
                 item_col: str = "item_id", time_col: str | None = "timestamp", item_id_col: str = "item_id",
                 text_template: str | None = None, text_col: str | None = None,
                 extra_item_cols: Mapping[str, str] | Sequence[str] | None = None,
                 timestamp_format: str | None = None, name: str | None = None, on_bad_rows: OnBadRows = "fail",
                 delimiter: str | None = None, encoding: str = "utf-8") -> Dataset:
    """Import an interaction table and an item table (CSV/TSV/TXT/Parquet by extension) with a column mapping.

    Item text comes from `text_col`, or `text_template` ("title: {title} | brand: {brand}"; empty fields
    are dropped with their label and separator), or a `text` column. Columns title/category/brand/price
    are carried when present; `extra_item_cols` adds more ({canonical: source} or a list of names).
    Timestamps: epoch numbers (seconds, or milliseconds / microseconds / nanoseconds told by their size; decimals
    floored), datetimes, or strings parsed as such numbers, ISO 8601 or `timestamp_format`.
    `time_col=None` uses the file order. Exact duplicate interactions are dropped and counted. Text files are
    read with `delimiter` (default: tab for .tsv, else comma) and `encoding`. Bad rows: `on_bad_rows="fail"`
    stops with all of them listed, "skip" leaves them out (`dataset.report.rejected`, saved as rejected.csv)."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
    inter_path, item_path, report = Path(interactions_path), Path(items_path), ImportReport()
    bad = BadRows(on_bad_rows)
    items = _read_table(item_path, report, bad, delimiter, encoding)
    _require(items, [item_id_col], item_path, single=True)
    if text_template is None and text_col is None:
        if "text" not in items.columns:
            found = [c for c in items.columns if c != "__row"]
            raise DataError("no item text: pass text_col= / --text-col or text_template= / --text-template (no "
                            f"'text' column); found {found}", source=str(item_path))
        text_col = "text"
    if text_col is not None and text_template is None:
        _require(items, [text_col], item_path, single=True)
    items = whole_floats_as_integers(items, [item_id_col])
    text = _render(items, text_template, item_path) if text_template else pl.col(text_col).cast(pl.Utf8)
    extra = dict(extra_item_cols) if isinstance(extra_item_cols, Mapping) else {c: c for c in extra_item_cols or []}
    extra = {**{c: c for c in OPTIONAL_ITEM_SCHEMA if c in items.columns and c not in extra}, **extra}
    _require(items, list(extra.values()), item_path, "extra item column")
    typed = [source for target, source in extra.items() if target in OPTIONAL_ITEM_SCHEMA]
    check_single_values(items, typed, item_path)
    items = _present(items, [item_id_col], item_path, bad)
    items = items.with_columns(_id(item_id_col).alias("__id"), text.str.strip_chars().alias("__text"))
    listed = items["__id"].unique()  # every id the item file names, bad rows included
    kept = [pl.col(c).str.strip_chars() if items.schema[c] == pl.Utf8 else pl.col(c)
            for c in dict.fromkeys(["__id", "__text", *extra.values()]) if c in items.columns]
    repeats = items.select(pl.struct(kept).is_first_distinct()).to_series()  # the same item again, as imported
    report.drop(f"exact duplicate item rows: same id, text and attributes ({item_path.name})", int((~repeats).sum()))
    items = items.filter(repeats)
    items = bad.reject(items, ~pl.col("__id").is_first_distinct(), "duplicate item id {value!r} (its text or "
                       "attributes differ from its first row)", item_path, "__id")
    items = bad.reject(items, pl.col("__text").is_null() | (pl.col("__text") == ""),
                       "empty item text for item {value!r}", item_path, "__id")
    columns = [pl.col("__id").alias("item_id"), pl.col("__text").alias("text")]
    for target, source in extra.items():
        if target in ("item_id", "text") or target.startswith("__"):
            raise ValueError(f"extra_item_cols cannot write the {target!r} column")
        dtype = OPTIONAL_ITEM_SCHEMA.get(target)
        if dtype is None:
            columns.append(pl.col(source).alias(target))
            continue
        given = pl.col(source).cast(pl.Utf8).str.strip_chars()
        value = pl.when(given != "").then(given).cast(dtype, strict=False)
        items = bad.reject(items, value.is_null() & (given != ""), f"unparsable {target} {{value!r}}", item_path,
                           source)
        columns.append(value.alias(target))
    bad.check(item_path)
    item_frame = items.select(columns)
    if item_frame.height == 0:
        raise DataError("no items: the file has a header but no usable rows", source=str(item_path))

    inter = _read_table(inter_path, report, bad, delimiter, encoding)
    if time_col and time_col not in inter.columns and {user_col, item_col} <= set(inter.columns):
        found = [c for c in inter.columns if c != "__row"]
        raise DataError(f"missing time column {time_col!r}; found {found}: name it with time_col= / --time-col, or "
                        "pass time_col=None / --time-col '' to take each user's events in file order",
                        source=str(inter_path))
    _require(inter, [user_col, item_col] + ([time_col] if time_col else []), inter_path, single=True)
    inter = whole_floats_as_integers(inter, [user_col, item_col])
    inter = checked_interactions(inter, (user_col, item_col, time_col), timestamp_format, item_frame["item_id"],
                                 (inter_path, item_path), report, bad,
                                 rejected_items=listed.filter(~listed.is_in(item_frame["item_id"].implode())))
    report.rejected = bad.rejected()
    return Dataset(name or inter_path.stem, item_frame, inter, report, text_template)


def checked_interactions(inter: pl.DataFrame, cols: tuple[str, str, str | None], fmt: str | None,
                         item_ids: pl.Series, paths: tuple[Path, Path], report: ImportReport,
                         bad: BadRows | None = None, rejected_items: pl.Series | None = None) -> pl.DataFrame:
    """Canonical interactions from a raw frame with `__row`: ids checked, timestamps parsed, duplicates counted;
    bad rows go to `bad` (default: fail on them). `rejected_items`: ids the item file lists only in bad rows (their
    events are bad rows that say so, not "unknown item"). An empty result is an error."""
    (user_col, item_col, time_col), (inter_path, item_path) = cols, paths
    bad = bad or BadRows()
    read = inter.height
    inter = _present(inter, [user_col, item_col], inter_path, bad)
    if rejected_items is not None and rejected_items.len():
        inter = bad.reject(inter, _id(item_col).is_in(rejected_items.implode()),
                           f"item {{value!r}} was rejected from {item_path.name} (its row there is bad)", inter_path,
                           inter.select(_id(item_col)).to_series())
    numbers = item_ids.to_frame("id").select(_as_number(pl.col("id")))["id"].implode()
    renumbered = ~_id(item_col).is_in(item_ids.implode()) & _as_number(_id(item_col)).is_in(numbers)
    inter = bad.reject(inter, renumbered,
                       f"unknown item id {{value!r}} ({item_path.name} writes the same number otherwise: ids stored as "
                       "numbers lose leading zeros or gain a '.0')", inter_path,
                       inter.select(_id(item_col)).to_series())
    inter = bad.reject(inter, ~_id(item_col).is_in(item_ids.implode()),
                       f"unknown item id {{value!r}} (not in {item_path.name})", inter_path,
                       inter.select(_id(item_col)).to_series())
    if time_col:
        inter = bad.reject(inter, pl.col(time_col).is_null(), f"missing {time_col}", inter_path)
        expected = f"format {fmt!r}" if fmt else ("epoch seconds or milliseconds, an ISO 8601 datetime or a date "
                                                  "written YYYYMMDD")
        inter = inter.with_columns(_epoch_seconds(inter, time_col, fmt, report, inter_path).alias("__timestamp"))
        inter = bad.reject(inter, pl.col("__timestamp").is_null(), "unparsable timestamp {value!r}: expected "
                           + expected, inter_path, time_col)
        stamps = inter["__timestamp"]
    else:
        stamps = pl.Series(range(inter.height), dtype=pl.Int64)
        report.notes.append("no time column: timestamp = row position in the interactions file")
    bad.check(inter_path)
    if inter.height == 0:
        why = "the file has a header but no rows" if read == 0 else f"none of its {read:,} rows is usable"
        raise DataError(f"no interactions: {why}", source=str(inter_path))
    frame = inter.select(_id(user_col).alias("user_id"), _id(item_col).alias("item_id")).with_columns(
        timestamp=stamps)
    unique = frame.unique(maintain_order=True)
    report.drop(f"exact duplicate interaction rows ({inter_path.name})", frame.height - unique.height)
    counts = unique["user_id"].value_counts()["count"]
    short = int((counts < MIN_EVALUATED_EVENTS).sum())
    if short:
        report.notes.append(f"{short:,} of {counts.len():,} users {'has' if short == 1 else 'have'} fewer than "
                            f"{MIN_EVALUATED_EVENTS} interactions: leave-one-out gives them no valid or test example "
                            "(their events stay in train)")
    return unique
