"""The live catalogue's edits: how long an upsert, a deactivation and a delete take, alone and while a compaction
runs, and what one upsert costs the next history encode of a trained user tower.

On a synthetic catalogue (seeded random vectors; ids, titles, categories, prices; no re-ranker arrays) of `items`
rows with a FAISS index of each kind, a share `removed` of the rows tombstoned first:

1. edits   `edits` rounds of one upsert (a new item and a replaced one in turn), one deactivation and one
           delete, each timed alone (a few untimed rounds first): median / p99 / max per kind of edit;
2. compaction  the compaction's wall time with nothing else going on, then, after the catalogue is brought back
           to the same shape (as many new items upserted as the compaction reclaimed, the same share deleted
           again), a second compaction on a background thread while the caller issues an edit every `interval_ms`
           (upsert, deactivation, delete in turn) until it finishes: each edit's latency (n, median, max, the
           first) and the compaction's wall time beside them; the index must then hold every catalogue row;
3. tower   a trained user tower (`sequence` / `fusion` over a tiny random BERT: 2 layers, hidden 32, built here)
           over a catalogue of each of `tower_items` sizes: `rounds` rounds of one upsert (a precomputed vector:
           the item tower is not timed; a new item and a replaced one in turn) and one history encode (10 items,
           the upserted one last): median / p99 / max of each and of the pair.

Only the public Catalogue / VectorIndex / TrainedUserTower API is used, so the module also measures older
checkouts. Writes catalogue.json, catalogue.md and catalogue.png (benchmarks/common.py).

    recsys bench catalogue --kinds hnsw:50000,ivf_pq:200000,flat:500000 --dim 64 --tower-items 5000,100000
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.common import Column, environment, write_report
from benchmarks.tiny_bert import build_tiny_bert
from recsys.text_format import counted

KINDS = ("flat", "hnsw", "ivf_flat", "ivf_pq")
PARTS = ("edits", "compaction", "tower")
MODES = ("sequence", "fusion")
OPS = ("upsert", "deactivate", "delete")
WORDS = ("black", "camera", "bag", "running", "shoe", "blue", "socks", "lens", "cap", "tripod", "rain", "jacket",
         "hat", "red", "wool", "lamp", "desk", "cable", "mug", "green")
HISTORY = 10
COLUMNS = [Column("measure"), Column("index"), Column("items", fmt=","), Column("dim"), Column("op"),
           Column("n", fmt=","), Column("median_ms", "median ms", ".2f"), Column("p99_ms", "p99 ms", ".2f"),
           Column("max_ms", "max ms", ".1f"), Column("compaction_s", "compaction s", ".2f"), Column("note")]
MEASURES = {"edits": "edits, no compaction running", "compaction": "edits while a compaction runs",
            "tower": "one upsert + one history encode (trained user tower)"}


def index_config(kind: str):
    """The index of each kind as the project builds it (ivf_pq: what `--index auto` picks above 50k items)."""
    from recsys.config import IndexConfig

    if kind == "ivf_pq":
        return IndexConfig(kind="ivf_pq", refine="fp16", nprobe=48, refine_factor=8)
    return IndexConfig(kind=kind)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


def _ms(seconds: Sequence[float]) -> dict:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if not len(ms):
        return {"n": 0, "median_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": len(ms), "median_ms": round(float(np.median(ms)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "max_ms": round(float(ms.max()), 3)}


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def synthetic_items(n: int, rng: np.random.Generator, prefix: str = "i") -> pl.DataFrame:
    titles = [" ".join(words) for words in rng.choice(WORDS, (n, 3))]
    return pl.DataFrame({"item_id": [f"{prefix}{j}" for j in range(n)], "title": titles,
                         "text": [f"{t} text" for t in titles],
                         "category": [f"c{c}" for c in rng.integers(0, 50, n)],
                         "price": np.round(rng.uniform(1, 200, n), 2)})


def _vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class _Editor:
    """Issues the edits of one catalogue: new ids for upserts, distinct live ids for the rest."""

    def __init__(self, catalogue, rng: np.random.Generator) -> None:
        self.catalogue, self.rng, self.step = catalogue, rng, 0
        self.frame = synthetic_items(1, rng).drop("item_id")
        self._refill()

    def _refill(self) -> None:
        live = self.catalogue.state.live_ids
        self.pool = [live[j] for j in self.rng.permutation(len(live))]

    def _live(self) -> str:
        position = self.catalogue.state.position
        while True:
            if not self.pool:
                self._refill()
            item = self.pool.pop()
            if item in position:
                return item

    def edit(self, op: str) -> float:
        """One edit of kind `op`; returns its seconds."""
        catalogue, self.step = self.catalogue, self.step + 1
        if op == "upsert":  # a new item and a replaced one in turn
            item = f"new{self.step}" if self.step % 2 else self._live()
            record = {"item_id": item, **self.frame.row(0, named=True)}
            vector = _vectors(self.rng, 1, catalogue.dim)
            return _timed(lambda: catalogue.upsert([record], vector))
        item = self._live()
        if op == "deactivate":
            return _timed(lambda: catalogue.set_active([item], False))
        return _timed(lambda: catalogue.remove([item]))


def _tombstone(catalogue, share: float, rng: np.random.Generator) -> int:
    live = catalogue.state.live_ids
    chosen = rng.choice(len(live), int(round(share * len(live))), replace=False)
    return catalogue.remove([live[j] for j in sorted(chosen)]) if len(chosen) else 0


def edits_during_compaction(catalogue, editor: _Editor, interval: float, threads: int) -> dict:
    """Compact on a background thread (FAISS on `threads` OpenMP threads there too: the setting is per thread, and a
    new thread starts at the OpenMP default, every core); an edit every `interval` seconds from this one until it
    finishes."""
    done: dict = {}

    def compact() -> None:
        import faiss

        faiss.omp_set_num_threads(threads)
        started = time.perf_counter()
        try:
            done["reclaimed"] = catalogue.compact()
        except BaseException as error:  # reported by the caller
            done["error"] = error
        done["seconds"] = time.perf_counter() - started
        done["ended"] = time.perf_counter()

    thread = threading.Thread(target=compact, name="compaction")
    began = time.perf_counter()
    thread.start()
    edits: list[tuple[str, float, float]] = []  # (op, started after the compaction began, seconds)
    while thread.is_alive() or not edits:
        time.sleep(interval)
        op = OPS[len(edits) % len(OPS)]
        started = time.perf_counter()
        edits.append((op, started - began, editor.edit(op)))
    thread.join()
    if "error" in done:
        raise done["error"]
    end = done["ended"] - began
    return {"seconds": done["seconds"], "reclaimed": done["reclaimed"],
            "edits": [(op, at, s) for op, at, s in edits if at < end], "after": sum(at >= end for _, at, _ in edits)}


def catalogue_rows(kind: str, n: int, dim: int, parts: Sequence[str], edits: int, interval: float, removed: float,
                   seed: int, threads: int, log: Callable[[str], None]) -> tuple[list[dict], dict]:
    """Parts 1 and 2 for one index kind; (rows, meta)."""
    from recsys.catalogue import Catalogue
    from recsys.retrieval import VectorIndex

    rng = np.random.default_rng(seed)
    catalogue = Catalogue(synthetic_items(n, rng), _vectors(rng, n, dim))
    started = time.perf_counter()
    index = VectorIndex.over(catalogue, index_config(kind))
    meta: dict = {"build_s": round(time.perf_counter() - started, 2), "load_before": load()}
    tombstoned = _tombstone(catalogue, removed, rng)
    log(f"{kind} {n:,}×{dim}: index built in {meta['build_s']:.1f} s; {tombstoned:,} rows deleted")
    editor = _Editor(catalogue, rng)
    base = {"index": kind, "items": n, "dim": dim}
    rows = []
    if "edits" in parts:
        for _ in range(3):  # untimed
            for op in OPS:
                editor.edit(op)
        seconds: dict[str, list[float]] = {op: [] for op in OPS}
        for _ in range(edits):
            for op in OPS:
                seconds[op].append(editor.edit(op))
        for op in OPS:
            rows.append({"measure": MEASURES["edits"], **base, "op": op, **_ms(seconds[op])})
            log(f"  {op:10s} no compaction: median {rows[-1]['median_ms']:.2f} ms, max {rows[-1]['max_ms']:.1f} ms")
    if "compaction" in parts:
        alone = _timed(catalogue.compact)
        # back to the same shape: as many rows as were reclaimed, upserted as new items, then the same share deleted
        missing = n - len(catalogue.state)
        if missing > 0:
            frame = synthetic_items(missing, rng, prefix="refill")
            catalogue.upsert(frame.to_dicts(), _vectors(rng, missing, dim))
        _tombstone(catalogue, removed, rng)
        log(f"  compaction alone {alone:.2f} s; again while editing every {interval * 1e3:.0f} ms …")
        during = edits_during_compaction(catalogue, editor, interval, threads)
        state = catalogue.state
        meta.update({"compaction_alone_s": round(alone, 3), "compaction_s": round(during["seconds"], 3),
                     "reclaimed": during["reclaimed"], "edits_after_compaction": during["after"],
                     "index_rows_match": bool(index.index.ntotal == len(state)),
                     "edit_timeline": [{"op": op, "at_s": round(at, 4), "ms": round(s * 1e3, 3)}
                                       for op, at, s in during["edits"]]})
        timeline = during["edits"]
        note = (f"compaction alone {alone:.2f} s; {during['reclaimed']:,} rows reclaimed"
                + (f"; first edit {timeline[0][2] * 1e3:,.1f} ms" if timeline else "; no edit began during it"))
        rows.append({"measure": MEASURES["compaction"], **base, "op": "all", **_ms([s for _, _, s in timeline]),
                     "compaction_s": round(during["seconds"], 3), "note": note})
        total = rows[-1]
        for op in OPS if timeline else ():
            rows.append({"measure": MEASURES["compaction"], **base, "op": op,
                         **_ms([s for o, _, s in timeline if o == op])})
        log(f"  compaction {during['seconds']:.2f} s; {len(timeline)} edits during it: median "
            f"{total['median_ms'] or 0:.2f} ms, max {total['max_ms'] or 0:.1f} ms")
        if not meta["index_rows_match"]:
            raise RuntimeError(f"{kind}: the index holds {index.index.ntotal} rows, the catalogue {len(state)}")
    meta["load_after"] = load()
    return rows, meta


def tower_rows(mode: str, n: int, rounds: int, bert_dir: Path, device: str, seed: int) -> tuple[list[dict], dict]:
    """Part 3 for one tower mode and catalogue size; (rows, meta)."""
    import torch

    from encoders.backbone import load_backbone
    from encoders.lora import attach_adapters
    from encoders.serving import TrainedUserTower
    from encoders.towers import AdaptedBert, TwoTowerModel
    from recsys.catalogue import Catalogue
    from recsys.config import LoraConfig, TowerConfig, TrainConfig

    rng = np.random.default_rng(seed)
    backbone, tokenizer = load_backbone(str(bert_dir))
    bert = AdaptedBert(attach_adapters(backbone, LoraConfig(top_layers=1)), 1).eval()
    dim = 32
    config = TowerConfig(user_tower=mode, dim=dim, seq_layers=1, item_max_length=24, history_max_length=64)
    catalogue = Catalogue(synthetic_items(n, rng), _vectors(rng, n, dim))
    torch.manual_seed(seed)
    tower = TrainedUserTower(TwoTowerModel(bert, n, config).eval(), TrainConfig(tower=config), catalogue, tokenizer,
                             device=torch.device(device))
    history = [f"i{j}" for j in rng.choice(n, HISTORY, replace=False)]
    tower.encode_histories([history])  # warm: the first tables, the first forward
    frame = synthetic_items(1, rng).drop("item_id").row(0, named=True)
    upserts, encodes, totals = [], [], []
    for r in range(rounds):
        record = {"item_id": f"new{r}" if r % 2 else f"i{r}", **frame}  # a new item and a replaced one in turn
        vector = _vectors(rng, 1, dim)
        upserts.append(_timed(lambda: catalogue.upsert([record], vector)))
        encodes.append(_timed(lambda: tower.encode_histories([history[1:] + [record["item_id"]]])))
        totals.append(upserts[-1] + encodes[-1])
    base = {"measure": MEASURES["tower"], "index": f"{mode} tower", "items": n, "dim": dim}
    rows = [{**base, "op": "upsert + encode", **_ms(totals),
             "note": f"{device}; tiny random BERT (2 layers, hidden 32); history of {HISTORY}"},
            {**base, "op": "upsert", **_ms(upserts)}, {**base, "op": "encode", **_ms(encodes)}]
    return rows, {"device": device, "rounds": rounds}


def run(out_dir: str | Path, kinds: Sequence[tuple[str, int]], dim: int = 64, *, parts: Sequence[str] = PARTS,
        edits: int = 100, interval_ms: float = 50.0, removed: float = 0.2, tower_items: Sequence[int] = (5_000,),
        tower_modes: Sequence[str] = MODES, rounds: int = 40, device: str = "cpu", threads: int = 1,
        seed: int = 0, bert_dir: str | Path | None = None, command: str = "",
        log: Callable[[str], None] = print) -> dict[str, Path]:
    """Parts `parts` for each (index kind, items) of `kinds` and each tower mode × size; writes the report."""
    with _threads(threads):
        return _run(out_dir, kinds, dim, parts, edits, interval_ms, removed, tower_items, tower_modes, rounds, device,
                    threads, seed, bert_dir, command, log)


@contextmanager
def _threads(threads: int):
    """FAISS (this thread's OpenMP), torch and BLAS on `threads` threads, as they were afterwards."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    before = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(threads)
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            yield
    finally:
        faiss.omp_set_num_threads(before[0])
        torch.set_num_threads(before[1])


def _run(out_dir, kinds, dim, parts, edits, interval_ms, removed, tower_items, tower_modes, rounds, device, threads,
         seed, bert_dir, command, log) -> dict[str, Path]:
    env = environment(("numpy", "faiss-cpu", "polars", "torch", "transformers"))
    rows: list[dict] = []
    meta: dict = {"environment": env, "command": command, "load_start": load(), "dim": dim, "parts": list(parts),
                  "edits": edits, "interval_ms": interval_ms, "removed": removed, "threads": threads, "seed": seed,
                  "indexes": {}, "towers": {}}
    if {"edits", "compaction"} & set(parts):
        for kind, n in kinds:
            kind_rows, kind_meta = catalogue_rows(kind, n, dim, parts, edits, interval_ms / 1e3, removed, seed,
                                                  threads, log)
            rows += kind_rows
            meta["indexes"][f"{kind}:{n}"] = kind_meta
    if "tower" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            bert = Path(bert_dir) if bert_dir else build_tiny_bert(Path(tmp) / "tiny-bert", WORDS + ("text",), seed)
            for mode in tower_modes:
                for n in tower_items:
                    mode_rows, mode_meta = tower_rows(mode, n, rounds, bert, device, seed)
                    rows += mode_rows
                    meta["towers"][f"{mode}:{n}"] = {**mode_meta, "load": load()}
                    log(f"{mode} tower, {n:,} items: upsert + encode median {mode_rows[0]['median_ms']:.2f} ms "
                        f"(upsert {mode_rows[1]['median_ms']:.2f}, encode {mode_rows[2]['median_ms']:.2f})")
    meta["load_end"] = load()
    notes = [f"command: `{command}`" if command else "command: (library call)",
             f"load average (1, 5, 15 min) at the start {meta['load_start']}, at the end {meta['load_end']}; "
             f"{counted(threads, 'thread')} for FAISS, torch and BLAS",
             f"synthetic catalogue: seeded random unit vectors, ids, titles, categories, prices (no re-ranker arrays); "
             f"{removed:.0%} of the rows deleted before the edits; each edit is one item",
             "edits, no compaction running: rounds of upsert (new and replaced items in turn), deactivate, delete",
             f"edits while a compaction runs: one every {interval_ms:g} ms from the caller's thread (upsert, "
             "deactivate, delete in turn) while `Catalogue.compact()` runs on another; compaction s is its wall "
             "time then, the note gives it with nothing else going on (same shape of catalogue)",
             "tower: a precomputed vector upserted (the item tower is not timed), then one history encode whose last "
             "item is the upserted one"]
    return write_report(out_dir, "catalogue", rows, COLUMNS, title="Live catalogue: edit latency", meta=meta,
                        group_by="measure", notes=notes, chart=_chart)


def _size(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k" if n >= 1_000 else str(n)


def _chart(rows: Sequence[dict], path: Path) -> None:
    """Left: median (bar) and max (whisker) of each edit, alone and during a compaction (log scale); right: one
    upsert + one history encode per tower mode and size."""
    import matplotlib.pyplot as plt

    edits = [r for r in rows if r["measure"] != MEASURES["tower"] and r["op"] in OPS and r["n"]]
    towers = [r for r in rows if r["measure"] == MEASURES["tower"] and r["op"] == "upsert + encode"]
    panels = [(title, p) for title, p in (("Catalogue edits", edits), ("Upsert + history encode", towers)) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False,
                             gridspec_kw={"width_ratios": [2, 1][:len(panels)]})
    for ax, (title, panel) in zip(axes[0], panels):
        def label(r: dict) -> str:
            return f"{r['index'].replace(' tower', '')} {_size(r['items'])}\n{r['op'] if r['op'] in OPS else ''}"

        labels = list(dict.fromkeys(label(r) for r in panel))
        xs = np.arange(len(labels))
        groups = list(dict.fromkeys(r["measure"] for r in panel))
        width = 0.8 / len(groups)
        for g, measure in enumerate(groups):
            chosen = {label(r): r for r in panel if r["measure"] == measure}
            at = [x for x, name in zip(xs, labels) if name in chosen]
            medians = [chosen[name]["median_ms"] for name in labels if name in chosen]
            highs = [chosen[name]["max_ms"] - chosen[name]["median_ms"] for name in labels if name in chosen]
            ax.bar(np.asarray(at) + (g - (len(groups) - 1) / 2) * width, medians, width,
                   yerr=[np.zeros(len(highs)), highs], capsize=2,
                   label=measure if len(groups) > 1 else None)
        ax.set_xticks(xs, labels, fontsize=7)
        if panel is edits:
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_ylabel("ms (bar: median, whisker: max)")
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
