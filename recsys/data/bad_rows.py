"""Bad input rows, collected over a whole file: listed in one error (`fail`) or left out and reported (`skip`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl

from recsys.data.dataset import REJECTED_FILE, REJECTED_SCHEMA
from recsys.data.option_names import KEYWORDS, OptionNames
from recsys.errors import DataError

OnBadRows = Literal["fail", "skip"]
LISTED = 5  # bad rows an error message shows


def import_skip_hint(names: OptionNames) -> str:
    """How an import goes on past its bad rows, its option named as its caller names it."""
    return (f"skip bad rows with {names.option('on_bad_rows', 'skip')}: the other rows are imported and every bad row "
            f"is listed in {REJECTED_FILE}")


class BadRows:
    """Bad input rows, collected over a whole file instead of stopping at the first one. With `fail` the file's
    checks end in one DataError listing them (the first few and the total); with `skip` they are left out and
    kept (file, row, problem, value) in the import report, which `Dataset.save` writes to rejected.csv."""

    def __init__(self, mode: OnBadRows = "fail", skip_hint: str | None = None) -> None:
        """`skip_hint`: how to go on past them, said by `fail`'s error (default: `import_table`'s keyword; "" for a
        caller that cannot skip them)."""
        if mode not in ("fail", "skip"):
            raise ValueError(f"on_bad_rows must be 'fail' or 'skip', got {mode!r}")
        self.mode = mode
        self.skip_hint = import_skip_hint(KEYWORDS) if skip_hint is None else skip_hint
        self.found: list[pl.DataFrame] = []
        self.unread: dict[str, list[list[str | None]]] = {}  # by file name: the fields of its unreadable records

    def reject(self, frame: pl.DataFrame, mask: pl.Series | pl.Expr, problem: str, path: Path,
               value: str | pl.Series | None = None) -> pl.DataFrame:
        """Record the rows of `frame` (with `__row`) where `mask` holds; return the others. `{value!r}` in
        `problem` stands for that row's `value` (a column name or a Series aligned with `frame`)."""
        if isinstance(value, pl.Series):
            frame, value = frame.with_columns(value.alias("__value")), "__value"
        flagged = frame.with_columns(pl.lit(False).or_(mask).fill_null(False).alias("__bad")) \
            if isinstance(mask, pl.Expr) else frame.with_columns(mask.fill_null(False).alias("__bad"))
        bad = flagged.filter(pl.col("__bad"))
        if bad.height:
            values = bad[value].cast(pl.Utf8) if value else pl.Series([None] * bad.height, dtype=pl.Utf8)
            self.found.append(pl.DataFrame({"file": [path.name] * bad.height, "row": bad["__row"].cast(pl.Int64),
                                            "problem": [problem.replace(" {value!r}", "")] * bad.height,
                                            "value": values, "__template": [problem] * bad.height}))
        return flagged.filter(~pl.col("__bad")).drop("__bad", *(["__value"] if value == "__value" else []))

    def add(self, path: Path, row: int, problem: str, value: str | None = None,
            unread: list[str | None] | None = None) -> None:
        """Record one bad row; `unread`: the fields of a record that could not be read as a row (`unread_ids`)."""
        if unread is not None:
            self.unread.setdefault(path.name, []).append(unread)
        self.found.append(pl.DataFrame({"file": [path.name], "row": [row], "problem": [problem], "value": [value],
                                        "__template": [problem]},
                                       schema={"file": pl.Utf8, "row": pl.Int64, "problem": pl.Utf8, "value": pl.Utf8,
                                               "__template": pl.Utf8}))

    def table(self) -> pl.DataFrame:
        """Every bad row so far, by file and row, with its template (dropped by `rejected`)."""
        if not self.found:
            return pl.DataFrame(schema={**REJECTED_SCHEMA, "__template": pl.Utf8})
        return pl.concat(self.found).sort("file", "row", maintain_order=True)

    def rejected(self) -> pl.DataFrame:
        return self.table().drop("__template")

    def described(self, path: Path | None = None, limit: int = LISTED) -> list[tuple[int, str]]:
        """The first `limit` bad rows (of `path`'s file, else of every file) as (row, the problem with its value)."""
        bad = self.table() if path is None else self.table().filter(pl.col("file") == path.name)
        return [(row, template.replace("{value!r}", repr(value)))  # not str.format: a file name may hold braces
                for row, template, value in bad.select("row", "__template", "value").head(limit).iter_rows()]

    def check(self, path: Path) -> None:
        """In `fail` mode, raise for `path`'s bad rows (all of them counted, the first few shown)."""
        if self.mode != "fail":
            return
        bad = self.table().filter(pl.col("file") == path.name)
        if not bad.height:
            return
        shown, hint = self.described(path), f" ({self.skip_hint})" if self.skip_hint else ""
        if bad.height == 1:
            raise DataError(f"{shown[0][1]}{hint}", source=str(path), row=shown[0][0])
        listed = "; ".join(f"row {row}: {problem}" for row, problem in shown)
        more = f"; … and {bad.height - LISTED} more" if bad.height > LISTED else ""
        raise DataError(f"{bad.height} bad rows: {listed}{more}{hint}", source=str(path))
