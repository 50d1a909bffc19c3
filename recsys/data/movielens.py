"""RecBole atomic MovieLens (`<name>.inter`, `<name>.item`) -> canonical `Dataset`: title, year and genres become the
item text; real timestamps, no split."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from recsys.data.atomic_files import atomic_file, format_hint
from recsys.data.bad_rows import BadRows, OnBadRows, import_skip_hint
from recsys.data.dataset import Dataset, ImportReport
from recsys.data.option_names import KEYWORDS, OptionNames
from recsys.data.table_files import unread_ids
from recsys.data.tables import checked_interactions
from recsys.errors import DataError
from recsys.ids import ID_CHARS, too_long
from recsys.text_format import counted


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
                        f"{format_hint(directory, 'movielens')}", source=str(directory))
    name, report = found[0].stem, ImportReport()
    bad = BadRows(on_bad_rows, skip_hint=import_skip_hint(names))
    item_path, inter_path = directory / f"{name}.item", directory / f"{name}.inter"
    items, listed = _movielens_items(item_path, report, bad)
    bad.check(item_path)
    if items.height == 0:
        raise DataError("no items: the file has a header but no usable rows", source=str(item_path))
    cols, rows = atomic_file(inter_path, ["user_id", "item_id", "timestamp"], report, bad=bad)
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
    cols, rows = atomic_file(item_path, ["item_id", "movie_title", "release_year", "class"], report, bad=bad)
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
        report.notes.append(f"{counted(no_year, 'item')} without a 4-digit release_year (year left out of the text)")
    items = pl.DataFrame({"item_id": ids, "text": texts, "title": titles, "category": cats},
                         schema={"item_id": pl.Utf8, "text": pl.Utf8, "title": pl.Utf8, "category": pl.Utf8})
    return items, listed
