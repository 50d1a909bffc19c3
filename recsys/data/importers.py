"""Importers for RecBole/UniSRec sequential atomic benchmark files -> canonical `Dataset` (RecBole MovieLens:
`movielens.py`; plain tables: `tables.py`; the line-by-line reading of atomic files: `atomic_files.py`).

Every problem with the input raises `DataError` naming the file, the row (1-based, header excluded) and
the problem; every row that is legitimately skipped is counted in the dataset's `ImportReport`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import polars as pl

from recsys.data.atomic_files import atomic_file, format_hint, parse_int, read_lines, split_rows
from recsys.data.dataset import Dataset, ImportReport
from recsys.data.movielens import import_recbole_movielens  # noqa: F401  (re-exported)
from recsys.data.option_names import KEYWORDS, OptionNames
from recsys.data.tables import import_table  # noqa: F401  (re-exported)
from recsys.errors import DataError
from recsys.ids import ID_CHARS, too_long
from recsys.text_format import counted, plural


def _read_index(path: Path, report: ImportReport) -> dict[int, str]:
    """`raw_id TAB index` lines (no header) -> {index: raw_id}; duplicates are errors."""
    _, body = read_lines(path, header=False)
    index: dict[int, str] = {}
    raw_rows: dict[str, int] = {}
    idx_rows: dict[int, int] = {}
    for row, (raw, idx_text) in split_rows(path, body, 2, report):
        raw, idx = raw.strip(), parse_int(idx_text.strip(), "index", path, row)
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


def _dataset_name(directory: Path, name: str | None, options: OptionNames) -> str:
    """The files' common prefix: `name`, else the one `*.text` file's stem; a DataError naming the caller's option
    (`options`) when several are there, or `name`'s text file is not."""
    if not directory.is_dir():
        raise DataError("directory not found", source=str(directory))
    found = sorted(directory.glob("*.text"))
    if name is not None and (directory / f"{name}.text").is_file():
        return name
    if name is None and len(found) == 1:
        return found[0].stem
    wanted = f"{name}.text" if name is not None else "exactly one *.text file to name the dataset"
    several = (f"; pass {options.option('name', found[0].stem)} (the files' common prefix)"
               if found and (name is not None or len(found) > 1) else "")
    raise DataError(f"expected {wanted}, found {[p.name for p in found]}{several}{format_hint(directory, 'recbole')}",
                    source=str(directory))


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
    cols, rows = atomic_file(path, ["user_id", "item_id_list", "item_id"], report)
    iu, ih, it = cols["user_id"], cols["item_id_list"], cols["item_id"]
    known = items.keys()
    out: list[Inter] = []
    for row, f in rows:
        user = parse_int(f[iu].strip(), "user index", path, row)
        target = parse_int(f[it].strip(), "item index", path, row)
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
        for split, step_rows in (("train", rows), ("valid", [valid[user]] if user in valid else []),
                                  ("test", [test[user]] if user in test else [])):
            if split != "train" and not step_rows:
                missing[split] += 1
            for _, _, hist, target in step_rows:
                if not seq:
                    seq, splits = list(hist), ["train"] * len(hist)
                elif not _is_suffix(hist, seq):
                    bad[split] += 1
                seq.append(target)
                splits.append(split)
        out[user] = (seq, splits)
    if any(bad.values()):  # (said only when there are some: "train=0, valid=0, test=0" was noise)
        report.notes.append("inconsistent histories (not a suffix of the reconstructed sequence; rows kept): "
                            + ", ".join(f"{split}={count}" for split, count in bad.items()))
    for split, count in missing.items():
        if count:
            report.notes.append(f"{counted(count, 'user')} without a {split} row")
    return out


def import_recbole_sequential(directory: str | Path, name: str | None = None,
                              attributes: Literal["auto", "parse", "none"] = "none",
                              options: OptionNames = KEYWORDS) -> Dataset:
    """Import RecBole/UniSRec sequential atomic files (`<Name>.text`, `.item2index`, `.user2index`,
    `.{train,valid,test}.inter`) into a Dataset with `timestamp` = position in the user's sequence
    and `split` from the files (valid = second to last, test = last).

    `attributes`: "auto" reads `category` and `brand` from texts in UniSRec's "<title>. <category>. <brand>."
    layout (`category_brand_from_text`) when most texts have it, "parse" always, "none" (the default) never: they
    serve filters, not accuracy (README "Category and brand from the texts"). `name`: the files' common prefix,
    needed only when the directory holds several datasets' files; `options`: how errors name the caller's options."""
    if attributes not in ("auto", "parse", "none"):
        raise ValueError(f"attributes must be 'auto', 'parse' or 'none', got {attributes!r}")
    directory = Path(directory)
    name = _dataset_name(directory, name, options)
    report = ImportReport()
    path = {k: directory / f"{name}.{k}" for k in ("text", "item2index", "user2index")}
    items = _read_index(path["item2index"], report)
    users = _read_index(path["user2index"], report)
    inter_paths = {s: directory / f"{name}.{s}.inter" for s in ("train", "valid", "test")}
    train = _read_inter(inter_paths["train"], users, items, report)
    valid = _one_per_user(_read_inter(inter_paths["valid"], users, items, report), inter_paths["valid"])
    test = _one_per_user(_read_inter(inter_paths["test"], users, items, report), inter_paths["test"])
    sequences = _reconstruct(train, valid, test, report)
    report.notes.append(f"reconstructed {counted(len(sequences), 'user sequence')}; "
                        "timestamp = position in the sequence")
    if len(sequences) < len(users):
        idle = len(users) - len(sequences)
        report.notes.append(f"{counted(idle, 'user')} in {path['user2index'].name} "
                            f"{plural(idle, 'has', 'have')} no rows")

    cols, text_rows = atomic_file(path["text"], ["item_id", "text"], report, free_last=True)
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
