"""Which users a batch job scores: everybody the bundle knows, a seeded random sample of them (`sample:N` or
`sample:N:SEED`), or the ids of a file (CSV, Parquet, txt).

Ids are kept as compact Arrow-backed Polars columns, never as per-user Python objects, so planning a
job over millions of users costs tens of MB. Unknown ids are collected (and reported by the job),
duplicates are dropped (first occurrence kept), and the order is stable: the file's order, or
sorted ids for `all` and samples.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.tables import check_single_values, whole_floats_as_integers
from recsys.errors import DataError
from recsys.text_format import counted

ALL = "all"
SAMPLE = "sample:"
HASH_BLOCK = 65_536


@dataclass(frozen=True)
class UserSelection:
    """The users to score, in output order, and what was asked for but cannot be scored.

    `frame` has a `user_id` column and, in evaluation mode, a `history` column (item ids, oldest
    first) that replaces the bundle's stored histories and a `timestamp` column (the example's time)."""

    frame: pl.DataFrame
    unknown: pl.Series
    n_requested: int
    n_duplicates: int
    source: str

    @property
    def n_users(self) -> int:
        return self.frame.height

    def fingerprint(self) -> str:
        """sha256 over the scored ids (and histories and times), in order: what the output depends on."""
        digest = hashlib.sha256()
        for start in range(0, self.frame.height, HASH_BLOCK):
            block = self.frame.slice(start, HASH_BLOCK)
            digest.update("\x1f".join(block["user_id"].to_list()).encode())
            digest.update(b"\x1d")
            if "history" in block.columns:
                digest.update("\x1e".join("\x1f".join(h) for h in block["history"].to_list()).encode())
            if "timestamp" in block.columns:
                digest.update(b"\x1c" + "\x1f".join(map(str, block["timestamp"].to_list())).encode())
        return digest.hexdigest()


def read_user_file(path: str | Path) -> tuple[pl.Series, str | None]:
    """User ids from .txt (one per line; blank lines and `#` comments skipped), .csv (column
    `user_id`, else the first column; blank lines skipped) or .parquet (column `user_id`, else the only column),
    and the column they came from (None for .txt)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such user list file", source=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif suffix == ".csv":  # blank lines hold no id: skipped, as in .txt files and `recsys import`
            frame = pl.read_csv(path, infer_schema=False)
            frame = frame.filter(~pl.all_horizontal(pl.all().is_null())) if frame.width else frame
            frame = frame.with_columns(pl.all().str.strip_chars())  # as .txt lists and `recsys import` do
        elif suffix in (".txt", ".ids", ""):
            lines = pl.Series("user_id", path.read_text().splitlines(), dtype=pl.Utf8).str.strip_chars()
            return lines.filter((lines != "") & ~lines.str.starts_with("#")), None
        else:
            raise DataError(f"unsupported user list format {suffix!r}: use .txt, .csv or .parquet", source=str(path))
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot read user list: not UTF-8 text ({exc.reason} at byte {exc.start})",
                        source=str(path)) from None
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"cannot read user list ({exc})", source=str(path)) from exc
    if "user_id" in frame.columns:
        column = "user_id"
    elif suffix == ".csv" or frame.width == 1:
        column = frame.columns[0]
    else:
        raise DataError(f"no `user_id` column (columns: {', '.join(frame.columns)})", source=str(path))
    check_single_values(frame, [column], path)
    ids = whole_floats_as_integers(frame, [column])[column].cast(pl.Utf8).alias("user_id")
    if ids.null_count():
        raise DataError(f"{counted(ids.null_count(), 'empty user id')} in column {column!r}", source=str(path))
    return ids, column


def parse_sample(text: str) -> tuple[int, int]:
    """(N, seed) of `sample:N` (seed 0) or `sample:N:SEED`; DataError otherwise."""
    parts = text[len(SAMPLE):].split(":")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        n, seed = int(parts[0]), int(parts[1]) if len(parts) == 2 else 0
    except ValueError:
        raise DataError(f"expected sample:N or sample:N:SEED (N users, integers), got {text!r}") from None
    if n < 1 or seed < 0:
        raise DataError(f"sample:N:SEED needs N ≥ 1 and SEED ≥ 0, got {text!r}")
    return n, seed


def select_users(users: str | Path, candidates: pl.DataFrame) -> UserSelection:
    """Resolve `users` ("all", "sample:N[:SEED]" or a file of ids) against `candidates` (`user_id` [+ `history`]).
    A sample is N users drawn without replacement by a seeded generator from every known user sorted by id
    (everybody when N ≥ their number), in id order.

    Raises DataError when none of the requested ids is known."""
    candidates = candidates.unique("user_id", keep="first", maintain_order=True)
    empty = pl.Series("user_id", [], dtype=pl.Utf8)
    if str(users) == ALL:
        frame = candidates.sort("user_id")
        return UserSelection(frame, empty, frame.height, 0, ALL)
    if str(users).startswith(SAMPLE):
        n, seed = parse_sample(str(users))
        frame = candidates.sort("user_id")
        if n < frame.height:
            frame = frame[np.sort(np.random.default_rng(seed).choice(frame.height, n, replace=False))]
        return UserSelection(frame, empty, frame.height, 0, str(users))
    requested, column = read_user_file(users)
    where = f" (read from column {column!r}: the file has no `user_id` column)" \
        if column not in (None, "user_id") else ""
    unique = requested.unique(maintain_order=True)
    known_mask = unique.is_in(candidates["user_id"].implode())
    wanted = pl.DataFrame({"user_id": unique.filter(known_mask)})
    frame = wanted.join(candidates, on="user_id", how="left", maintain_order="left")
    selection = UserSelection(frame, unique.filter(~known_mask), len(requested), len(requested) - len(unique),
                              str(users))
    if len(requested) == 0:
        raise DataError("the user list holds no ids", source=str(users))
    if selection.n_users == 0:
        shown = ", ".join(repr(u) for u in selection.unknown.head(5).to_list())
        raise DataError(f"none of the {len(unique):,} user ids is known to the bundle (e.g. {shown}){where}",
                        source=str(users))
    return selection
