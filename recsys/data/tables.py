"""Plain CSV / Parquet tables -> canonical `Dataset`, with a column mapping and an item-text template: the import's
checks of ids, item texts and attributes. Reading a file is `recsys.data.table_files`; parsing its timestamps,
`recsys.data.timestamps`; collecting bad rows, `recsys.data.bad_rows`.

Bad rows (a missing or unknown id, an unparsable timestamp or price, an item id listed again with another text, a
line that does not decode or has the wrong number of fields) are collected over the whole file: by default the
import then stops with one `DataError` naming the file and listing them (row 1-based, header excluded); with
`on_bad_rows="skip"` they are left out and listed in the report (rejected.csv beside the dataset). Every row that is
legitimately skipped (blank lines, exact duplicates) is counted in the dataset's `ImportReport`.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from recsys.data.bad_rows import BadRows, OnBadRows, import_skip_hint
from recsys.data.dataset import KIND_COLUMN, OPTIONAL_ITEM_SCHEMA, Dataset, ImportReport
from recsys.data.event_kinds import keep_kinds, stored_kind
from recsys.data.price_text import price_number_text
from recsys.data.item_text import template_expr, template_fields
from recsys.data.option_names import ITEM_TABLE_KEYWORDS, KEYWORDS, OptionNames, OptionValueError
from recsys.data.table_files import check_delimiter, delimiter_hint, read_table, unread_ids
from recsys.data.timestamps import day_month_first, day_month_formats, epoch_seconds
from recsys.errors import DataError
from recsys.ids import ID_CHARS, too_long
from recsys.text_format import counted, named, plural

MIN_EVALUATED_EVENTS = 3  # a user's events for a leave-one-out valid and test example (`recsys.splits`)


def _require(frame: pl.DataFrame, columns: Sequence[str], path: Path, what: str = "column",
             single: bool = False, names: OptionNames = KEYWORDS, options: Mapping[str, str] | None = None) -> None:
    """DataError naming the `columns` the table lacks (and, with `single`, the first holding lists or records); a
    delimiter to pass is named as the caller names its options (`names`), and so is the option that names a missing
    column (`options`: column → keyword) when the file writes it in another case ('SKU' for 'sku')."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = [c for c in frame.columns if c != "__row"]
        hint = delimiter_hint(found, names) or _case_hint(missing, found, names, options or {}) \
            or _option_hint(missing, names, options or {})
        raise DataError(f"missing {named(what, missing)}; found {found}{hint}", source=str(path))
    if single:
        check_single_values(frame, columns, path)


def _option_hint(missing: Sequence[str], names: OptionNames, options: Mapping[str, str]) -> str:
    """The options that name the missing columns (`--item-id-col`, whose default 'item_id' a shop's file seldom
    has), so the message says what to pass."""
    named = [names.option(options[column]) for column in missing if column in options]
    if not named:
        return ""
    return f": name the file's {plural(len(named), 'column')} with {', '.join(named)}"


def _case_hint(missing: Sequence[str], found: Sequence[str], names: OptionNames, options: Mapping[str, str]) -> str:
    """For the missing columns the file writes in another case: which one, and the option to name it with."""
    hints = []
    for column in missing:
        same = [name for name in found if name.casefold() == column.casefold()]
        if len(same) == 1:
            keyword = options.get(column)
            hints.append(f"{same[0]!r} differs only in case: "
                         + (names.option(keyword, same[0], repr(same[0])) if keyword else "name it as the file does"))
    return f" ({'; '.join(hints)})" if hints else ""


def _id(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Utf8).str.strip_chars()


def check_single_values(frame: pl.DataFrame, columns: Sequence[str], path: Path) -> None:
    """DataError naming the first of `columns` that holds lists, arrays or records instead of single values."""
    for column in columns:
        dtype = frame.schema[column]
        if dtype.is_nested() or dtype == pl.Object:
            raise DataError(f"column {column!r} holds {dtype} values, not single values: join or pick one value "
                            "per row before importing", source=str(path))


WHOLE_FLOAT_TEXT = r"^-?\d+\.0+$"
"""An id as a float column writes it out ("26.0")."""


def whole_floats_as_integers(frame: pl.DataFrame, columns: Sequence[str], report: ImportReport | None = None,
                             path: Path | None = None) -> pl.DataFrame:
    """Float id columns with whole values written as integers (26.0 → "26"): pandas stores an integer column with
    a missing value as floats, and the same ids written as integers elsewhere must match. NaN (how such a column
    may hold the missing value) is missing, not the id "NaN"; other floats keep their own text. A text column (a
    CSV) whose every id is so written ("26.0": such a column saved by pandas' `to_csv`) is read the same way, and
    counted in `report`'s notes; one id written otherwise ("A7", "26.5") leaves the column as written."""
    fixes = []
    for column in dict.fromkeys(columns):
        value = pl.col(column)
        if frame.schema[column].is_float():
            whole = value.is_finite() & (value == value.floor()) & (value.abs() < 2.0 ** 53)
            fixes.append(pl.when(value.is_nan()).then(None)
                         .when(whole).then(value.cast(pl.Int64, strict=False).cast(pl.Utf8))
                         .otherwise(value.cast(pl.Utf8)).alias(column))
        elif frame.schema[column] == pl.Utf8:
            given = value.str.strip_chars()
            filled = frame.select(given.filter(given.is_not_null() & (given != "")))[column]
            if filled.len() and filled.str.contains(WHOLE_FLOAT_TEXT).all():
                fixes.append(given.str.replace(r"\.0+$", "").alias(column))
                if report is not None:
                    where = f"{path.name}: " if path else ""
                    report.notes.append(f"{where}the {counted(filled.len(), 'id')} of column {column!r} are written as "
                                        f"whole floats ({filled[0]!r}): read as the integers they hold "
                                        f"({filled[0].split('.')[0]!r}), as pandas' to_csv writes an integer column "
                                        "with a missing value")
    return frame.with_columns(fixes) if fixes else frame


def _as_number(ids: pl.Expr) -> pl.Expr:
    """Ids written as a number would write them: without leading zeros and a whole float's ".0" ("007" and "7.0" ->
    "7"; "0" stays): what an id column stored as numbers (and then written out by pandas) makes of them."""
    return ids.str.replace(r"^0+(\d)", "$1").str.replace(r"^(\d+)\.0+$", "$1")


def _present(frame: pl.DataFrame, columns: Sequence[str], path: Path, bad: BadRows) -> pl.DataFrame:
    """Rows with every id column filled, with an id the API can serve (the others are bad rows: "missing <column>",
    "<column> longer than 256 characters, …": the API could never be asked about such a user or item)."""
    for column in columns:
        frame = bad.reject(frame, _id(column).is_null() | (_id(column) == ""), f"missing {column}", path)
        frame = bad.reject(frame, _id(column).str.len_chars() > ID_CHARS, too_long(column), path,
                           frame.select(_id(column)).to_series())
    return frame


def _render(frame: pl.DataFrame, template: str, path: Path, names: OptionNames = KEYWORDS) -> pl.Expr:
    """The item-text template over the table's columns (`recsys.data.item_text`; every field must exist). A
    malformed one is an OptionValueError (its message names the keyword; a command names its flag)."""
    try:
        fields = template_fields(template)
    except ValueError as exc:
        raise OptionValueError("text_template", str(exc) if names.flags else f"text_template: {exc}") from None
    _require(frame, fields, path, "text_template field", single=True, names=names)
    return template_expr(template)


def _note_unread_item_columns(items: pl.DataFrame, read: Sequence[str], text_col: str | None,
                              text_template: str | None, path: Path, report: ImportReport, names: OptionNames) -> None:
    """Note the item file's columns that neither the text nor the attributes read (a description, a colour), as the
    interactions file's are: left out, not silently."""
    used = {*read, *([text_col] if text_template is None and text_col else []),
            *(template_fields(text_template) if text_template else [])}
    unread = [c for c in items.columns if c not in used and not c.startswith("__")]
    if not unread:
        return
    text = (f"the text template reads {', '.join(repr(f) for f in template_fields(text_template))}"
            if text_template else f"the item text is the {text_col!r} column; {names.option('text_template')} "
            "renders it from several columns")
    report.notes.append(f"{path.name}: {counted(len(unread), 'column')} not read "
                        f"({', '.join(repr(c) for c in unread[:5])}{' …' if len(unread) > 5 else ''}): {text}")


MARKUP = r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>|&(?:[A-Za-z][A-Za-z0-9]*|#[0-9]+|#x[0-9A-Fa-f]+);"
"""An HTML tag (`<p>`, `</b>`, `<br/>`) or character reference (`&amp;`, `&nbsp;`, `&#39;`) in an item text."""


def _note_markup(items: pl.DataFrame, report: ImportReport, path: Path) -> None:
    """Note the item texts (`__text`) that hold HTML markup, as a shop's description column often does: BERT reads
    them as written, tags and entities taking its tokens."""
    held = items.filter(pl.col("__text").str.contains(MARKUP))
    if held.height:
        first, row = held["__text"][0], held["__row"][0]
        shown = first if len(first) <= 60 else first[:59] + "…"
        report.notes.append(f"{counted(held.height, 'item text')} of {path.name} "
                            f"{plural(held.height, 'holds', 'hold')} HTML markup (row {row:,}: {shown!r}): "
                            "read as written, tags and entities included; strip them from the export (or render the "
                            "text from plain columns with the text template) if BERT should read the words alone")


def check_encoding(name: str, keyword: str = "encoding", names: OptionNames = KEYWORDS) -> None:
    """OptionValueError (a bad option value, naming `keyword`) for an encoding Python does not know."""
    try:
        codecs.lookup(name)
    except LookupError:
        raise names.invalid(keyword, f"unknown encoding {name!r}") from None


def read_item_table(item_path: Path, report: ImportReport, bad: BadRows, *, item_id_col: str = "item_id",
                    text_template: str | None = None, text_col: str | None = None,
                    extra_item_cols: Mapping[str, str] | Sequence[str] | None = None, delimiter: str | None = None,
                    encoding: str = "utf-8",
                    names: OptionNames = ITEM_TABLE_KEYWORDS) -> tuple[pl.DataFrame, pl.Series]:
    """An item table (CSV/TSV/TXT/Parquet) as `import_table` reads it: (items: item_id, text and the optional
    columns; every id the file names, bad rows included). Bad rows go to `bad` (checked here: "fail" raises).
    `names`: how the messages name the caller's options (its keywords, or a command's flags)."""
    text_col_opt, template_opt = names.option("text_col"), names.option("text_template")
    if text_col is not None and text_template is not None:  # the template won, and the column was ignored
        raise DataError(f"pass {text_col_opt} ({text_col!r}) or {template_opt}, not both: a template renders the "
                        "text from columns (it may name that one: '{" + text_col + "}')")
    check_encoding(encoding, names=names)  # import_table checked its own options before: these hold then
    check_delimiter(delimiter, names=names)
    items = read_table(item_path, report, bad, delimiter, encoding,
                       names.option("items_encoding" if names.items_delimiter else "encoding").rstrip("="))
    _require(items, [item_id_col], item_path, single=True, names=names, options={item_id_col: "item_id_col"})
    if text_template is None and text_col is None:
        if "text" not in items.columns:
            found = [c for c in items.columns if c != "__row"]
            raise DataError(f"no item text: pass {text_col_opt} or {template_opt} (no 'text' column); found {found}",
                            source=str(item_path))
        text_col = "text"
    if text_col is not None and text_template is None:
        _require(items, [text_col], item_path, single=True, names=names, options={text_col: "text_col"})
    items = whole_floats_as_integers(items, [item_id_col], report, item_path)
    text = _render(items, text_template, item_path, names) if text_template else pl.col(text_col).cast(pl.Utf8)
    extra = dict(extra_item_cols) if isinstance(extra_item_cols, Mapping) else {c: c for c in extra_item_cols or []}
    extra = {**{c: c for c in OPTIONAL_ITEM_SCHEMA if c in items.columns and c not in extra}, **extra}
    cased = {c: same[0] for c in OPTIONAL_ITEM_SCHEMA if c not in extra
             for same in [[n for n in items.columns if n.casefold() == c]] if len(same) == 1}
    if cased:  # 'Category', 'Price' as a spreadsheet heads them: carried as the attributes they are, said so
        extra.update(cased)
        report.notes.append(f"{item_path.name}: " + ", ".join(f"column {source!r} read as the items' {target}"
                                                             for target, source in cased.items()))
    _require(items, list(extra.values()), item_path, "extra item column", names=names)
    _note_unread_item_columns(items, [item_id_col, *extra.values()], text_col, text_template, item_path, report,
                              names)
    typed = [source for target, source in extra.items() if target in OPTIONAL_ITEM_SCHEMA]
    check_single_values(items, typed, item_path)
    items = _present(items, [item_id_col], item_path, bad)
    items = items.with_columns(_id(item_id_col).alias("__id"), text.str.strip_chars().alias("__text"))
    unread = unread_ids(bad, item_path, [c for c in items.columns if not c.startswith("__")], item_id_col)
    listed = pl.concat([items["__id"], pl.Series("__id", unread, dtype=pl.Utf8)]).unique()  # every id the item
    # file names, bad rows included (an unreadable line's, when it tells one)
    kept = [pl.col(c).str.strip_chars() if items.schema[c] == pl.Utf8 else pl.col(c)
            for c in dict.fromkeys(["__id", "__text", *extra.values()]) if c in items.columns]
    repeats = items.select(pl.struct(kept).is_first_distinct()).to_series()  # the same item again, as imported
    report.drop(f"exact duplicate item rows: same id, text and attributes ({item_path.name})", int((~repeats).sum()))
    items = items.filter(repeats)
    items = bad.reject(items, ~pl.col("__id").is_first_distinct(), "duplicate item id {value!r} (its text or "
                       "attributes differ from its first row)", item_path, "__id")
    items = bad.reject(items, pl.col("__text").is_null() | (pl.col("__text") == ""),
                       "empty item text for item {value!r}", item_path, "__id")
    _note_markup(items, report, item_path)
    columns = [pl.col("__id").alias("item_id"), pl.col("__text").alias("text")]
    for target, source in extra.items():
        if target in ("item_id", "text") or target.startswith("__"):
            raise ValueError(f"extra_item_cols cannot write the {target!r} column")
        dtype = OPTIONAL_ITEM_SCHEMA.get(target)
        if dtype is None:
            columns.append(pl.col(source).alias(target))
            continue
        given = pl.col(source).cast(pl.Utf8).str.strip_chars()
        number = price_number_text(given) if target == "price" else given
        value = pl.when(given != "").then(number).cast(dtype, strict=False)
        if target == "price":
            read = int(items.select(((number != given) & value.is_not_null()).sum()).item())
            if read:
                report.notes.append(f"{counted(read, 'price')} of {item_path.name} read from a shop's notation "
                                    "(a decimal comma, digit groups, a currency sign: '1.234,50 €' → 1234.5)")
        items = bad.reject(items, value.is_null() & (given != ""), f"unparsable {target} {{value!r}}", item_path,
                           source)
        columns.append(value.alias(target))
    bad.check(item_path)
    item_frame = items.select(columns)
    if item_frame.height == 0:
        raise DataError("no items: the file has a header but no usable rows", source=str(item_path))
    return item_frame, listed


def import_table(interactions_path: str | Path, items_path: str | Path, *, user_col: str = "user_id",
                 item_col: str = "item_id", time_col: str | None = "timestamp", item_id_col: str = "item_id",
                 text_template: str | None = None, text_col: str | None = None,
                 extra_item_cols: Mapping[str, str] | Sequence[str] | None = None,
                 timestamp_format: str | None = None, name: str | None = None, on_bad_rows: OnBadRows = "fail",
                 delimiter: str | None = None, encoding: str = "utf-8", items_delimiter: str | None = None,
                 items_encoding: str | None = None, kind_col: str | None = None,
                 kinds: Sequence[str] | None = None, kind_names: Mapping[str, str] | None = None,
                 names: OptionNames = KEYWORDS) -> Dataset:
    """Import an interaction table and an item table (CSV/TSV/TXT/Parquet by extension) with a column mapping.

    Item text comes from `text_col`, or `text_template` ("title: {title} | brand: {brand}"; empty fields
    are dropped with their label and separator), or a `text` column. Columns title/category/brand/price
    are carried when present; `extra_item_cols` adds more ({canonical: source} or a list of names).
    Timestamps: epoch numbers (seconds, or milliseconds / microseconds / nanoseconds told by their size; decimals
    floored), datetimes, or strings parsed as such numbers, ISO 8601 or `timestamp_format`.
    `time_col=None` uses the file order. Exact duplicate interactions are dropped and counted. Text files are
    read with `delimiter` (default: tab for .tsv, else comma) and `encoding`; `items_delimiter` / `items_encoding`
    read the item file otherwise (a `;` Windows export beside a UTF-8 event log). Bad rows: `on_bad_rows="fail"`
    stops with all of them listed, "skip" leaves them out (`dataset.report.rejected`, saved as rejected.csv).
    `kind_col`: the events' kind column (view / cart / purchase, as the shop writes them), counted in the notes and
    stored (the interactions' `kind`); `kinds` keeps only the events of those kinds (`recsys.data.event_kinds`);
    `kind_names` stores the export's own kinds as the API's ({"transaction": "purchase"}: `parse_kind_names`).
    `names`: how the messages name the caller's options (these keywords, or `recsys import table`'s flags:
    `IMPORT_TABLE_FLAGS`)."""
    if kinds is not None and not kind_col:
        kind_col_name = "--kind-col" if names.flags else "kind_col"
        raise names.invalid("kinds", f"needs {kind_col_name}, the column that holds each event's kind")
    if kind_names is not None and not kind_col:
        kind_col_name = "--kind-col" if names.flags else "kind_col"
        raise names.invalid("kind_names", f"needs {kind_col_name}, the column that holds each event's kind")
    if kinds is not None and not kinds:
        raise names.invalid("kinds", "names no kind: give some, such as "
                            + ("purchase,cart" if names.flags else "['purchase', 'cart']"))
    for keyword, value in (("encoding", encoding), ("items_encoding", items_encoding)):  # before either file is read
        if value is not None:
            check_encoding(value, keyword, names)
    for keyword, value in (("delimiter", delimiter), ("items_delimiter", items_delimiter)):
        check_delimiter(value, keyword, names)
    inter_path, item_path, report = Path(interactions_path), Path(items_path), ImportReport()
    bad = BadRows(on_bad_rows, skip_hint=import_skip_hint(names))
    item_frame, listed = read_item_table(item_path, report, bad, item_id_col=item_id_col, text_template=text_template,
                                         text_col=text_col, extra_item_cols=extra_item_cols,
                                         delimiter=items_delimiter or delimiter, encoding=items_encoding or encoding,
                                         names=names)

    inter = read_table(inter_path, report, bad, delimiter, encoding, names.option("encoding").rstrip("="))
    if time_col and time_col not in inter.columns and {user_col, item_col} <= set(inter.columns):
        found = [c for c in inter.columns if c != "__row"]
        none = "--time-col ''" if names.flags else "time_col=None"
        raise DataError(f"missing time column {time_col!r}; found {found}: name it with {names.option('time_col')}, "
                        f"or pass {none} to take each user's events in file order"
                        f"{_case_hint([time_col], found, names, {time_col: 'time_col'})}", source=str(inter_path))
    options = {column: keyword for column, keyword in ((kind_col, "kind_col"), (time_col, "time_col"),
                                                       (item_col, "item_col"), (user_col, "user_col")) if column}
    _require(inter, [user_col, item_col] + ([time_col] if time_col else []) + ([kind_col] if kind_col else []),
             inter_path, single=True, names=names, options=options)
    unread = [c for c in inter.columns if c not in (user_col, item_col, time_col, kind_col) and not c.startswith("__")]
    if unread:  # e.g. an event type: said, not dropped silently
        report.notes.append(f"{inter_path.name}: {counted(len(unread), 'column')} not read "
                            f"({', '.join(repr(c) for c in unread[:5])}{' …' if len(unread) > 5 else ''}): an "
                            "interaction is a user, an item and a time" + (
                                "" if kind_col else "; an event-kind column (view, cart, purchase) is read with "
                                "--kind-col, and --kinds keeps some kinds only"))
    if kind_col:
        inter = keep_kinds(inter, kind_col, kinds, report, inter_path, names, kind_names)
    inter = whole_floats_as_integers(inter, [user_col, item_col], report, inter_path)
    inter = checked_interactions(inter, (user_col, item_col, time_col), timestamp_format, item_frame["item_id"],
                                 (inter_path, item_path), report, bad,
                                 rejected_items=listed.filter(~listed.is_in(item_frame["item_id"].implode())),
                                 kind_col=kind_col, kind_names=kind_names, names=names)
    report.rejected = bad.rejected()
    return Dataset(name or inter_path.stem, item_frame, inter, report, text_template)


def _reject_timestamps(inter: pl.DataFrame, time_col: str, fmt: str | None, path: Path, bad: BadRows,
                       names: OptionNames | None) -> pl.DataFrame:
    """`inter` without its rows whose `__timestamp` did not parse, which go to `bad`: a date written day or month
    first (never guessed) names the format to pass, the others what is read without one. `names`: how the caller
    names its timestamp-format option; None for a caller without one."""
    option = names.option("timestamp_format").rstrip("=") if names else None
    if not fmt and option:
        unparsed = inter.filter(pl.col("__timestamp").is_null() & pl.col(time_col).is_not_null())[time_col]
        ambiguous = day_month_first(unparsed)
        if ambiguous.any():
            formats = " or ".join(f"{names.option('timestamp_format', fmt, repr(fmt))} ({why})"
                                  for fmt, why in day_month_formats(unparsed.filter(ambiguous)))
            inter = bad.reject(inter, pl.col("__timestamp").is_null() & pl.col(time_col).map_batches(
                day_month_first, return_dtype=pl.Boolean), "unparsable timestamp {value!r}: a date written day or "
                "month first is read only with " + formats, path, time_col)
    expected = f"format {fmt!r}" if fmt else ("epoch seconds or milliseconds, an ISO 8601 datetime or a date "
                                              "written YYYYMMDD" + (f", or another form with {option}" if option
                                                                    else ""))
    return bad.reject(inter, pl.col("__timestamp").is_null(), "unparsable timestamp {value!r}: expected " + expected,
                      path, time_col)


def checked_interactions(inter: pl.DataFrame, cols: tuple[str, str, str | None], fmt: str | None,
                         item_ids: pl.Series, paths: tuple[Path, Path], report: ImportReport,
                         bad: BadRows | None = None, rejected_items: pl.Series | None = None,
                         kind_col: str | None = None, kind_names: Mapping[str, str] | None = None,
                         names: OptionNames | None = None) -> pl.DataFrame:
    """Canonical interactions from a raw frame with `__row`: ids checked, timestamps parsed, duplicates counted;
    bad rows go to `bad` (default: fail on them). `rejected_items`: ids the item file lists only in bad rows (their
    events are bad rows that say so, not "unknown item"). `kind_col`: the events' kind, stored as `kind` (renamed
    by `kind_names`); events of
    one user and item at one time are one interaction (as without kinds), of the kind its last row names (the
    latest, as file order breaks ties of time). An empty result is an error. `names`: how the messages name the
    caller's timestamp-format option (None: it has none, as `import movielens`)."""
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
        inter = inter.with_columns(epoch_seconds(inter, time_col, fmt, report, inter_path).alias("__timestamp"))
        inter = _reject_timestamps(inter, time_col, fmt, inter_path, bad, names)
        stamps = inter["__timestamp"]
    else:
        stamps = pl.Series(range(inter.height), dtype=pl.Int64)
        report.notes.append("no time column: timestamp = row position in the interactions file")
    bad.check(inter_path)
    if inter.height == 0:
        why = "the file has a header but no rows" if read == 0 else f"none of its {counted(read, 'row')} is usable"
        first = bad.described(inter_path, 1)  # skipped, all of them: the first says why (there is no rejected.csv)
        shown = f" (row {first[0][0]:,}: {first[0][1]})" if first else ""
        raise DataError(f"no interactions: {why}{shown}", source=str(inter_path))
    frame = inter.select(_id(user_col).alias("user_id"), _id(item_col).alias("item_id")).with_columns(
        timestamp=stamps)
    if kind_col:
        frame = frame.with_columns(inter.select(stored_kind(kind_col, kind_names)))
    unique = frame.unique(maintain_order=True)
    report.drop(f"exact duplicate interaction rows ({inter_path.name})", frame.height - unique.height)
    if kind_col:  # a view and a purchase at one time: one interaction, as without kinds, of the latest row's kind
        exact, unique = unique.height, unique.group_by("user_id", "item_id", "timestamp", maintain_order=True).agg(
            pl.col(KIND_COLUMN).last())
        report.drop(f"events at the time of another of the same user and item, of another kind: the last row's kind "
                    f"is kept ({inter_path.name})", exact - unique.height)
    counts = unique["user_id"].value_counts()["count"]
    short = int((counts < MIN_EVALUATED_EVENTS).sum())
    if short:
        report.notes.append(f"{short:,} of {counts.len():,} users {plural(short, 'has', 'have')} fewer than "
                            f"{MIN_EVALUATED_EVENTS} interactions: leave-one-out gives them no valid or test example "
                            "(their events stay in train)")
    return unique
