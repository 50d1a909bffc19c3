"""Parsing a timestamp column into Int64 epoch seconds: epoch numbers (their unit told by magnitude), dates written
as one number (YYYYMMDD, YYYYMMDDHHMMSS), datetimes, ISO 8601 strings or a given format. A date written day or month
first (01/02/2024: 1 February in Europe, January 2 in the US) is read only with a given format, never guessed."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from recsys.data.dataset import ImportReport
from recsys.text_format import counted


_YEAR_FIRST_DATE = re.compile(r"(\d{4})[/.-](\d{1,2})[/.-](\d{1,2})(?=$|[T ])")
_UTC_SUFFIX = re.compile(r"\s*(?:UTC|GMT)$")


def _iso_seconds(value: str) -> int | None:
    """A year-first time (ISO 8601; its date also written 2024/1/3, as polars reads one alone; "UTC" or "GMT" after
    the time, as BigQuery writes one) as epoch seconds."""
    found = _YEAR_FIRST_DATE.match(value)
    if found:  # fromisoformat wants 2024-01-03, and +00:00 for BigQuery's "2024-01-03 10:00:00 UTC"
        year, month, day = found.groups()
        value = _UTC_SUFFIX.sub("+00:00", f"{year}-{int(month):02d}-{int(day):02d}{value[found.end():]}")
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
            report.notes.append(f"{counted(count, 'timestamp')}{where} read as {unit} since the epoch "
                                f"(from 10^{len(str(least)) - 1} on: as seconds they would fall after the year 5000)")
    if decimal:
        seconds = seconds.floor().cast(pl.Int64, strict=False)
    too_large = seconds.cast(pl.Float64).abs() >= LATEST_EPOCH  # not a shop's time (a date's digits): a bad row
    return pl.select(pl.when(~too_large).then(seconds)).to_series().cast(pl.Int64)


COMPACT_DATES = {8: ("%Y%m%d", 19000101, 21001231), 14: ("%Y%m%d%H%M%S", 19000101000000, 21001231235959)}
"""Digits: (format, least, most) of a date written as one number (YYYYMMDD, YYYYMMDDHHMMSS; years 1900-2100)."""


def _compact_dates(whole: pl.Series, report: ImportReport | None,
                   path: Path | None) -> tuple[pl.Series, pl.Series] | None:
    """(Int64 seconds, mask) of the integers of `whole` shaped as a date written YYYYMMDD or YYYYMMDDHHMMSS, value by
    value (as epoch seconds or milliseconds those numbers would be August 1970 or the 26th century): the mask marks
    them, and the seconds are null elsewhere and where one so shaped is no date (20240132, a bad row). None when
    no value is so shaped. A column that mixes them with epoch numbers or ISO times reads each value by its own
    form (it used to read them all as epoch seconds, 1970, unless every value was so shaped)."""
    digits = whole.cast(pl.Utf8).str.len_chars()
    shaped = pl.Series([False] * whole.len(), dtype=pl.Boolean)
    for count, (_, least, most) in COMPACT_DATES.items():
        shaped = shaped | ((digits == count) & whole.is_between(least, most)).fill_null(False)
    n_shaped = int(shaped.sum())
    if not n_shaped:
        return None
    text = pl.select(pl.when(shaped).then(whole.cast(pl.Utf8))).to_series()
    parsed = pl.Series([None] * whole.len(), dtype=pl.Datetime("us"))
    for count, (fmt, _, _) in COMPACT_DATES.items():
        these = pl.select(pl.when(text.str.len_chars() == count).then(text)).to_series()
        parsed = parsed.fill_null(these.str.to_datetime(fmt, strict=False, time_unit="us"))
    if report is not None:
        where = f" of {path.name}" if path else ""
        mixed = n_shaped < whole.len() - whole.null_count() or whole.null_count() > 0
        report.notes.append(f"{counted(n_shaped, 'timestamp')}{where} read as dates written YYYYMMDD or "
                            "YYYYMMDDHHMMSS" + (", each value by its own form" if mixed else ""))
    return parsed.dt.epoch("s"), shaped


def _with_dates(seconds: pl.Series, compact: tuple[pl.Series, pl.Series] | None) -> pl.Series:
    """`seconds` with the values `_compact_dates` read as dates in their place (null where such a one is no date)."""
    if compact is None:
        return seconds
    dates, shaped = compact
    return pl.select(pl.when(shaped).then(dates).otherwise(seconds)).to_series().cast(pl.Int64)


YEAR_FIRST = r"^[+-]?\d{4}"
"""An ISO 8601 time starts with its year; polars would also guess other forms (01/02/2024 as 1 February)."""

DAY_MONTH_FIRST = r"^(\d{1,2})([./-])(\d{1,2})[./-](\d{2}|\d{4})\b"
"""A date written day or month first: 01/02/2024, 2.1.2024, 02-01-24 (a time may follow)."""


def day_month_first(text: pl.Series) -> pl.Series:
    """Which of `text`'s values (stripped) are dates written day or month first (`DAY_MONTH_FIRST`)."""
    return text.cast(pl.Utf8).str.strip_chars().str.contains(DAY_MONTH_FIRST).fill_null(False)


def day_month_formats(values: pl.Series) -> list[tuple[str, str]]:
    """The strftime formats that dates written day or month first (`values`: such dates, a time may follow) fit, as
    (format, which order it reads): both orders, or the one the values tell (a first number above 12 is a day, a
    second one a month: then the reason quotes one such value)."""
    text = values.cast(pl.Utf8).str.strip_chars()
    parts = text.str.extract_groups(DAY_MONTH_FIRST + r"(?:[ T]+(\d{1,2}:\d{2}(:\d{2})?)\s*([AaPp][Mm])?)?")
    first, sep = parts.struct.field("1").cast(pl.Int64), parts.struct.field("2")[0]
    second, year = parts.struct.field("3").cast(pl.Int64), parts.struct.field("4")[0]
    clock, ampm = parts.struct.field("5")[0], parts.struct.field("7")[0]
    time = "" if clock is None else (" %I:%M" if ampm else " %H:%M") + (":%S" if clock.count(":") == 2 else "")
    tail = f"{sep}{'%Y' if len(year) == 4 else '%y'}{time}{' %p' if ampm else ''}"
    day_first, month_first = f"%d{sep}%m{tail}", f"%m{sep}%d{tail}"
    if bool((first > 12).any()) and not bool((second > 12).any()):
        return [(day_first, f"the day comes first: {text.filter(first > 12)[0]!r}")]
    if bool((second > 12).any()) and not bool((first > 12).any()):
        return [(month_first, f"the month comes first: {text.filter(second > 12)[0]!r}")]
    return [(day_first, "day first"), (month_first, "month first")]


def epoch_seconds(frame: pl.DataFrame, column: str, fmt: str | None, report: ImportReport | None = None,
                   path: Path | None = None) -> pl.Series:
    """Numbers (epoch seconds / milliseconds / microseconds / nanoseconds, `_epoch_numbers`), datetimes, or strings
    (such numbers, ISO 8601 or `fmt`) -> Int64 seconds (null where a value is missing or does not parse)."""
    raw = frame[column]
    if raw.dtype.is_integer():
        whole = raw.cast(pl.Int64, strict=False)
        compact = _compact_dates(whole, report, path)
        rest = raw if compact is None else pl.select(pl.when(~compact[1]).then(whole)).to_series()
        return _with_dates(_epoch_numbers(rest, report, path), compact)
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
    compact = _compact_dates(whole, report, path)
    if compact is not None:  # the dates' digits are not epoch numbers
        numbers = pl.select(pl.when(~compact[1]).then(numbers)).to_series()
    seconds = _with_dates(_epoch_numbers(numbers, report, path) if numbers.is_not_null().any() else whole, compact)
    is_number = is_int | is_decimal
    iso_text = pl.select(pl.when(~is_number & text.str.contains(YEAR_FIRST))
                         .then(text.str.replace(_UTC_SUFFIX.pattern, "+00:00"))).to_series()  # a date
    # written day or month first (01/02/2024) is read only with `fmt`: the file does not tell which comes first
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
