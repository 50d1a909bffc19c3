"""`recsys encode`: the catalogue's item vectors as resumable shards (local or Ray engine).

Registered on the app (jobs/app.py) when jobs/cli.py imports this module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from jobs.app import BatchSize, MaxLength, ModelOpt, PoolingOpt, app, check_ray_only
from jobs.output import console, err_console
from jobs.paths import writable_out
from recsys.text_format import counted

EngineOpt = Annotated[str, typer.Option(help="local, or ray (pip install '.\\[distributed]')")]
WorkersOpt = Annotated[Optional[int], typer.Option(min=1, help="ray: actors / local CPUs (default: all CPUs; "
                                                                "one actor per GPU when the cluster has GPUs)")]
RayAddressOpt = Annotated[Optional[str], typer.Option(help="ray: cluster address, e.g. auto or ray://head:10001 "
                                                           "(default: start a local Ray)")]


def encode_options(out: Path, engine: str, workers: int | None, threads: int, ray_address: str | None,
                   chunk_size: int = 4096, precision: str = "auto", overwrite: bool = False, progress: bool = True):
    """Checked EncodeOptions from command-line values (the encoder config is filled in by the caller)."""
    from jobs.batch.encode import EncodeOptions

    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"--engine must be local or ray, got {engine!r}")
    check_ray_only(engine, ray_address, workers)
    if precision not in ("auto", "fp32", "fp16"):
        raise typer.BadParameter(f"--precision must be auto, fp32 or fp16, got {precision!r}")
    return EncodeOptions(out=out, precision=precision, chunk_size=chunk_size, engine=engine,  # type: ignore[arg-type]
                         workers=workers, threads=threads, ray_address=ray_address, overwrite=overwrite,
                         progress=progress)


@app.command()
def encode(
    data: Annotated[Path, typer.Option(help="dataset directory (recsys import) or raw RecBole/MovieLens directory")],
    out: Annotated[Path, typer.Option("--out", file_okay=False, callback=writable_out,
                                      help="output directory (vector shards, "
                                                                     "manifest.json)")],
    model: ModelOpt = "default", max_length: MaxLength = 64, batch_size: BatchSize = 64,
    pooling: PoolingOpt = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 autocast on CUDA, fp32 on CPU), fp32, "
                                                "fp16 (CUDA)")] = "auto",
    chunk_size: Annotated[int, typer.Option(min=1, help="items per chunk = per shard")] = 4096,
    engine: EngineOpt = "local", workers: WorkersOpt = None,
    threads: Annotated[int, typer.Option(min=1, help="torch threads per worker")] = 1,
    ray_address: RayAddressOpt = None,
    overwrite: Annotated[bool, typer.Option(help="discard a previous job with different inputs in --out")] = False,
    progress: Annotated[bool, typer.Option(help="show the items/s progress bar")] = True,
) -> None:
    """Encode every item text with the (frozen) BERT item tower into OUT: shards of item_id + vector in the
    dataset's item order, and manifest.json. Resumable: rerun the same command after a crash or Ctrl-C."""
    from dataclasses import replace

    from jobs.batch.encode import run_encode
    from jobs.workflows import load_dataset
    from recsys.config import EncoderConfig

    options = replace(encode_options(out, engine, workers, threads, ray_address, chunk_size, precision, overwrite,
                                     progress),
                      encoder=EncoderConfig(model=model, max_length=max_length, batch_size=batch_size,
                                            pooling=pooling))
    dataset = load_dataset(data)
    try:
        manifest = run_encode(dataset.items, options)
    except KeyboardInterrupt:
        from jobs.batch.layout import interrupted_line
        err_console.print(f"[yellow]interrupted[/]: {escape(interrupted_line(out))}")
        raise typer.Exit(130) from None
    run = manifest["run"]
    if run["chunks_skipped"] and run["chunks_skipped"] == len(manifest["shards"]):
        console.print(f"nothing to encode: all {counted(len(manifest['shards']), 'shard')} of "
                      f"{manifest['n_items']:,} items were written by a previous run → {out}")
        return
    skipped = f", {counted(run['chunks_skipped'], 'shard')} kept from a previous run" if run["chunks_skipped"] else ""
    console.print(f"[green]encoded[/] {manifest['n_items']:,} items → {manifest['dim']}-d vectors in "
                  f"{counted(len(manifest['shards']), 'shard')}{skipped}; {run['seconds']:.1f} s "
                  f"({run['items_per_second'] or 0:,.0f} items/s, {run['engine']}) → {out}")
