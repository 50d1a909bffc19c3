"""Which users a batch job scores: everybody the bundle knows, or the ids of a file (CSV, Parquet, txt).

Ids are kept as compact Arrow-backed Polars columns, never as per-user Python objects, so planning a
job over millions of users costs tens of MB. Unknown ids are collected (and reported by the job),
duplicates are dropped (first occurrence kept), and the order is stable: the file's order, or
sorted ids for `all`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys.errors import DataError

ALL = "all"
HASH_BLOCK = 65_536


@dataclass(frozen=True)
class UserSelection:
    """The users to score, in output order, and what was asked for but cannot be scored.

    `frame` has a `user_id` column and, in evaluation mode, a `history` column (item ids, oldest
    first) that replaces the bundle's stored histories."""

    frame: pl.DataFrame
    unknown: pl.Series
    n_requested: int
    n_duplicates: int
    source: str

    @property
    def n_users(self) -> int:
        return self.frame.height

    def fingerprint(self) -> str:
        """sha256 over the scored ids (and histories), in order: what the output depends on."""
        digest = hashlib.sha256()
        for start in range(0, self.frame.height, HASH_BLOCK):
            block = self.frame.slice(start, HASH_BLOCK)
            digest.update("\x1f".join(block["user_id"].to_list()).encode())
            digest.update(b"\x1d")
            if "history" in block.columns:
                digest.update("\x1e".join("\x1f".join(h) for h in block["history"].to_list()).encode())
        return digest.hexdigest()


def read_user_file(path: str | Path) -> pl.Series:
    """User ids from .txt (one per line; blank lines and `#` comments skipped), .csv (column
    `user_id`, else the first column) or .parquet (column `user_id`, else the only column)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such user list file", source=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif suffix == ".csv":
            frame = pl.read_csv(path, infer_schema=False)
        elif suffix in (".txt", ".ids", ""):
            lines = pl.Series("user_id", path.read_text().splitlines(), dtype=pl.Utf8).str.strip_chars()
            return lines.filter((lines != "") & ~lines.str.starts_with("#"))
        else:
            raise DataError(f"unsupported user list format {suffix!r}: use .txt, .csv or .parquet", source=str(path))
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"cannot read user list ({exc})", source=str(path)) from exc
    if "user_id" in frame.columns:
        column = "user_id"
    elif suffix == ".csv" or frame.width == 1:
        column = frame.columns[0]
    else:
        raise DataError(f"no `user_id` column (columns: {', '.join(frame.columns)})", source=str(path))
    ids = frame[column].cast(pl.Utf8).alias("user_id")
    if ids.null_count():
        raise DataError(f"{ids.null_count()} empty user id(s) in column {column!r}", source=str(path))
    return ids


def select_users(users: str | Path, candidates: pl.DataFrame) -> UserSelection:
    """Resolve `users` ("all" or a file of ids) against `candidates` (`user_id` [+ `history`]).

    Raises DataError when none of the requested ids is known."""
    candidates = candidates.unique("user_id", keep="first", maintain_order=True)
    if str(users) == ALL:
        frame = candidates.sort("user_id")
        return UserSelection(frame, pl.Series("user_id", [], dtype=pl.Utf8), frame.height, 0, ALL)
    requested = read_user_file(users)
    unique = requested.unique(maintain_order=True)
    known_mask = unique.is_in(candidates["user_id"].implode())
    wanted = pl.DataFrame({"user_id": unique.filter(known_mask)})
    frame = wanted.join(candidates, on="user_id", how="left", maintain_order="left")
    selection = UserSelection(frame, unique.filter(~known_mask), len(requested), len(requested) - len(unique),
                              str(users))
    if selection.n_users == 0:
        shown = ", ".join(repr(u) for u in selection.unknown.head(5).to_list())
        raise DataError(f"none of the {len(unique):,} user ids is known to the bundle (e.g. {shown})",
                        source=str(users))
    return selection
