"""`recsys bench …`: benchmark commands; each writes JSON + Markdown + PNG under --out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from jobs.options import OneOf, WholeNumber, comma_list
from jobs.paths import writable_out

bench_app = typer.Typer(help="Benchmarks: JSON + Markdown table + PNG chart per run.", no_args_is_help=True)


@bench_app.command("ann")
def ann(
    sizes: str = typer.Option("10000,100000,1000000", help="comma-separated synthetic catalogue sizes"),
    out: Path = typer.Option(Path("results/ann"), file_okay=False, callback=writable_out,
                             help="directory for ann.json / ann.md / ann.png"),
    queries: int = typer.Option(1000, min=1, help="queries per dataset (recall and batched QPS)"),
    threads: int = typer.Option(0, min=0, help="faiss threads for builds and batches (0: all cores)"),
    single_threads: int = typer.Option(1, min=1, help="faiss threads for the one-query-at-a-time loop"),
    single_queries: int = typer.Option(300, min=1, help="cap on timed single queries"),
    max_seconds: float = typer.Option(20.0, min=1.0, help="time cap per single-query loop"),
    seed: int = typer.Option(0, min=0),
    kinds: str = typer.Option("flat,hnsw,ivf_flat,ivf_pq", help="index kinds to benchmark"),
    embeddings: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                              help="also benchmark these item vectors (.npy float32 [n, d])"),
    opq: bool = typer.Option(False, help="add an OPQ + IVF-PQ variant (catalogues up to 100k; slow to train)"),
) -> None:
    """FAISS index types: build time, size, recall@10/@100 vs exact, single and batched QPS."""
    from benchmarks.ann import KINDS, K, run
    from recsys.config import IndexConfig

    chosen = comma_list(kinds, "--kinds", OneOf(KINDS))
    catalogues = comma_list(sizes, "--sizes", WholeNumber(K, "catalogue sizes", f" for recall@{K}"))
    pq_items = 2 ** IndexConfig(kind="ivf_pq").pq_nbits
    if "ivf_pq" in chosen and min(catalogues) < pq_items:  # its codebooks train on the catalogue itself
        raise typer.BadParameter(f"an ivf_pq index needs at least {pq_items} items, got {sizes!r}: give larger "
                                 "sizes or leave ivf_pq out of --kinds", param_hint="--sizes")
    if embeddings is not None:
        from benchmarks.ann import read_embeddings
        read_embeddings(embeddings)  # a file that is no [n, d] array: said before the synthetic catalogues run
    paths = run(catalogues, out, n_queries=queries, threads=threads, single_threads=single_threads,
                single_queries=single_queries, max_seconds=max_seconds, seed=seed, kinds=chosen,
                embeddings=embeddings, opq=opq)
    for path in paths.values():
        typer.echo(path)
