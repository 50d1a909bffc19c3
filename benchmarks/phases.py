"""Shared pieces of the small phase benchmarks (a table of latency per phase: no edits, edits going on, …) kept
beside their results: `benchmarks/results/user-cache-feed/feed_cache.py`,
`benchmarks/results/similar-cache-stockouts/similar_stockouts.py` and `similar_api.py`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Column

LATENCY_COLUMNS = [Column("p50_ms", "p50 ms", ".2f"), Column("mean_ms", "mean ms", ".2f"),
                   Column("p99_ms", "p99 ms", ".2f")]


def phase_row(phase: str, ms: Sequence[float], **extra: Any) -> dict:
    """One table row: the phase, how many requests, `extra` (e.g. a hit rate), then p50 / mean / p99 of `ms`."""
    return {"phase": phase, "requests": len(ms), **extra, "p50_ms": float(np.percentile(ms, 50)),
            "mean_ms": float(np.mean(ms)), "p99_ms": float(np.percentile(ms, 99))}


def hit_rate(hits: int, misses: int) -> float:
    return hits / max(hits + misses, 1)


def latency_chart(xlabel: str, label_key: str | None = None) -> Callable[[Sequence[Mapping], Path], None]:
    """A chart of each phase's mean (bars) and p50 (dots), the value of `label_key` written at each bar."""
    def draw(rows: Sequence[Mapping], path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.2))
        names = [r["phase"] for r in rows]
        ax.barh(names, [r["mean_ms"] for r in rows], color="#4c72b0", label="mean")
        ax.scatter([r["p50_ms"] for r in rows], names, color="#dd8452", zorder=3, label="p50")
        if label_key is not None:
            for name, r in zip(names, rows):
                ax.text(r["mean_ms"], name, f"  {label_key.replace('_', ' ')} {r[label_key]:.3f}", va="center",
                        fontsize=8)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    return draw


def arguments(doc: str, options: Mapping[str, tuple[type, Any]]) -> argparse.Namespace:
    """The command line of a phase benchmark: `--out` and each of `options` (name → (type, default; None:
    required))."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", required=True)
    for name, (kind, default) in options.items():
        parser.add_argument(f"--{name}", type=kind, default=default, required=default is None)
    return parser.parse_args()
