"""Plain CSV / Parquet tables -> canonical `Dataset`, with a column mapping and an item-text template.

Every problem with the input raises `DataError` naming the file, the row (1-based, header excluded) and
the problem; every row that is legitimately skipped is counted in the dataset's `ImportReport`.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from recsys.data.dataset import OPTIONAL_ITEM_SCHEMA, Dataset, ImportReport
from recsys.data.templates import template_expr, template_fields
from recsys.errors import DataError


def _read_table(path: Path, report: ImportReport) -> pl.DataFrame:
    """CSV/TSV (all columns as strings) or Parquet, with a 1-based `__row`; blank CSV lines are counted."""
    if not path.is_file():
        raise DataError("file not found", source=str(path))
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".parquet", ".pq"):
        raise DataError(f"unsupported file type {suffix!r}: expected .csv, .tsv or .parquet", source=str(path))
    sep = "\t" if suffix == ".tsv" else ","
    try:
        frame = pl.read_parquet(path) if suffix in (".parquet", ".pq") else pl.read_csv(
            path, separator=sep, infer_schema=False)
    except pl.exceptions.NoDataError:
        raise DataError("the file is empty", source=str(path)) from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        problem, row = str(exc).split("\n")[0], None
        if suffix in (".csv", ".tsv"):
            with path.open(newline="", encoding="utf-8", errors="replace") as handle:
                reader = csv.reader(handle, delimiter=sep)
                width = len(next(reader, []))
                for row, record in enumerate(reader, start=1):
                    if record and len(record) != width:
                        problem = f"expected {width} fields, found {len(record)}"
                        break
                else:
                    row = None
        raise DataError(f"unparsable line: {problem}", source=str(path), row=row) from None
    frame = frame.with_row_index("__row", offset=1)
    if suffix in (".csv", ".tsv") and frame.width > 1:
        blank = pl.all_horizontal(pl.exclude("__row").is_null())
        report.drop(f"blank lines ({path.name})", frame.filter(blank).height)
        frame = frame.filter(~blank)
    report.rows_read[path.name] = frame.height
    return frame


def _fail(frame: pl.DataFrame, mask: pl.Series | pl.Expr, problem: str, path: Path,
          value: str | pl.Series | None = None) -> None:
    """Raise for the first row where `mask` holds; `{value!r}` in `problem` shows that row's `value`."""
    if isinstance(value, pl.Series):
        frame, value = frame.with_columns(value.alias("__value")), "__value"
    hits = frame.filter(mask)
    if hits.height:
        first = hits.row(0, named=True)
        raise DataError(problem.format(value=first[value] if value else None), source=str(path),
                        row=first["__row"])


def _require(frame: pl.DataFrame, columns: Sequence[str], path: Path, what: str = "column") -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = [c for c in frame.columns if c != "__row"]
        raise DataError(f"missing {what}(s) {missing}; found {found}", source=str(path))


def _id(frame: pl.DataFrame, column: str, path: Path) -> pl.Expr:
    value = pl.col(column).cast(pl.Utf8).str.strip_chars()
    _fail(frame, value.is_null() | (value == ""), f"missing {column}", path)
    return value


def _render(frame: pl.DataFrame, template: str, path: Path) -> pl.Expr:
    """The item-text template over the table's columns (`recsys.data.templates`; every field must exist)."""
    try:
        fields = template_fields(template)
    except ValueError as exc:
        raise ValueError(f"text_template: {exc}") from None
    _require(frame, fields, path, "text_template field")
    return template_expr(template)


def _iso_seconds(value: str) -> int | None:
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return int((stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp())


def _epoch_seconds(frame: pl.DataFrame, column: str, path: Path, fmt: str | None) -> pl.Series:
    """Integers (epoch seconds), datetimes, or strings (integers, ISO 8601 or `fmt`) -> Int64 seconds."""
    raw = frame[column]
    _fail(frame, raw.is_null(), f"missing {column}", path)
    if raw.dtype.is_integer():
        return raw.cast(pl.Int64)
    if raw.dtype in (pl.Date, pl.Datetime):
        return raw.cast(pl.Datetime("us")).dt.epoch("s") if raw.dtype == pl.Date else raw.dt.epoch("s")
    text = raw.cast(pl.Utf8).str.strip_chars()
    if fmt:
        seconds = text.str.to_datetime(fmt, strict=False).dt.epoch("s")
    else:  # integers (epoch seconds) row by row, then ISO 8601 for the rest
        is_int = text.str.contains(r"^-?\d+(\.0*)?$")
        seconds = text.str.replace(r"\.0*$", "").cast(pl.Int64, strict=False)
        iso_text = pl.select(pl.when(~is_int).then(text)).to_series()
        if iso_text.null_count() < len(iso_text):
            try:
                parsed = iso_text.str.to_datetime(strict=False).dt.epoch("s")
            except pl.exceptions.PolarsError:
                parsed = pl.Series([None] * len(text), dtype=pl.Int64)
            seconds = seconds.fill_null(parsed)
            if (seconds.is_null() & ~is_int).any():  # mixed ISO forms: let Python finish the stragglers
                seconds = pl.Series([_iso_seconds(v) if s is None else s for v, s in zip(text, seconds)],
                                    dtype=pl.Int64)
    expected = f"format {fmt!r}" if fmt else "integer epoch seconds or an ISO 8601 datetime"
    _fail(frame, seconds.is_null(), "unparsable timestamp {value!r}: expected " + expected, path, column)
    return seconds


def import_table(interactions_path: str | Path, items_path: str | Path, *, user_col: str = "user_id",
                 item_col: str = "item_id", time_col: str | None = "timestamp", item_id_col: str = "item_id",
                 text_template: str | None = None, text_col: str | None = None,
                 extra_item_cols: Mapping[str, str] | Sequence[str] | None = None,
                 timestamp_format: str | None = None, name: str | None = None) -> Dataset:
    """Import an interaction table and an item table (CSV/TSV/Parquet by extension) with a column mapping.

    Item text comes from `text_col`, or `text_template` ("title: {title} | brand: {brand}"; empty fields
    are dropped with their label and separator), or a `text` column. Columns title/category/brand/price
    are carried when present; `extra_item_cols` adds more ({canonical: source} or a list of names).
    Timestamps: integers (epoch seconds), datetimes, or strings parsed as ISO 8601 / `timestamp_format`.
    `time_col=None` uses the file order. Exact duplicate interactions are dropped and counted."""
    inter_path, item_path, report = Path(interactions_path), Path(items_path), ImportReport()
    items = _read_table(item_path, report)
    _require(items, [item_id_col], item_path)
    if text_template is None and text_col is None:
        if "text" not in items.columns:
            found = [c for c in items.columns if c != "__row"]
            raise DataError(f"no item text: pass text_col= or text_template= (no 'text' column); found {found}",
                            source=str(item_path))
        text_col = "text"
    if text_col is not None and text_template is None:
        _require(items, [text_col], item_path)
    text = _render(items, text_template, item_path) if text_template else pl.col(text_col).cast(pl.Utf8)
    extra = dict(extra_item_cols) if isinstance(extra_item_cols, Mapping) else {c: c for c in extra_item_cols or []}
    extra = {**{c: c for c in OPTIONAL_ITEM_SCHEMA if c in items.columns and c not in extra}, **extra}
    _require(items, list(extra.values()), item_path, "extra item column")
    items = items.with_columns(_id(items, item_id_col, item_path).alias("__id"),
                               text.str.strip_chars().alias("__text"))
    _fail(items, ~pl.col("__id").is_first_distinct(), "duplicate item id {value!r}", item_path, "__id")
    _fail(items, pl.col("__text").is_null() | (pl.col("__text") == ""), "empty item text for item {value!r}",
          item_path, "__id")
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
        _fail(items, value.is_null() & (given != ""), f"unparsable {target} {{value!r}}", item_path, source)
        columns.append(value.alias(target))
    item_frame = items.select(columns)

    inter = _read_table(inter_path, report)
    _require(inter, [user_col, item_col] + ([time_col] if time_col else []), inter_path)
    inter = checked_interactions(inter, (user_col, item_col, time_col), timestamp_format, item_frame["item_id"],
                          (inter_path, item_path), report)
    return Dataset(name or inter_path.stem, item_frame, inter, report, text_template)


def checked_interactions(inter: pl.DataFrame, cols: tuple[str, str, str | None], fmt: str | None, item_ids: pl.Series,
                  paths: tuple[Path, Path], report: ImportReport) -> pl.DataFrame:
    """Canonical interactions from a raw frame with `__row`: ids checked, timestamps parsed, duplicates counted."""
    (user_col, item_col, time_col), (inter_path, item_path) = cols, paths
    user, item = _id(inter, user_col, inter_path), _id(inter, item_col, inter_path)
    _fail(inter, ~item.is_in(item_ids.implode()), f"unknown item id {{value!r}} (not in {item_path.name})",
          inter_path, inter.select(item).to_series())
    if time_col:
        stamps = _epoch_seconds(inter, time_col, inter_path, fmt)
    else:
        stamps = pl.Series(range(inter.height), dtype=pl.Int64)
        report.notes.append("no time column: timestamp = row position in the interactions file")
    frame = inter.select(user.alias("user_id"), item.alias("item_id")).with_columns(timestamp=stamps)
    unique = frame.unique(maintain_order=True)
    report.drop(f"exact duplicate interaction rows ({inter_path.name})", frame.height - unique.height)
    return unique
