"""`recsys bench ranker`: retrieval-only vs re-ranked on one bundle (JSON + MD + PNG).

Registered when jobs/cli.py imports this module; the benchmark itself is benchmarks/ranker.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from jobs.app import BundleData, BundleDir
from jobs.bench import bench_app
from jobs.options import WholeNumber, comma_list
from jobs.paths import writable_out
from jobs.ranker_cmd import (Candidates, CvFolds, FoldEnsemble, PopularCandidates, RankerConfigFile, RankerThreads,
                             TrainPositions, TransitionCandidates, ranker_config, read_overrides)


def _new_bundle(value: Path | None) -> Path | None:
    """--save-bundle callback: a path that exists is refused now, not after the fits (the bundle is written last)."""
    if value is not None and value.exists():
        raise typer.BadParameter(f"{value} already exists: choose a new directory", param_hint="--save-bundle")
    return value


@bench_app.command("ranker")
def bench_ranker(
    bundle: BundleDir,
    data: BundleData,
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="results directory (ranker.json, ranker.md, "
                                           "ranker.png)")] = Path("results/ranker"),
    candidates: Candidates = None,
    n_jobs: RankerThreads = None,
    seeds: Annotated[str, typer.Option(help="comma-separated seeds: one fit each, the spread reported")] = "0",
    train_positions: TrainPositions = None,
    transition_candidates: TransitionCandidates = None,
    popular_candidates: PopularCandidates = None,
    cv_folds: CvFolds = None,
    fold_ensemble: FoldEnsemble = None,
    save_bundle: Annotated[Optional[Path], typer.Option(callback=_new_bundle, help="also write the bundle with its "
                                                        "best-on-valid ranker here (a new directory)")] = None,
    config_file: RankerConfigFile = None,
) -> None:
    """Train the re-ranker once per seed and compare it with retrieval alone (held-out valid users, test)."""
    from benchmarks.ranker import run
    from jobs.output import console, invocation

    seed_list = comma_list(seeds, "--seeds", WholeNumber(0, "seeds"))
    config = ranker_config(candidates, n_jobs, 0, train_positions, transition_candidates, popular_candidates,
                           cv_folds, fold_ensemble, read_overrides(config_file))
    command = invocation()
    paths = run(bundle, data, out, config, seed_list, command, save_bundle, log=console.print)
    for path in paths.values():
        typer.echo(path)
