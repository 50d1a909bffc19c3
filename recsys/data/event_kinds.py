"""An export's event-kind column (view, cart, purchase, or whatever the shop writes): its kinds counted in the import
notes, when asked only some of them kept (`recsys import table --kind-col type --kinds purchase,cart`), and each kept
event's kind stored in the dataset (`KIND_COLUMN`), so the API words an imported purchase's reason as a live one's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from recsys.data.dataset import KIND_COLUMN, ImportReport
from recsys.data.option_names import KEYWORDS, OptionNames
from recsys.errors import DataError
from recsys.event_log import EVENT_KINDS
from recsys.text_format import counted

NO_KIND = "(empty)"
"""How an event without a kind is named in the notes."""


def stored_kind(kind_col: str, renames: Mapping[str, str] | None = None) -> pl.Expr:
    """The kind an import stores (`KIND_COLUMN`): stripped and lower-cased, as `--kinds` matches kinds ("Purchase " →
    "purchase", the API's own name), then renamed by `renames` (`parse_kind_names`: "transaction" → "purchase");
    null for an empty one."""
    key = pl.col(kind_col).cast(pl.Utf8).str.strip_chars().str.to_lowercase()
    if renames:
        key = key.replace(dict(renames))
    return pl.when(key != "").then(key).alias(KIND_COLUMN)


def parse_kind_names(text: str | None, names: OptionNames = KEYWORDS) -> dict[str, str] | None:
    """`--kind-names`' "transaction=purchase, addtocart=cart": the export's own kind (case and surrounding spaces
    ignored) → the API's (view, cart or purchase), so an imported transaction reads "because you bought …". None
    for none given; a malformed entry, an unknown API kind or a kind renamed twice is an error."""
    if text is None:
        return None
    renames: dict[str, str] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        own, sep, api = (side.strip() for side in entry.partition("="))
        if not sep or not own or not api:
            raise names.invalid("kind_names", f"{entry!r} is not OWN=KIND, e.g. transaction=purchase")
        if api.lower() not in EVENT_KINDS:
            raise names.invalid("kind_names", f"{entry!r} renames to {api!r}; the kinds the API words are "
                                f"{', '.join(EVENT_KINDS)}")
        if own.lower() in renames:
            raise names.invalid("kind_names", f"{own!r} is renamed twice")
        renames[own.lower()] = api.lower()
    if not renames:
        raise names.invalid("kind_names", "names no kind: give some, such as transaction=purchase")
    return renames


def parse_kinds(text: str | None) -> list[str] | None:
    """`--kinds`' comma-separated list ("purchase, cart" → ["purchase", "cart"]); None for none given (`import_table`
    refuses an empty list: nothing would be kept)."""
    return None if text is None else [k.strip() for k in text.split(",") if k.strip()]


def keep_kinds(inter: pl.DataFrame, kind_col: str, kinds: Sequence[str] | None, report: ImportReport,
               path: Path, names: OptionNames = KEYWORDS, renames: Mapping[str, str] | None = None) -> pl.DataFrame:
    """`inter` with the events of `kinds` only (all of them when None), matched without regard to case or
    surrounding spaces. The notes count the events of each kind the file holds and what was kept; the events left
    out are counted in the report's drops. A kind the column never holds is an error that lists the ones it
    does (a typo would otherwise keep nothing of it, unnoticed); so is a kind `renames` (`--kind-names`) renames that
    the column never holds. `names`: how the messages name the caller's options."""
    value = pl.col(kind_col).cast(pl.Utf8).str.strip_chars().fill_null("")
    key = value.str.to_lowercase()
    counts = inter.group_by(key.alias("key")).agg(value.first().alias("kind"), pl.len().alias("n"))
    rows = sorted(counts.iter_rows(), key=lambda row: (-row[2], row[0] == "", row[0]))  # most first, empty last
    named = {key: (kind or NO_KIND, n) for key, kind, n in rows}
    held = ", ".join(f"{kind} {n:,}" for kind, n in named.values())
    report.notes.append(f"{path.name}: {counted(inter.height, 'event')} by {kind_col!r}: {held}")
    if renames:
        _check_held(list(renames), named, "kind_names", kind_col, path, names)
        report.notes.append(f"{path.name}: stored as the API's kinds: "
                            + ", ".join(f"{named[own][0]} → {api}" for own, api in renames.items()))
    if kinds is None:
        return inter
    wanted = {k.strip().lower() for k in kinds}
    _check_held(kinds, named, "kinds", kind_col, path, names)
    kinds_name = names.name("kinds")
    kept = inter.filter(key.is_in(sorted(wanted)))
    report.drop(f"events of other kinds than {', '.join(kinds)} ({path.name}, {kinds_name})",
                inter.height - kept.height)
    return kept


def _check_held(kinds: Sequence[str], named: Mapping[str, tuple[str, int]], keyword: str, kind_col: str, path: Path,
                names: OptionNames) -> None:
    """An error naming the `kinds` (of option `keyword`) that the column never holds, and the ones it does."""
    unknown = [k for k in kinds if k.strip().lower() not in named]
    if unknown:
        raise DataError(f"{names.name(keyword)} names {', '.join(repr(k) for k in unknown)}, which the "
                        f"{kind_col!r} column never holds; it holds "
                        f"{', '.join(repr(kind) for kind, _ in named.values())}", source=str(path))
