"""Shared benchmark plumbing: an environment stamp, RSS, and one report writer that every benchmark
uses: `<name>.json` (meta + rows), `<name>.md` (meta + Markdown tables) and `<name>.png` (a chart)."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from recsys.artifacts import git_sha, library_versions


@dataclass(frozen=True)
class Column:
    """A table column: row key, header, and a format spec for numbers (e.g. ".3f", ",.0f")."""

    key: str
    title: str | None = None
    fmt: str = ""

    def render(self, value: Any) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return "–"
        if self.fmt and isinstance(value, (int, float)) and not isinstance(value, bool):
            return format(value, self.fmt)
        return str(value)


def environment(packages: Sequence[str] = ("numpy", "faiss-cpu", "faiss-gpu-cu12", "polars", "torch", "lightgbm",
                                           "lleaves")) -> dict:
    """Where and with what a benchmark ran (stored in every report)."""
    versions = library_versions(packages)
    sha = git_sha()
    return {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_sha": sha[:7] if sha else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "packages": versions,
    }


def rss_mb() -> float:
    """Resident memory of this process (MiB)."""
    return psutil.Process().memory_info().rss / 2**20


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    lines = ["| " + " | ".join(c.title or c.key for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(c.render(row.get(c.key)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_report(out_dir: str | Path, name: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *,
                 title: str | None = None, meta: Mapping[str, Any] | None = None, group_by: str | None = None,
                 notes: Sequence[str] = (), chart: Callable[[Sequence[Mapping[str, Any]], Path], None] | None = None,
                 ) -> dict[str, Path]:
    """Write `<name>.json`, `<name>.md` (one table per `group_by` value, in first-seen order) and, when
    `chart` is given, `<name>.png` (`chart(rows, path)` draws and saves it). Returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    paths = {"json": out_dir / f"{name}.json", "md": out_dir / f"{name}.md"}
    paths["json"].write_text(json.dumps({"meta": meta, "rows": list(rows)}, indent=2, default=str) + "\n")

    parts = [f"# {title or name}", ""]
    parts += [f"- {line}" for line in notes]
    if notes:
        parts.append("")
    if group_by is None:
        parts += [markdown_table(rows, columns), ""]
    else:
        groups: dict[Any, list] = {}
        for row in rows:
            groups.setdefault(row.get(group_by), []).append(row)
        for key, group in groups.items():
            parts += [f"## {key}", "", markdown_table(group, [c for c in columns if c.key != group_by]), ""]
    env = meta.get("environment")
    if env:
        parts += [f"<sub>{env.get('created_at')} · git {env.get('git_sha')} · {env.get('cpu_count')} CPUs · "
                  f"load {env.get('load_avg_1m')} · {env.get('platform')} · "
                  + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items()) + "</sub>", ""]
    paths["md"].write_text("\n".join(parts))

    if chart is not None and rows:
        import matplotlib

        matplotlib.use("Agg")
        paths["png"] = out_dir / f"{name}.png"
        chart(rows, paths["png"])
    return paths


__all__ = ["Column", "environment", "rss_mb", "markdown_table", "write_report"]
