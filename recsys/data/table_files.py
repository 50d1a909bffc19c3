"""Reading one CSV / TSV / TXT / Parquet file into a frame of strings with a 1-based `__row`.

The encoding (a byte-order mark decides; latin-1 that is probably cp1252 is noted), the separator (and a hint when a
header was read as one column), the slow record-by-record reader for files polars refuses or would misread
(undecodable or ragged records become bad rows; a quote never closed is an error; a field that opens with a quote but
is not a quoted field, `"Best" pan`, is read as written on both paths), header names without the spaces around them,
and blank lines (counted in the `ImportReport`).
"""

from __future__ import annotations

import bisect
import codecs
import functools
import mmap
import re
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from recsys.data.bad_rows import BadRows
from recsys.data.dataset import ImportReport
from recsys.data.option_names import KEYWORDS, OptionNames
from recsys.errors import DataError
from recsys.text_format import counted, plural


def _separator(path: Path, delimiter: str | None) -> str:
    if delimiter is None:
        return "\t" if path.suffix.lower() == ".tsv" else ","
    named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
    sep = named.get(delimiter.lower(), delimiter)
    if len(sep) != 1:
        raise ValueError(f"delimiter must be one character (or tab, comma, semicolon, pipe), got {delimiter!r}")
    return sep


def check_delimiter(delimiter: str | None, keyword: str = "delimiter", names: OptionNames = KEYWORDS) -> None:
    """OptionValueError naming `keyword` for a delimiter that is neither one character nor a known name."""
    try:
        _separator(Path("file.csv"), delimiter)
    except ValueError:
        raise names.invalid(keyword, f"one character, or tab, comma, semicolon or pipe, not {delimiter!r}") from None


def delimiter_hint(header: list[str], names: OptionNames = KEYWORDS) -> str:
    """When a text file's header was read as one column that holds another delimiter: which one to pass, named as
    the caller names its options (`names`)."""
    if len(header) != 1:
        return ""
    for name, sep in (("comma", ","), ("semicolon", ";"), ("tab", "\t"), ("pipe", "|")):
        if sep in header[0]:
            both = names.option("delimiter", sep, name)
            if not names.items_delimiter:
                return f" (one column: the header looks {name}-separated; pass {both})"
            return (f" (one column: the header looks {name}-separated; pass {both} for both files, or "
                    f"{names.option('items_delimiter', sep, name)} for the item file alone)")
    return ""


_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes that did not decode, kept by the surrogateescape handler


def _undecodable(fields: list[str | None], sep: str, encoding: str) -> str | None:
    """Why a record read with surrogateescape holds bytes that are not `encoding` text; None when it has none."""
    text = sep.join(field or "" for field in fields)
    if not _UNDECODED.search(text):
        return None
    try:
        text.encode(encoding, "surrogateescape").decode(encoding)
    except UnicodeDecodeError as exc:
        return exc.reason
    return "undecodable bytes"


@functools.lru_cache(maxsize=16)
def _field_patterns(sep: str, cr_lines: bool) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(a field and what ends it, a line end) for `sep`. Lines end with \\n or \\r\\n, or with a \\r alone in a
    file that has no \\n (an old Mac file). The field is quoted (group 1: its text, `""` for each quote) when its
    closing quote is followed by the separator, a line end or the end of the file, as RFC 4180 has it; else it is
    read as written (group 2), up to the next separator or line end. Group 3: what ends it."""
    s = re.escape(sep)
    eol = r"\r" if cr_lines else r"\r?\n"
    written = rf"[^{s}\r]*+" if cr_lines else rf"(?:[^{s}\r\n]++|\r(?!\n))*+"
    return re.compile(rf'(?:"((?:[^"]++|"")*+)"(?={s}|{eol}|\Z)|({written}))({s}|{eol}|\Z)'), re.compile(eol)


_CLOSED = re.compile(r'"(?:[^"]++|"")*+"')  # a quote and where it closes, wherever that is


def _records(text: str, sep: str, path: Path) -> Iterator[tuple[list[str | None], str | None, str]]:
    """The records of a CSV text (a quoted field may span lines, `""` in it is a quote; an empty field is None, an
    empty quoted one "", as polars reads them) as (fields, the first field that opens with a quote but is not a
    quoted field, or None, the record's text as written without its line end). Such a field (`"Best" pan`: its
    closing quote is not the field's end) is read as written: a reader that takes the quotes as quoting drops them
    (Python's csv module makes it `Best pan`, polars makes `"Best" pan "x"` `Best pan x`). A quote never closed is
    an error when there are lines after it (read as a quoted field they would be its text); a blank line is a record
    of no fields."""
    field, eol = _field_patterns(sep, "\n" not in text)
    fields: list[str | None] = []
    misquoted, number, end, start = None, 0, len(text), 0  # number: the record's, 0 for the header
    if not text:
        return
    for found in field.finditer(text):
        quoted, written, ends = found.groups()
        if quoted is not None:
            fields.append(quoted.replace('""', '"'))
        elif written:
            if written[0] == '"':
                if not _CLOSED.match(text, found.start()):
                    _never_closed(text, found.start(), eol, path, number)
                misquoted = misquoted or written
            fields.append(written)
        else:
            fields.append(None)
        if ends != sep:
            yield (fields if fields != [None] else []), misquoted, text[start:found.start(3)]
            fields, misquoted, number, start = [], None, number + 1, found.end()
            if found.end() == end:
                return


def _never_closed(text: str, pos: int, eol: re.Pattern[str], path: Path, row: int) -> None:
    """Raise for the quote at `pos`, never closed, when lines follow its line (else it is read as written)."""
    ends = [found.end() for found in eol.finditer(text)]
    line = bisect.bisect_right(ends, pos) + 1
    after = len(ends) - line + (ends[-1] < len(text) if ends else 1)
    if after > 0:
        raise DataError(f"a quoted field opened on line {line} of the file is never closed: the {after} "
                        f"{plural(after, 'line')} after it would be read as its text; close or remove the stray quote",
                        source=str(path), row=row or None)


def _line_by_line(path: Path, sep: str, encoding: str, bad: BadRows, report: ImportReport,
                  option: str = "--encoding", sep_line: bool = False) -> pl.DataFrame:
    """The slow path for a file the CSV reader refused (or would have misread, `_misquoted`): record by record
    (`_records`: a quoted field may span lines; a UTF-8 byte-order mark is dropped); records that do not decode or
    have the wrong number of fields become bad rows (blank lines stay, as rows of nulls). A quoted field never
    closed, with lines after it, is an error; the rows with a field that opens with a quote but is not a quoted
    field (`"Best" pan`) are noted. `option`: the option that names the file's encoding, as the caller writes it;
    `sep_line`: the file starts with Excel's `sep=;` line, which is skipped."""
    try:
        text = path.read_bytes().decode(encoding, errors="surrogateescape")
    except UnicodeDecodeError as exc:  # what surrogateescape cannot keep: a UTF-16 file cut inside a character
        raise DataError(f"not valid {encoding} text ({exc.reason} at byte {exc.start:,}); pass the file's encoding "
                        f"with {option}", source=str(path)) from None
    if codecs.lookup(encoding).name == "utf-8":
        text = text.removeprefix("\ufeff")
    if sep_line:
        text = re.sub(r"\A\ufeff?sep=.(\r\n|\r|\n)", "", text)
    records = _records(text, sep, path)
    header, _, _ = next(records, (None, None, None))
    if header is None:
        raise DataError("the file is empty", source=str(path))
    reason = _undecodable(header, sep, encoding)
    if reason:
        raise DataError(f"the header line is not valid {encoding} text ({reason}); pass the file's encoding with "
                        f"{option} (e.g. cp1252 for a Windows export, latin-1)", source=str(path))
    rows, numbers, misquoted = [], [], []
    for number, (fields, odd, raw) in enumerate(records, start=1):
        if odd is not None:
            misquoted.append((number, odd))
        reason = _undecodable(fields, sep, encoding)
        if reason:
            bad.add(path, number, f"not valid {encoding} text ({reason}); pass the file's encoding with {option} "
                    "(e.g. cp1252 for a Windows export, latin-1)", shown_line(raw), unread=fields)
        elif fields and len(fields) != len(header):
            bad.add(path, number, f"unparsable line: expected {len(header)} fields, found {len(fields)}",
                    shown_line(raw), unread=fields)
        else:
            rows.append(fields or [None] * len(header))
            numbers.append(number)
    if misquoted:
        row, field = misquoted[0]
        rows_of = f"{counted(len(misquoted), 'row')} of {path.name} {plural(len(misquoted), 'has', 'have')}"
        report.notes.append(f"{rows_of} a field that opens with a quote but is not a quoted field (row {row:,}: "
                            f"{field!r}): read as written, quotes kept")
    names = _unique_names([name or "" for name in header])
    frame = pl.DataFrame(rows, schema={h: pl.Utf8 for h in names}, orient="row")
    return frame.with_columns(pl.Series("__row", numbers, dtype=pl.UInt32)).select("__row", *names)


SHOWN_CHARS = 200  # of an unreadable line, in rejected.csv's `value`


def shown_line(raw: str) -> str:
    """An unreadable record's text for rejected.csv: bytes that did not decode as U+FFFD, cut at SHOWN_CHARS."""
    raw = _UNDECODED.sub("\ufffd", raw)
    return raw if len(raw) <= SHOWN_CHARS else raw[:SHOWN_CHARS - 1] + "…"


def unread_ids(bad: BadRows, path: Path, columns: list[str], id_col: str) -> list[str]:
    """The ids (stripped) of `path`'s records that could not be read as rows (`_line_by_line`), where the record still
    tells one: its field in the id column's place (`columns`: the header's names) when that is the first column (a
    wrong number of fields shifts the later ones) or when it has the header's number of fields (a line that does not
    decode). A field holding undecoded bytes, or empty, is no id."""
    place = columns.index(id_col)
    found = [fields[place] for fields in bad.unread.get(path.name, [])
             if (place == 0 or len(fields) == len(columns)) and place < len(fields)]
    ids = [field.strip() for field in found if field is not None and not _UNDECODED.search(field)]
    return [field for field in ids if field]


def _misquoted(source: Path | bytes, sep: str) -> bool:
    """Whether a CSV text holds a field that opens with a quote and goes on after its closing quote (`"Best" pan
    "x"`): polars' reader takes some in as quoted fields and drops their quotes, the slow path reads them as
    written. A quoted text whose separator is followed by an escaped quote (`a,""b`) can look so too, and only
    costs the slow path. A file without quotes is not searched."""
    if isinstance(source, Path):
        with source.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _misquoted_in(data, sep)
    return _misquoted_in(source, sep)


def _misquoted_in(data: bytes | mmap.mmap, sep: str) -> bool:
    if data.find(b'"') < 0:
        return False
    s = re.escape(sep.encode())
    field_start = rb'(?:(?<![^%s\r\n]")|(?<=\A\xef\xbb\xbf"))' % s  # after a separator, a line end, the BOM
    return re.search(rb'"%s(?:[^"]++|"")*+"[^%s\r\n]' % (field_start, s), data) is not None


def _unique_names(header: list[str]) -> list[str]:
    """Header names with repeats renamed as polars' CSV reader does ("text", "text_duplicated_0")."""
    names: list[str] = []
    for name in header:
        repeats = sum(1 for n in names if n == name or n.startswith(f"{name}_duplicated_"))
        names.append(f"{name}_duplicated_{repeats - 1}" if repeats else name)
    return names


_C1 = re.compile("[\x80-\x9f]")  # control characters latin-1 makes of cp1252's curly quotes, dashes, € and …


def _decoded(path: Path, encoding: str, report: ImportReport, option: str = "--encoding") -> str:
    """The text of `path` in `encoding` (UnicodeDecodeError when it is not); read as latin-1, the lines holding C1
    control characters are noted: latin-1 decodes every byte, so a Windows (cp1252) file read so gives no error and
    texts with control characters where its quotes, dashes and € were."""
    text = path.read_bytes().decode(encoding)
    if codecs.lookup(encoding).name == "iso8859-1" and _C1.search(text):
        lines = re.split(r"\r\n?|\n", text)  # not splitlines(), which ends a line at U+0085 too (cp1252's …)
        held = sum(1 for line in lines if _C1.search(line))
        report.notes.append(f"{counted(held, 'line')} of {path.name} {plural(held, 'holds', 'hold')} control "
                            "characters (U+0080-U+009F), which latin-1 makes of a Windows file's curly quotes, dashes "
                            f"and €: the file is probably cp1252 (pass cp1252 with {option})")
    return text


BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _bom_encoding(path: Path) -> str | None:
    """The encoding a text file's byte-order mark names (Excel's "Unicode text" is UTF-16 with one), or None: a BOM
    decides over `encoding`, which then serves the other file."""
    with path.open("rb") as handle:
        start = handle.read(4)
    return next((name for bom, name in BOMS if start.startswith(bom)), None)


SEP_LINE = re.compile(r"\A\ufeff?sep=(.)(?:\r\n|\r|\n)")
"""Excel's first line naming a CSV file's separator (`sep=;`)."""


def _sep_line(path: Path, encoding: str) -> str | None:
    """The separator a CSV file's first line names as Excel writes it (`sep=;`), or None."""
    with path.open("rb") as handle:
        start = handle.read(64).decode(encoding, errors="ignore")
    found = SEP_LINE.match(start)
    return found.group(1) if found else None


def read_table(path: Path, report: ImportReport, bad: BadRows | None = None, delimiter: str | None = None,
               encoding: str = "utf-8", encoding_option: str = "--encoding") -> pl.DataFrame:
    """CSV/TSV (all columns as strings; `delimiter` and `encoding` when not the defaults) or Parquet, with a
    1-based `__row`; blank CSV lines are counted, undecodable or ragged lines are bad rows. `encoding_option`: the
    option that names this file's encoding, as the caller writes it (the messages about its encoding name it)."""
    bad = bad or BadRows()
    if not path.is_file():
        raise DataError("a directory, not a file" if path.is_dir() else "file not found", source=str(path))
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
        encoding = _bom_encoding(path) or encoding
        named = _sep_line(path, encoding)
        sep = _separator(path, delimiter) if named is None else named
        if named is not None:
            report.notes.append(f"{path.name}: its first line, {'sep=' + named!r}, names the separator: read so"
                                + ("" if delimiter is None or _separator(path, delimiter) == named
                                   else f" (not {delimiter!r})"))
        utf8, bad_before = codecs.lookup(encoding).name == "utf-8", sum(found.height for found in bad.found)
        slow = functools.partial(_line_by_line, path, sep, encoding, bad, report, encoding_option, named is not None)
        try:
            source = path if utf8 else _decoded(path, encoding, report, encoding_option).encode("utf-8")
            frame = pl.read_csv(source, separator=sep, infer_schema=False,
                                skip_rows=int(named is not None)).with_row_index("__row", offset=1)
            if any("\r" in name or "\ufffd" in name for name in frame.columns) or _misquoted(source, sep):
                # old Mac line ends (CR alone), a header not UTF-8, a field that opens with a quote and goes on after it
                frame = slow()
        except pl.exceptions.NoDataError:
            raise DataError("the file is empty", source=str(path)) from None
        except (pl.exceptions.PolarsError, UnicodeDecodeError):
            frame = slow()
    report.rows_read[path.name] = frame.height  # every data row: the blank lines and the bad rows found here too
    if suffix not in (".parquet", ".pq") and sum(name.count("\x00") for name in frame.columns) >= 2:
        order = "le" if next(n for n in frame.columns if "\x00" in n).find("\x00") % 2 else "be"
        raise DataError(f"the header holds NUL bytes between its letters: the file is probably UTF-16 without a "
                        f"byte-order mark; pass {encoding_option} utf-16-{order}", source=str(path))
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
