"""`recsys bench edited-texts`: what edited texts of trained items cost the served engine, encoded text-only, with
their ID block kept, and with their own neighbour share kept too (JSON + MD + PNG). Registered when jobs/cli.py
imports this module; the benchmark is benchmarks/edited_texts.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jobs.app import BundleData, BundleDir
from jobs.bench import bench_app
from jobs.paths import writable_out


@bench_app.command("edited-texts")
def bench_edited_texts(
    bundle: BundleDir,
    data: BundleData,
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="results directory")] = Path("results/edited-texts"),
    share: Annotated[float, typer.Option(min=0.001, max=1.0, help="share of the catalogue whose "
                                         "texts are edited")] = 1.0,
    suffix: Annotated[str, typer.Option(help="appended to each edited text")] = " (2026 edition)",
    seed: Annotated[int, typer.Option(min=0, help="which items are edited")] = 0,
) -> None:
    """Test N@10 / R@10 of a bundle as built and after a feed edits its items' texts (text-only, ID block kept, own
    neighbours kept)."""
    from benchmarks.edited_texts import run
    from jobs.output import console, invocation

    if not suffix.strip():
        raise typer.BadParameter("an edit must change the text: give a --suffix with a visible character",
                                 param_hint="--suffix")
    paths = run(bundle, data, out, share, suffix, seed, invocation(), log=console.print)
    for path in paths.values():
        typer.echo(path)
