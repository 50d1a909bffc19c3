"""`recsys bench ranker-folds`: re-ranker fitting schemes (one fit, K folds refit, K folds summed) compared on the
whole valid step by cross-fitting (JSON + MD + PNG). Registered when jobs/cli.py imports this module; the
benchmark is benchmarks/ranker_folds.py. `recsys bench id-sequence`: the same cross-fitting with an ID-only sequence
model's features added (benchmarks/id_sequence.py); `recsys bench ease`: with EASE item–item scores added
(benchmarks/ease.py); `recsys bench lexical`: with TF-IDF text similarities added (benchmarks/lexical.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jobs.app import BundleData, BundleDir
from jobs.bench import bench_app
from jobs.options import Number, comma_list
from jobs.paths import writable_out

OuterFolds = Annotated[int, typer.Option("--outer", min=2, max=20, help="cross-fitting folds over the valid users")]
FoldSeed = Annotated[int, typer.Option("--seed", min=0, help="seed of the cross-fitting folds, the re-ranker "
                                                               "(LightGBM) and any probe model")]


@bench_app.command("ranker-folds")
def bench_ranker_folds(
    bundle: BundleDir,
    data: BundleData,
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="results directory (folds.json, folds.md, "
                                           "folds.png)")] = Path("results/ranker-folds"),
    outer: OuterFolds = 5,
    seed: FoldSeed = 0,
    schemes: Annotated[Path | None, typer.Option(
        help="JSON file: scheme name → RankerConfig overrides (LightGBM settings, folds, candidates, features; "
             "nested 'features' merge); default: one fit, 5 folds refit, 5 folds summed")] = None,
) -> None:
    """Valid NDCG@10 of each re-ranker fitting scheme, every valid user scored by rankers that never saw them."""
    from benchmarks.ranker_folds import load_schemes, run
    from jobs.output import console, invocation

    try:
        chosen = load_schemes(schemes) if schemes is not None else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--schemes") from None
    command = invocation()
    for path in run(bundle, data, out, seed=seed, outer=outer, command=command, schemes=chosen,
                    log=console.print).values():
        typer.echo(path)


@bench_app.command("id-sequence")
def bench_id_sequence(
    bundle: BundleDir,
    data: BundleData,
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="results directory (sequence.json, sequence.md, "
                                           "sequence.png)")] = Path("results/id-sequence"),
    outer: OuterFolds = 5,
    seed: FoldSeed = 0,
    max_epochs: Annotated[int, typer.Option(min=1, max=10_000, help="the ID-only model's epochs at most (it stops "
                                            "earlier after 6 validation checks, every 5 epochs, without a gain)")]
    = 300,
) -> None:
    """Probe: an ID-only sequence model (SASRec-style, train split only) alone, and its score as re-ranker
    features, cross-fitted on every valid user against the default re-ranker."""
    from benchmarks.id_sequence import run
    from jobs.output import console, invocation

    command = invocation()
    for path in run(bundle, data, out, seed=seed, outer=outer, command=command, max_epochs=max_epochs,
                    log=console.print).values():
        typer.echo(path)


@bench_app.command("ease")
def bench_ease(
    bundle: BundleDir,
    data: BundleData,
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="results directory (ease.json, ease.md, ease.png)")] = Path(
        "results/ease"),
    lambdas: Annotated[str, typer.Option(help="comma-separated EASE regularisation strengths λ")] = "100,200,500",
    buckets: Annotated[int, typer.Option(min=1, help="absolute time: fits, one per group of valid queries by time "
                                         "(each on the train events before its earliest query)")] = 10,
    outer: OuterFolds = 5,
    seed: FoldSeed = 0,
) -> None:
    """Probe: EASE item–item scores (a closed-form ridge regression over the train split's user × item matrix,
    point in time) as a re-ranker feature, cross-fitted on every valid user against the default re-ranker."""
    from benchmarks.ease import run
    from jobs.output import console, invocation

    chosen = comma_list(lambdas, "--lambdas", Number())
    for path in run(bundle, data, out, chosen, buckets, seed=seed, outer=outer, command=invocation(),
                    log=console.print).values():
        typer.echo(path)


@bench_app.command("lexical")
def bench_lexical(
    bundle: BundleDir,
    data: BundleData,
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="results directory (lexical.json, lexical.md, "
                                           "lexical.png)")] = Path("results/lexical"),
    outer: OuterFolds = 5,
    seed: FoldSeed = 0,
) -> None:
    """Probe: TF-IDF cosine similarities of each candidate's text to the last history items' (character and word
    n-grams, fitted on the catalogue's texts) as re-ranker features, cross-fitted on every valid user against the
    default re-ranker."""
    from benchmarks.lexical import run
    from jobs.output import console, invocation

    for path in run(bundle, data, out, seed=seed, outer=outer, command=invocation(), log=console.print).values():
        typer.echo(path)
