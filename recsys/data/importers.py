"""Importers for RecBole atomic benchmark files -> canonical `Dataset` (plain tables: `tables.py`).

Every problem with the input raises `DataError` naming the file, the row (1-based, header excluded) and
the problem (MovieLens: every bad row of a file listed, or left out with `on_bad_rows="skip"`); every row that is
legitimately skipped is counted in the dataset's `ImportReport`.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import polars as pl

from recsys.data.bad_rows import BadRows, OnBadRows, import_skip_hint
from recsys.data.dataset import Dataset, ImportReport
from recsys.data.option_names import KEYWORDS, OptionNames
from recsys.data.table_files import shown_line, unread_ids
from recsys.data.tables import checked_interactions, import_table  # noqa: F401  (import_table re-exported)
from recsys.errors import DataError
from recsys.ids import ID_CHARS, too_long

Row = tuple[int, list[str]]  # (1-based row number, header excluded; fields)


# ---------------------------------------------------------------- line-oriented (RecBole) files
def _lines(path: Path, header: bool) -> tuple[str | None, list[tuple[int, str]]]:
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


def _split_rows(path: Path, rows: list[tuple[int, str]], n_fields: int, report: ImportReport,
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


def _atomic(path: Path, required: Sequence[str], report: ImportReport, free_last: bool = False,
            bad: BadRows | None = None) -> tuple[dict[str, int], list[Row]]:
    """Read a RecBole atomic file (`name:type` header); returns column positions and rows (`bad`: where lines with
    the wrong field count go, instead of an error)."""
    header, body = _lines(path, header=True)
    if header is None:
        raise DataError("the file is empty (expected a `name:type` header line)", source=str(path))
    names = [h.split(":", 1)[0].strip() for h in header.split("\t")]
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {names}", source=str(path))
    return {c: i for i, c in enumerate(names)}, _split_rows(path, body, len(names), report, free_last, bad)


def _int(value: str, what: str, path: Path, row: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"unparsable {what} {value!r}: expected an integer", source=str(path), row=row) from None


def _read_index(path: Path, report: ImportReport) -> dict[int, str]:
    """`raw_id TAB index` lines (no header) -> {index: raw_id}; duplicates are errors."""
    _, body = _lines(path, header=False)
    index: dict[int, str] = {}
    raw_rows: dict[str, int] = {}
    idx_rows: dict[int, int] = {}
    for row, (raw, idx_text) in _split_rows(path, body, 2, report):
        raw, idx = raw.strip(), _int(idx_text.strip(), "index", path, row)
        if not raw:
            raise DataError("empty id", source=str(path), row=row)
        if len(raw) > ID_CHARS:
            raise DataError(too_long("id"), source=str(path), row=row)
        if raw in raw_rows:
            raise DataError(f"duplicate id {raw!r} (first on row {raw_rows[raw]})", source=str(path), row=row)
        if idx in idx_rows:
            raise DataError(f"duplicate index {idx} (first on row {idx_rows[idx]})", source=str(path), row=row)
        index[idx], raw_rows[raw], idx_rows[idx] = raw, row, row
    return index


def _format_hint(directory: Path, command: str) -> str:
    """"; … use `recsys import X`" when `directory` holds the other RecBole layout than `command` reads."""
    if command != "recbole" and list(directory.glob("*.train.inter")):
        return "; it holds *.train.inter files: RecBole/UniSRec sequential data, read by `recsys import recbole`"
    if command != "movielens" and list(directory.glob("*.item")) and list(directory.glob("*.inter")):
        return "; it holds *.inter and *.item files: RecBole MovieLens data, read by `recsys import movielens`"
    return ""


def _detect_name(directory: Path) -> str:
    if not directory.is_dir():
        raise DataError("directory not found", source=str(directory))
    found = sorted(directory.glob("*.text"))
    if len(found) != 1:
        several = "; pass name= (the files' common prefix)" if found else ""
        raise DataError(f"expected exactly one *.text file to name the dataset, found {[p.name for p in found]}"
                        f"{several}{_format_hint(directory, 'recbole')}", source=str(directory))
    return found[0].stem


_UNITS = {"inc", "co", "ltd", "corp", "no", "nos", "dia", "approx", "vol", "oz", "lb", "lbs", "in", "ft",
          "mr", "mrs", "ms", "dr", "jr", "sr", "st", "pc", "pcs", "qty", "vs", "etc", "ea", "pk", "gal", "yd"}
_ABBREV = re.compile(r"^(?:[A-Za-z]{1,2}|(?:[A-Za-z]+\.)+[A-Za-z]*|\d[\d,./-]*[A-Za-z]{1,3})$")


def title_from_text(text: str) -> str:
    """Title = text up to the first '. ' that does not follow an abbreviation (Mr., Inc., 24 Oz., E.C.)."""
    text = text.strip()
    for match in re.finditer(r"\. ", text):
        word = text[: match.start()].rsplit(" ", 1)[-1].lstrip("([\"'")
        if match.start() > 0 and not (_ABBREV.match(word) or word.lower() in _UNITS):
            return text[: match.start()].strip()
    first = text.find(". ")
    return (text[:first] if first > 0 else text.rstrip(".")).strip() or text


def _looks_abbreviated(word: str) -> bool:
    word = word.strip().lstrip("([\"'")
    return bool(_ABBREV.match(word)) or word.lower() in _UNITS


def category_brand_from_text(text: str) -> tuple[str | None, str | None]:
    """(category, brand) of a UniSRec-style item text "<title>. <category>. <brand>.": the last two '. '-separated
    fields, a field that ends in an abbreviation (Inc., St., E.C.) joined with the next one; (None, None) for a
    text of fewer than three fields, None for an empty field."""
    fields = text.strip().rstrip(".").split(". ")
    if len(fields) < 3:
        return None, None
    start = len(fields) - 1  # the brand's first field
    while start > 2 and _looks_abbreviated(fields[start - 1].rsplit(" ", 1)[-1]):
        start -= 1
    return fields[start - 1].strip() or None, ". ".join(fields[start:]).strip() or None


ATTRIBUTE_LAYOUT_SHARE = 0.8
"""Share of texts that must parse into category and brand for `attributes="auto"` to read them."""
ATTRIBUTE_LAYOUT_DISTINCT = 0.5
"""... and the most distinct categories (and brands) per parsed item: shared values, not free-text sentences."""


def _attribute_columns(texts: list[str], attributes: Literal["auto", "parse", "none"],
                       report: ImportReport) -> dict[str, list[str | None]]:
    """`category` and `brand` parsed from the texts ("auto": only when the texts have the UniSRec layout)."""
    if attributes == "none" or not texts:
        return {}
    parsed = [category_brand_from_text(t) for t in texts]
    both = [(c, b) for c, b in parsed if c is not None and b is not None]
    share = len(both) / len(texts)
    distinct = max(len({c for c, _ in both}), len({b for _, b in both})) / max(len(both), 1)
    if attributes == "auto" and (share < ATTRIBUTE_LAYOUT_SHARE or distinct > ATTRIBUTE_LAYOUT_DISTINCT):
        report.notes.append(f"item texts do not have the '<title>. <category>. <brand>.' layout ({share:.0%} parse, "
                            f"{distinct:.0%} distinct values): no category/brand columns")
        return {}
    report.notes.append(f"category and brand read from the item texts' last two fields ({share:.0%} of the "
                        f"items have both)")
    return {"category": [c for c, _ in parsed], "brand": [b for _, b in parsed]}


# ---------------------------------------------------------------- RecBole sequential (UniSRec) format
Inter = tuple[int, int, list[int], int]  # row, user index, history (oldest first), next item index


def _read_inter(path: Path, users: dict[int, str], items: dict[int, str], report: ImportReport) -> list[Inter]:
    cols, rows = _atomic(path, ["user_id", "item_id_list", "item_id"], report)
    iu, ih, it = cols["user_id"], cols["item_id_list"], cols["item_id"]
    known = items.keys()
    out: list[Inter] = []
    for row, f in rows:
        user = _int(f[iu].strip(), "user index", path, row)
        target = _int(f[it].strip(), "item index", path, row)
        try:
            hist = [int(x) for x in f[ih].split()]
        except ValueError:
            raise DataError(f"unparsable item_id_list {f[ih]!r}: expected space-separated integers",
                            source=str(path), row=row) from None
        if user not in users:
            raise DataError(f"unknown user index {user} (not in the user2index file)", source=str(path), row=row)
        if target not in known or not known >= set(hist):
            bad = next(x for x in [*hist, target] if x not in known)
            raise DataError(f"unknown item index {bad} (not in the item2index file)", source=str(path), row=row)
        out.append((row, user, hist, target))
    return out


def _one_per_user(rows: list[Inter], path: Path) -> dict[int, Inter]:
    out: dict[int, Inter] = {}
    for r in rows:
        if r[1] in out:
            raise DataError(f"user index {r[1]} has a second row (first on row {out[r[1]][0]})",
                            source=str(path), row=r[0])
        out[r[1]] = r
    return out


def _is_suffix(hist: list[int], seq: list[int]) -> bool:
    return len(hist) <= len(seq) and seq[len(seq) - len(hist):] == hist


def _reconstruct(train: list[Inter], valid: dict[int, Inter], test: dict[int, Inter],
                 report: ImportReport) -> dict[int, tuple[list[int], list[str]]]:
    """Full ordered sequence per user from truncated prefix rows, with consistency counts."""
    by_user: dict[int, list[Inter]] = {}
    for r in train:
        by_user.setdefault(r[1], []).append(r)
    votes = 0  # the UniSRec writer lists each user's prefixes longest first; detect, don't assume
    for rows in by_user.values():
        short, long = min(rows, key=lambda r: len(r[2])), max(rows, key=lambda r: len(r[2]))
        if len(short[2]) != len(long[2]):
            votes += 1 if short[0] > long[0] else -1
    sign = -1 if votes >= 0 else 1
    bad = {"train": 0, "valid": 0, "test": 0}
    missing = {"valid": 0, "test": 0}
    out: dict[int, tuple[list[int], list[str]]] = {}
    for user in sorted(set(by_user) | set(valid) | set(test)):
        seq: list[int] = []
        splits: list[str] = []
        rows = sorted(by_user.get(user, []), key=lambda r: (len(r[2]), sign * r[0]))
        for split, split_rows in (("train", rows), ("valid", [valid[user]] if user in valid else []),
                                  ("test", [test[user]] if user in test else [])):
            if split != "train" and not split_rows:
                missing[split] += 1
            for _, _, hist, target in split_rows:
                if not seq:
                    seq, splits = list(hist), ["train"] * len(hist)
                elif not _is_suffix(hist, seq):
                    bad[split] += 1
                seq.append(target)
                splits.append(split)
        out[user] = (seq, splits)
    report.notes.append("inconsistent histories (not a suffix of the reconstructed sequence; rows kept): "
                        + ", ".join(f"{split}={count}" for split, count in bad.items()))
    for split, count in missing.items():
        if count:
            report.notes.append(f"{count} users without a {split} row")
    return out


def import_recbole_sequential(directory: str | Path, name: str | None = None,
                              attributes: Literal["auto", "parse", "none"] = "none") -> Dataset:
    """Import RecBole/UniSRec sequential atomic files (`<Name>.text`, `.item2index`, `.user2index`,
    `.{train,valid,test}.inter`) into a Dataset with `timestamp` = position in the user's sequence
    and `split` from the files (valid = second to last, test = last).

    `attributes`: "auto" reads `category` and `brand` from texts in UniSRec's "<title>. <category>. <brand>."
    layout (`category_brand_from_text`) when most texts have it, "parse" always, "none" (the default) never: they
    serve filters, not accuracy (README "Category and brand from the texts")."""
    if attributes not in ("auto", "parse", "none"):
        raise ValueError(f"attributes must be 'auto', 'parse' or 'none', got {attributes!r}")
    directory = Path(directory)
    name = name or _detect_name(directory)
    report = ImportReport()
    path = {k: directory / f"{name}.{k}" for k in ("text", "item2index", "user2index")}
    items = _read_index(path["item2index"], report)
    users = _read_index(path["user2index"], report)
    inter_paths = {s: directory / f"{name}.{s}.inter" for s in ("train", "valid", "test")}
    train = _read_inter(inter_paths["train"], users, items, report)
    valid = _one_per_user(_read_inter(inter_paths["valid"], users, items, report), inter_paths["valid"])
    test = _one_per_user(_read_inter(inter_paths["test"], users, items, report), inter_paths["test"])
    sequences = _reconstruct(train, valid, test, report)
    report.notes.append(f"reconstructed {len(sequences)} user sequences; timestamp = position in the sequence")
    if len(sequences) < len(users):
        report.notes.append(f"{len(users) - len(sequences)} users in {path['user2index'].name} have no rows")

    cols, text_rows = _atomic(path["text"], ["item_id", "text"], report, free_last=True)
    texts: dict[str, tuple[int, str]] = {}
    for row, f in text_rows:
        raw = f[cols["item_id"]].strip()
        if raw in texts:
            raise DataError(f"duplicate item id {raw!r} (first on row {texts[raw][0]})",
                            source=str(path["text"]), row=row)
        texts[raw] = (row, f[cols["text"]].strip())
    used = {i for seq, _ in sequences.values() for i in seq}
    keep: list[int] = []
    for idx in sorted(items):
        row, text = texts.get(items[idx], (None, ""))
        if text:
            keep.append(idx)
        elif idx in used:
            first = next((p, r[0]) for p, rows in ((inter_paths["train"], train), (inter_paths["valid"],
                         valid.values()), (inter_paths["test"], test.values())) for r in rows
                         if idx == r[3] or idx in r[2])
            where = f"an empty text on row {row} of" if row else "no line in"
            raise DataError(f"item {items[idx]!r} (index {idx}) is used here but has {where} "
                            f"{path['text'].name}", source=str(first[0]), row=first[1])
    report.drop(f"items in {path['item2index'].name} without text (unused)", len(items) - len(keep))
    indexed = set(items.values())
    report.drop(f"rows of {path['text'].name} without an item2index entry",
                sum(1 for raw in texts if raw not in indexed))

    item_ids = [items[i] for i in keep]
    item_texts = [texts[r][1] for r in item_ids]
    columns = {"item_id": item_ids, "text": item_texts, "title": [title_from_text(t) for t in item_texts],
               **_attribute_columns(item_texts, attributes, report)}
    item_frame = pl.DataFrame(columns, schema={c: pl.Utf8 for c in columns})
    u_col, i_col, t_col, s_col = [], [], [], []
    for user, (seq, splits) in sequences.items():
        u_col += [users[user]] * len(seq)
        i_col += [items[i] for i in seq]
        t_col += range(len(seq))
        s_col += splits
    inter_frame = pl.DataFrame({"user_id": u_col, "item_id": i_col, "timestamp": t_col, "split": s_col},
                               schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Int64,
                                       "split": pl.Utf8})
    return Dataset(name, item_frame, inter_frame, report)


# ---------------------------------------------------------------- RecBole MovieLens
def import_recbole_movielens(directory: str | Path, on_bad_rows: OnBadRows = "fail",
                            names: OptionNames = KEYWORDS) -> Dataset:
    """Import MovieLens in RecBole atomic format (`<name>.inter`, `<name>.item`); real timestamps,
    no split. Item text = "<title> (<year>). Genres: <genre, ...>"; `category` = first genre.

    Bad rows (a line with the wrong number of fields, a missing or over-long id, an item id listed again, an empty
    title, an unknown item, an unparsable timestamp) are collected over each file: `on_bad_rows="fail"` stops with
    them listed, "skip" leaves them out (`dataset.report.rejected`, saved as rejected.csv), and the events of an item
    whose line was left out say so. `names`: how the messages name the caller's options."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError("directory not found", source=str(directory))
    found = sorted(directory.glob("*.inter"))
    if len(found) != 1:
        raise DataError(f"expected exactly one *.inter file, found {[p.name for p in found]}"
                        f"{_format_hint(directory, 'movielens')}", source=str(directory))
    name, report = found[0].stem, ImportReport()
    bad = BadRows(on_bad_rows, skip_hint=import_skip_hint(names))
    item_path, inter_path = directory / f"{name}.item", directory / f"{name}.inter"
    items, listed = _movielens_items(item_path, report, bad)
    bad.check(item_path)
    if items.height == 0:
        raise DataError("no items: the file has a header but no usable rows", source=str(item_path))
    cols, rows = _atomic(inter_path, ["user_id", "item_id", "timestamp"], report, bad=bad)
    inter = pl.DataFrame({"__row": [r for r, _ in rows],
                          **{c: [f[cols[c]] for _, f in rows] for c in ("user_id", "item_id", "timestamp")}},
                         schema={"__row": pl.Int64, "user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Utf8})
    if "rating" in cols:
        report.notes.append("ratings ignored: every rating counts as an interaction (implicit feedback)")
    rejected_items = pl.Series(sorted(set(listed) - set(items["item_id"].to_list())), dtype=pl.Utf8)
    inter = checked_interactions(inter, ("user_id", "item_id", "timestamp"), None, items["item_id"],
                                 (inter_path, item_path), report, bad, rejected_items=rejected_items)
    report.rejected = bad.rejected()
    return Dataset(name, items, inter, report)


def _movielens_items(item_path: Path, report: ImportReport, bad: BadRows) -> tuple[pl.DataFrame, list[str]]:
    """(the item table, every id the file names, its bad rows' included); bad rows go to `bad`."""
    cols, rows = _atomic(item_path, ["item_id", "movie_title", "release_year", "class"], report, bad=bad)
    listed = unread_ids(bad, item_path, list(cols), "item_id")
    seen: dict[str, int] = {}
    ids, texts, titles, cats = [], [], [], []
    no_year = 0
    for row, f in rows:
        item_id, title = f[cols["item_id"]].strip(), f[cols["movie_title"]].strip()
        year = f[cols["release_year"]].strip()
        genres = [g for g in f[cols["class"]].split() if g.lower() != "unknown"]
        if item_id and len(item_id) <= ID_CHARS:
            listed.append(item_id)
        if not item_id:
            bad.add(item_path, row, "missing item_id")
        elif len(item_id) > ID_CHARS:
            bad.add(item_path, row, too_long("item_id"), item_id)
        elif item_id in seen:
            bad.add(item_path, row, f"duplicate item id {item_id!r} (first on row {seen[item_id]})", item_id)
        elif not title:
            bad.add(item_path, row, f"empty item text: item {item_id!r} has no movie_title", item_id)
        else:
            no_year += not re.fullmatch(r"\d{4}", year)
            text = f"{title} ({year})" if re.fullmatch(r"\d{4}", year) else title
            seen[item_id] = row
            ids.append(item_id)
            texts.append(f"{text}. Genres: {', '.join(genres)}" if genres else text)
            titles.append(title)
            cats.append(genres[0] if genres else None)
    if no_year:
        report.notes.append(f"{no_year} items without a 4-digit release_year (year left out of the text)")
    items = pl.DataFrame({"item_id": ids, "text": texts, "title": titles, "category": cats},
                         schema={"item_id": pl.Utf8, "text": pl.Utf8, "title": pl.Utf8, "category": pl.Utf8})
    return items, listed
