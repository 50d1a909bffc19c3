"""Shared pieces of the small phase benchmarks (a table of latency per phase: no edits, edits going on, …) kept
beside their results: `benchmarks/results/user-cache-feed/feed_cache.py`,
`benchmarks/results/similar-cache-stockouts/similar_stockouts.py` and `similar_api.py`."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
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


PAUSE_S = 0.25
"""The API benchmarks' pause after each edit, for the worker to apply it (RECSYS_SYNC_INTERVAL_MS 200)."""


def timed_gets(client, paths: Iterable[str]) -> list[float]:
    """Milliseconds of each GET of `paths` (an httpx client, one request at a time, on the client's clock)."""
    ms = []
    for path in paths:
        started = time.perf_counter()
        client.get(path).raise_for_status()
        ms.append((time.perf_counter() - started) * 1e3)
    return ms


def paced_phases(ask: Callable[[int], list[float]], edit: Callable[[int], object], edit_label: str, rounds: int,
                 queries: int) -> dict[str, list[float]]:
    """The API benchmarks' three phases: `rounds` × `queries` requests back to back (`ask(n)`: n requests' ms); the
    same with a `PAUSE_S` pause before every `queries` (the control for the third's pauses); `rounds` rounds of
    `edit(j)`, the pause, then `queries` requests."""
    phases = {"no edits": ask(rounds * queries)}
    paused: list[float] = []
    for _ in range(rounds):
        time.sleep(PAUSE_S)
        paused += ask(queries)
    phases[f"no edits, a {PAUSE_S} s pause before every {queries}"] = paused
    edited: list[float] = []
    for j in range(rounds):
        edit(j)
        time.sleep(PAUSE_S)
        edited += ask(queries)
    phases[f"{edit_label} and a {PAUSE_S} s pause before every {queries}"] = edited
    return phases


def paced_rows(ask: Callable[[int], list[float]], edit: Callable[[int], object], edit_label: str, rounds: int,
               queries: int) -> tuple[list[dict], list[list[float]]]:
    """`paced_phases` as table rows (`phase_row`), and the load average (1, 5, 15 min) at their start and end."""
    load = [os.getloadavg()]
    phases = paced_phases(ask, edit, edit_label, rounds, queries)
    load.append(os.getloadavg())
    return [phase_row(name, ms) for name, ms in phases.items()], [list(v) for v in load]


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


def arguments(doc: str, options: Mapping[str, tuple]) -> argparse.Namespace:
    """The command line of a phase benchmark: `--out` and each of `options` (name → (type, default; None:
    required) or (type, default, the values it takes))."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", required=True)
    for name, (kind, default, *choices) in options.items():
        parser.add_argument(f"--{name}", type=kind, default=default, required=default is None,
                            choices=choices[0] if choices else None)
    return parser.parse_args()
