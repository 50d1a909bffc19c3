"""Rendering for the CLI: metric tables and JSON result files."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# wide enough for the metric tables when stdout is a file or a CI log
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

METRIC_COLUMNS = ("recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20", "mrr@20",
                  "recall@50", "ndcg@50", "mrr@50")
"""The default cut-offs' columns (`recsys evaluate`'s --ks 10,20,50), in the order tables show them."""
METRICS = ("recall", "ndcg", "mrr")


def metric_columns(row: dict) -> list[str]:
    """The metric columns a row holds, by cut-off then `METRICS` (recall@10, ndcg@10, mrr@10, recall@100, …): every
    k the row was evaluated at, not only the default ones (`--ks 10,100` showed @10 alone)."""
    found = [key.split("@") for key in row if "@" in key and key.split("@")[0] in METRICS]
    ks = sorted({int(k) for _, k in found if k.isdigit()})
    return [f"{metric}@{k}" for k in ks for metric in METRICS if f"{metric}@{k}" in row]


def invocation() -> str:
    """This process's command line as `recsys …`, arguments shell-quoted: what a benchmark report records so that
    the run can be repeated as it was."""
    return "recsys " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def step(message: str) -> None:
    """A progress line on stderr before slow work (model loading, encoding), so a long start is never silent and
    stdout stays clean for --json."""
    err_console.print(f"[dim]{escape(message)}[/]")


def _metric_columns_table(rows: list[dict], title: str, columns: list[str]) -> Table:
    table = Table(title=title)
    table.add_column("model", no_wrap=False)  # a long model name wraps; a number is never cut
    table.add_column("split", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    for header in columns:
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(str(row["model"]), str(row["split"]), examples_cell(row),
                      *(f"{row[c]:.4f}" for c in columns))
    return table


class MetricsTable:
    """Model, split, n, then Recall/NDCG/MRR at each k present in the rows: one table where the console is wide
    enough, else one table per k, so no figure is cut to "0.12…" (the nine metric columns need about 115
    characters; a terminal often has 80)."""

    def __init__(self, rows: list[dict], title: str):
        self.rows, self.title = rows, title
        self.columns = metric_columns(rows[0]) if rows else []

    def __rich_console__(self, console, options):
        from rich.measure import Measurement

        whole = _metric_columns_table(self.rows, self.title, self.columns)
        ks = list(dict.fromkeys(c.split("@")[1] for c in self.columns))
        needs = Measurement.get(console, options.update_width(1_000_000), whole).minimum  # (get clamps to width)
        if len(ks) < 2 or needs <= options.max_width:
            yield whole
            return
        for k in ks:
            yield _metric_columns_table(self.rows, f"{self.title} · @{k}",
                                        [c for c in self.columns if c.endswith(f"@{k}")])


def metrics_table(rows: list[dict], title: str) -> MetricsTable:
    """The rich renderable of a metric table (`MetricsTable`)."""
    return MetricsTable(rows, title)


def examples_cell(row: dict) -> str:
    """"n": the examples evaluated, "20,000 of 1,000,000 (seeded sample)" when the evaluation sampled them."""
    n = f"{int(row['n_examples']):,}"
    return f"{n} of {int(row['sampled_from']):,} (seeded sample)" if row.get("sampled_from") else n


def markdown_metrics(rows: list[dict]) -> str:
    """The same table as Markdown (for notes and READMEs)."""
    columns = metric_columns(rows[0]) if rows else []
    lines = ["| model | split | n | " + " | ".join(columns) + " |", "|---" * (3 + len(columns)) + "|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['split']} | {examples_cell(row)} | "
                     + " | ".join(f"{row[c]:.4f}" for c in columns) + " |")
    return "\n".join(lines)


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def print_recommendations(response) -> None:
    """A recommendation response (the API's model) as a table: rank, id, score, title, reason."""
    table = Table(title=f"strategy: {response.strategy}")
    for header in ("#", "item_id", "score", "title", "why"):
        table.add_column(header)
    for rank, item in enumerate(response.items, 1):
        table.add_row(str(rank), item.item_id, f"{item.score:.3f}", escape((item.title or item.text)[:60]),
                      escape(item.reason))
    console.print(table)


def ensemble_table(report: dict) -> Table:
    """A seed ensemble's report (manifest train.ensemble): the first k members' metrics, each member's seed and
    fit."""
    table = Table(title="seed ensemble: the first k members together (full ranking, before the zero-shot blend)")
    columns = [c for c in report["first_k"][0] if c != "members"]
    for header in ("members", "seeds", *columns):
        table.add_column(header, justify="right", no_wrap=True)
    for row in report["first_k"]:
        seeds = ", ".join(str(m["seed"]) for m in report["members"][:row["members"]])
        table.add_row(str(row["members"]), seeds, *(f"{row[c]:.4f}" for c in columns))
    return table


def index_line(summary: dict) -> str:
    """One line on the index a bundle got (manifest "index")."""
    line = f"index: {summary['kind']} ({summary['faiss']})"
    if summary["requested"] == "auto":
        line += f", chosen by --index auto for {summary['items']:,} items"
    if not summary.get("exact"):
        line += (f"; recall@10 {summary['recall@10']:.3f}, recall@100 {summary['recall@100']:.3f} against exact "
                 f"search on {summary['queries']:,} users' queries")
    return line
