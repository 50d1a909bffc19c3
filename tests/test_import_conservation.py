"""Random CSV tables with every kind of defect the importer knows (missing, too long and renumbered ids, item ids
listed twice, empty texts, unparsable prices and timestamps, unknown items, wrong field counts, blank lines, exact
duplicates): with `on_bad_rows="skip"` every row read is imported, counted as dropped or listed as rejected, never
lost without a word; with the default (fail) the import stops exactly when the skipping one rejected rows."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from recsys.data.tables import import_table
from recsys.errors import DataError

TEMPLATE = "{title} | {category}"


def csv_line(*values) -> str:
    return ",".join('"' + str(v).replace('"', '""') + '"' if any(c in str(v) for c in ',"') else str(v)
                    for v in values)


def write_tables(rng: random.Random, folder: Path) -> dict[str, int]:
    """items.csv and events.csv with random defects; returns each file's data lines (blank ones included)."""
    n_items = rng.randint(3, 12)
    items, lines = [], ["item_id,title,category,price"]
    for j in range(n_items):
        item_id = rng.choice([f"i{j}"] * 3 + ["", f"i{rng.randrange(n_items)}", "x" * 300, f"{j}.0", f"{j}"])
        title = rng.choice([f"Title {j}", f"Title {j}", "", f'A "quoted", title {j}', f"Télé {j}"])
        lines.append(csv_line(item_id, title, rng.choice(["c1", "c2", ""]),
                              rng.choice(["", "9.5", "10", "abc", "1e3", "-3"])))
        items.append(item_id)
    lines += [""] * (rng.random() < 0.3) + ["i0,too,many,fields,here"] * (rng.random() < 0.3)
    (folder / "items.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    events = ["user_id,item_id,timestamp"]
    for t in range(rng.randint(5, 40)):
        when = rng.choice([str(1_700_000_000 + t)] * 2 + ["2024-01-02T03:04:05", "", "not a time",
                                                           str((1_700_000_000 + t) * 1000)])
        events.append(csv_line(rng.choice(["u1", "u2", "u3", "", "u4"]), rng.choice(items + ["ghost", ""]), when))
        events += [events[-1]] * (rng.random() < 0.1)  # an exact duplicate
    events += ["u1,i0"] * (rng.random() < 0.3)  # a field short
    (folder / "events.csv").write_text("\n".join(events) + "\n", encoding="utf-8")
    return {"items.csv": len(lines) - 1, "events.csv": len(events) - 1}


@pytest.mark.parametrize("seed", range(40))
def test_every_row_of_a_defective_table_is_imported_dropped_or_rejected(tmp_path, seed):
    rng = random.Random(seed)
    lines = write_tables(rng, tmp_path)
    events, items = tmp_path / "events.csv", tmp_path / "items.csv"
    try:
        dataset = import_table(events, items, text_template=TEMPLATE, on_bad_rows="skip")
    except DataError as exc:  # nothing usable is left: a clear error, not an empty dataset
        assert "no interactions: none of its" in str(exc) or "no items: the file has a header but no usable" in str(exc)
        return
    report = dataset.report
    kept = {"items.csv": dataset.items.height, "events.csv": dataset.interactions.height}
    for name in lines:
        rejected = report.rejected.filter(report.rejected["file"] == name)
        dropped = sum(n for reason, n in report.dropped.items() if reason.endswith(f"({name})"))
        assert kept[name] + rejected.height + dropped == lines[name] == report.rows_read[name], name
        assert rejected["row"].is_unique().all()  # each bad row listed once, with its reason
    if report.rejected.height:
        with pytest.raises(DataError):
            import_table(events, items, text_template=TEMPLATE)
    else:
        assert import_table(events, items, text_template=TEMPLATE).interactions.equals(dataset.interactions)
