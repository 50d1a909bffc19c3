"""`recsys.text_format`: counted nouns read one way everywhere, and no module words a plural by hand."""

import re
from pathlib import Path

from recsys.text_format import counted, named, plural

ROOT = Path(__file__).resolve().parents[1]


def test_count_and_plural():
    assert [counted(n, "row") for n in (0, 1, 2, 2000)] == ["0 rows", "1 row", "2 rows", "2,000 rows"]
    assert counted(1, "entry", "entries") == "1 entry" and counted(3, "entry", "entries") == "3 entries"
    assert [plural(n, "has", "have") for n in (1, 2)] == ["has", "have"]
    assert [plural(n, "holds", "hold") for n in (1, 2)] == ["holds", "hold"]


def test_named_nouns_agree_with_their_names():
    # "missing column(s) ['sku']": the message now reads "missing column 'sku'" or "missing columns 'a', 'b'"
    assert named("column", ["sku"]) == "column 'sku'"
    assert named("column", ["user_id", "item_id"]) == "columns 'user_id', 'item_id'"


def test_no_module_words_a_plural_by_hand():
    # `'s' * (n > 1)` and `'s' if n != 1 else ''` beside jobs/cli.py's own `_count`: three rules for one thing, which
    # disagreed on 0 ("0 line" / "0 lines")
    # and `f"{n} shard(s)"`: "1 shard(s)", where counted() reads "1 shard"
    # and "missing column(s) {missing}": "missing column(s) ['sku']" for one, where named() reads "column 'sku'"
    by_hand = re.compile(r"""['"]s['"] \* \(|['"]s['"] if |else ['"]s['"]|'(?:has|have|is|are)' if |"""
                         r"""\{[^{}]*\}[^"'{}]*\b[a-z]+\(s\)|\b[a-z]+\(s\) \{""")
    found = [f"{path.relative_to(ROOT)}:{number}" for folder in ("recsys", "encoders", "jobs", "api", "benchmarks")
             for path in sorted((ROOT / folder).rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if by_hand.search(line)]
    assert not found, found
