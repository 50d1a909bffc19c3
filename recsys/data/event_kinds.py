"""An export's event-kind column (view, cart, purchase, or whatever the shop writes): its kinds counted in the import
notes, when asked only some of them kept (`recsys import table --kind-col type --kinds purchase,cart`), and each kept
event's kind stored in the dataset (`KIND_COLUMN`), so the API words an imported purchase's reason as a live one's."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from recsys.data.dataset import KIND_COLUMN, ImportReport
from recsys.data.option_names import KEYWORDS, OptionNames
from recsys.errors import DataError
from recsys.text_format import counted

NO_KIND = "(empty)"
"""How an event without a kind is named in the notes."""


def stored_kind(kind_col: str) -> pl.Expr:
    """The kind an import stores (`KIND_COLUMN`): stripped and lower-cased, as `--kinds` matches kinds ("Purchase " →
    "purchase", the API's own name); null for an empty one."""
    key = pl.col(kind_col).cast(pl.Utf8).str.strip_chars().str.to_lowercase()
    return pl.when(key != "").then(key).alias(KIND_COLUMN)


def parse_kinds(text: str | None) -> list[str] | None:
    """`--kinds`' comma-separated list ("purchase, cart" → ["purchase", "cart"]); None for none given (`import_table`
    refuses an empty list: nothing would be kept)."""
    return None if text is None else [k.strip() for k in text.split(",") if k.strip()]


def keep_kinds(inter: pl.DataFrame, kind_col: str, kinds: Sequence[str] | None, report: ImportReport,
               path: Path, names: OptionNames = KEYWORDS) -> pl.DataFrame:
    """`inter` with the events of `kinds` only (all of them when None), matched without regard to case or
    surrounding spaces. The notes count the events of each kind the file holds and what was kept; the events left
    out are counted in the report's drops. A kind the column never holds is an error that lists the ones it
    does (a typo would otherwise keep nothing of it, unnoticed). `names`: how the messages name the caller's
    options."""
    value = pl.col(kind_col).cast(pl.Utf8).str.strip_chars().fill_null("")
    key = value.str.to_lowercase()
    counts = inter.group_by(key.alias("key")).agg(value.first().alias("kind"), pl.len().alias("n"))
    rows = sorted(counts.iter_rows(), key=lambda row: (-row[2], row[0] == "", row[0]))  # most first, empty last
    named = {key: (kind or NO_KIND, n) for key, kind, n in rows}
    held = ", ".join(f"{kind} {n:,}" for kind, n in named.values())
    report.notes.append(f"{path.name}: {counted(inter.height, 'event')} by {kind_col!r}: {held}")
    if kinds is None:
        return inter
    wanted = {k.strip().lower() for k in kinds}
    unknown = [k for k in kinds if k.strip().lower() not in named]
    kinds_name = "--kinds" if names.flags else "kinds"
    if unknown:
        raise DataError(f"{kinds_name} names {', '.join(repr(k) for k in unknown)}, which the {kind_col!r} column "
                        f"never holds; it holds {', '.join(repr(kind) for kind, _ in named.values())}",
                        source=str(path))
    kept = inter.filter(key.is_in(sorted(wanted)))
    report.drop(f"events of other kinds than {', '.join(kinds)} ({path.name}, {kinds_name})",
                inter.height - kept.height)
    return kept
