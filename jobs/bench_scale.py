"""`recsys bench encoder` and `recsys bench scale`: the encoder backends side by side, and the whole path at
growing shop sizes (JSON + MD + PNG).

Registered by the one import line in jobs/cli.py; the benchmarks are benchmarks/encoder.py and
benchmarks/scale.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.markup import escape

from jobs.bench import bench_app
from jobs.options import OneOf, comma_list
from jobs.output import invocation
from jobs.paths import writable_out


@bench_app.command("encoder")
def bench_encoder(
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="output directory")] = Path("results/encoder"),
    texts: Annotated[int, typer.Option(min=100, help="synthetic shop item texts to encode")] = 10_000,
    threads: Annotated[int, typer.Option(min=1, help="torch / ONNX Runtime threads")] = 2,
    data: Annotated[Optional[Path], typer.Option(help="also evaluate each backend zero-shot on this dataset's "
                                                      "test step")] = None,
    seed: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """torch fp32 vs ONNX Runtime fp32 vs int8: items/s, cosine to fp32, zero-shot quality."""
    from benchmarks.encoder import run
    from jobs.workflows import check_dataset

    if data is not None:  # read after every backend's throughput run: a wrong path fails now, not then
        check_dataset(data)
    paths = run(out, texts, threads, data, seed, command=invocation())
    typer.echo(paths["md"].read_text())


class ShopSize:
    """A `--sizes` item of `bench scale`: ITEMSxUSERSxEVENTS (benchmarks.scale.Size)."""

    allowed = "expected comma-separated ITEMSxUSERSxEVENTS, e.g. 10000x100000x1000000 (k/M suffixes allowed)"

    def __call__(self, text: str):
        from benchmarks.scale import Size

        try:
            return Size.parse(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a shop size") from None


@bench_app.command("scale")
def bench_scale(
    sizes: Annotated[str, typer.Option(help="comma-separated ITEMSxUSERSxEVENTS (k/M suffixes allowed)")] =
    "10000x100000x1000000,100000x1000000x10000000",
    work: Annotated[Path, typer.Option(help="where the shops, bundles and batch outputs go (kept)")] =
    Path("results/scale-work"),
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="output directory")] = Path("results/scale"),
    stages: Annotated[str, typer.Option(help="comma-separated: import, build, ranker, batch, serve")] =
    "import,build,ranker,batch,serve",
    threads: Annotated[int, typer.Option(min=1, help="threads for every stage (OMP/BLAS/FAISS/LightGBM)")] = 1,
    encoder: Annotated[Literal["torch", "onnx", "onnx-int8"], typer.Option(
        help="item encoder for build: torch, onnx or onnx-int8")] = "onnx-int8",
    eval_users: Annotated[int, typer.Option(min=1, help="users build evaluates (seeded sample)")] = 2000,
    requests: Annotated[int, typer.Option(min=1, help="serve: sequential known-user requests")] = 200,
    model: Annotated[Optional[str], typer.Option(help="BERT for build (default: the default MiniLM)")] = None,
    reuse: Annotated[bool, typer.Option(help="skip import/build/ranker whose outputs are already in --work")] = False,
    seed: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """The whole path (import, build, re-ranker, batch scoring, serving) at growing sizes: wall s, CPU s, peak
    RSS per stage and the fitted growth exponent (log-log chart)."""
    from benchmarks.scale import STAGES, run
    from jobs.output import err_console, step

    parsed = comma_list(sizes, "--sizes", ShopSize())
    chosen = comma_list(stages, "--stages", OneOf(STAGES, "stage"))
    try:
        paths = run(out, parsed, work, chosen, threads=threads, encoder=encoder, eval_users=eval_users,
                    requests=requests, model=model, seed=seed, reuse=reuse, previous=out / "scale.json",
                    command=invocation(), say=step)  # a line per stage: the stages' own output goes to their logs
    except (RuntimeError, ValueError) as exc:  # a stage failed (its log is named) or an unknown stage
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    typer.echo(paths["md"].read_text())
