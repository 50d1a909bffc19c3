"""`recsys bench catalogue`: live catalogue edits alone, during a compaction, and before a trained user tower's next
history encode (benchmarks/catalogue.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from jobs.bench import bench_app
from jobs.options import OneOf, WholeNumber, comma_list
from jobs.output import invocation
from jobs.paths import writable_out

PQ_ITEMS = 256  # an ivf_pq index trains its 8-bit codebooks on the catalogue itself


@dataclass(frozen=True)
class KindSize:
    """`kind` or `kind:items` (the catalogue size for that kind; `items` when not given)."""

    kinds: tuple[str, ...]
    items: int

    @property
    def allowed(self) -> str:
        return f"expected comma-separated index kinds ({', '.join(self.kinds)}), each optionally with :items"

    def __call__(self, text: str) -> tuple[str, int]:
        kind, _, size = text.partition(":")
        if kind not in self.kinds:
            raise ValueError(f"unknown index kind {kind!r}")
        items = WholeNumber(100, "catalogue sizes")(size) if size else self.items
        if kind == "ivf_pq" and items < PQ_ITEMS:
            raise ValueError(f"{text!r}: an ivf_pq index needs at least {PQ_ITEMS} items")
        return kind, items


@bench_app.command("catalogue")
def bench_catalogue(
    out: Annotated[Path, typer.Option(file_okay=False, callback=writable_out,
                                      help="results directory (catalogue.json, .md, .png)")]
    = Path("results/catalogue-edits"),
    kinds: Annotated[str, typer.Option(help="index kinds, each optionally with its own size: "
                                            "hnsw:50000,ivf_pq:200000,flat:500000")] = "flat,hnsw,ivf_pq",
    items: Annotated[int, typer.Option(min=100, help="catalogue size for kinds given without one")] = 50_000,
    dim: Annotated[int, typer.Option(min=8, help="vector dimension of the index catalogues")] = 64,
    parts: Annotated[str, typer.Option(help="edits (no compaction), compaction (edits during one), tower")] = (
        "edits,compaction,tower"),
    edits: Annotated[int, typer.Option(min=1, help="timed rounds of upsert + deactivate + delete (part edits)")] = 100,
    interval_ms: Annotated[float, typer.Option(min=1.0, help="one edit this often during the compaction")] = 50.0,
    removed: Annotated[float, typer.Option(min=0.01, max=0.9, help="share of rows deleted before the edits")] = 0.2,
    tower_items: Annotated[str, typer.Option(help="catalogue sizes of the tower part")] = "5000,100000",
    tower_modes: Annotated[str, typer.Option(help="user tower modes: sequence, fusion")] = "sequence,fusion",
    rounds: Annotated[int, typer.Option(min=1, help="upsert + encode rounds per tower mode and size")] = 40,
    device: Annotated[str, typer.Option(help="torch device of the tower part (cpu, cuda)")] = "cpu",
    threads: Annotated[int, typer.Option(min=1, help="threads for FAISS, torch and BLAS")] = 1,
    seed: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """Latency of catalogue edits (upsert, deactivate, delete) alone and while a compaction runs, beside the
    compaction's wall time; one upsert + one history encode through a trained user tower."""
    from benchmarks.catalogue import KINDS, MODES, PARTS, run

    chosen_parts = comma_list(parts, "--parts", OneOf(PARTS, "part"))
    chosen = comma_list(kinds, "--kinds", KindSize(KINDS, items))
    sizes = comma_list(tower_items, "--tower-items", WholeNumber(100, "catalogue sizes"))
    modes = comma_list(tower_modes, "--tower-modes", OneOf(MODES, "tower mode"))
    paths = run(out, chosen, dim, parts=chosen_parts, edits=edits, interval_ms=interval_ms, removed=removed,
                tower_items=sizes, tower_modes=modes, rounds=rounds, device=device, threads=threads, seed=seed,
                command=invocation(), log=typer.echo)
    typer.echo(Path(paths["md"]).read_text())
