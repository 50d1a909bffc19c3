"""Counted nouns in messages ("1 row", "2,000 rows"): one rule for the library, the CLI and the benchmarks. No
imports, so any module can use it."""

from __future__ import annotations


def plural(n: int, one: str, many: str | None = None) -> str:
    """`one` when `n` is 1, else `many` (default: `one` + "s"); an irregular noun or a verb names its own `many`
    ("entry", "entries"; "has", "have")."""
    return one if n == 1 else many if many is not None else f"{one}s"


def named(what: str, names) -> str:
    """`what` in the number of `names`, then the names quoted: "column 'sku'", "columns 'user_id', 'item_id'"."""
    names = list(names)
    return f"{plural(len(names), what)} {', '.join(repr(name) for name in names)}"


def counted(n: int, one: str, many: str | None = None) -> str:
    """`n` (thousands separated) and its noun: "1 row", "0 rows", "2,000 rows", "3 entries"."""
    return f"{n:,} {plural(n, one, many)}"
