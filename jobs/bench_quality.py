"""`recsys bench quality`: popularity, zero-shot BERT and PEFT-BERT variants on one dataset (JSON + MD + PNG).

Registered when jobs/cli.py imports this module; the benchmark itself is benchmarks/quality.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from jobs.app import read_json_object
from jobs.bench import bench_app
from jobs.options import OneOf, comma_list
from jobs.output import invocation
from jobs.paths import writable_out


def _report_name(value: str) -> str:
    """--name callback: the stem of the report files written in --out (checked now, not when they are written after
    the training)."""
    if not value.strip() or value in (".", "..") or "/" in value or "\\" in value:
        raise typer.BadParameter(f"{value!r} is not a report name: give a file name without '/' or '\\' (the "
                                 "report is written as NAME.json / .md / .png in --out)", param_hint="--name")
    return value


@bench_app.command("quality")
def bench_quality(
    data: Annotated[Path, typer.Option(help="dataset directory or raw RecBole/MovieLens directory")],
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="results directory (quality.json, quality.md, "
                                           "quality.png)")] = Path("results/quality"),
    variants: Annotated[str, typer.Option(help="comma-separated presets (encoders/presets.py)")] = "cpu",
    config: Annotated[Optional[Path], typer.Option("--config", help="JSON overrides merged into every preset")] = None,
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines")] = True,
    ranker: Annotated[bool, typer.Option("--ranker/--no-ranker", help="also fit the LightGBM re-ranker on each "
                                         "variant's towers (valid step) and report it on test")] = True,
    bundles: Annotated[Optional[Path], typer.Option(file_okay=False, help="also write each trained bundle under "
                                                    "this root")] = None,
    name: Annotated[str, typer.Option(callback=_report_name, help="report file name: NAME.json / .md / .png in "
                                      "--out")] = "quality",
    threads: Annotated[int, typer.Option(min=1, help="CPU threads (torch, FAISS, BLAS)")] = 2,
    cold_items: Annotated[float, typer.Option(min=0.0, max=0.9, help="simulated new items: hold this share of the "
                                              "items (seeded) out of the train split, so the cold-start slice holds "
                                              "every user whose target is one of them")] = 0.0,
) -> None:
    """Train and evaluate the configured models; writes a Markdown table and a bar chart."""
    from benchmarks.quality import run
    from encoders.presets import PRESETS
    from jobs.threads import limit_cpu_threads

    names = comma_list(variants, "--variants", OneOf(PRESETS, "preset"))
    overrides = read_json_object(config, "TrainConfig overrides merged into every preset")
    limit_cpu_threads(threads)
    command = invocation()
    paths = run(data, out, names, overrides or None, baselines, bundles, command, name=name, ranker=ranker,
                cold_items=cold_items)
    for path in paths.values():
        typer.echo(path)
