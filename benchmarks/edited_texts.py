"""Edited item texts benchmark: what a catalogue feed that edits the texts of the items the towers were trained on
costs the served engine, with the edited items encoded from their text alone (a zero ID block: how every upsert of a
new text was served before stop 58), with each trained item's own ID block kept but its text part computed as a new
item's (with neighbour features, the borrowed share: stop 58, and bundles built before stop 59), and with its ID
block and its own neighbour share kept (`ItemTower.encode_items`, how bundles from stop 59 on serve them; a row only
for a bundle that keeps its items' own neighbour shares). Writes edited_texts.json, .md and .png.

    recsys bench edited-texts --bundle artifacts/Scientific-peft --data ../shared/data/amazon-scientific

Each row is the bundle loaded afresh, a seeded `share` of its catalogue given a new text (its text with `suffix`
appended, as a feed's small edit would leave it) and upserted into the catalogue as the API upserts it, then
evaluated on the test step (full ranking over the whole catalogue, history not masked; the lists as served, re-ranked
when the bundle has a re-ranker)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import Column, environment, write_report

COLUMNS = [Column("variant"), Column("edited", "items edited", ",.0f"), Column("ndcg@10", "N@10", ".4f"),
           Column("recall@10", "R@10", ".4f"), Column("ndcg@50", "N@50", ".4f"), Column("recall@50", "R@50", ".4f"),
           Column("ndcg_change", "N@10 vs as built", "+.1%"), Column("encode_seconds", "encode s", ".0f")]

AS_BUILT = "as built"
TEXT_ONLY = "edited texts, text only (before stop 58)"
ID_KEPT = "edited texts, ID block kept (stop 58)"
OWN_KEPT = "edited texts, ID block and own neighbours kept (now)"
VARIANTS = (AS_BUILT, TEXT_ONLY, ID_KEPT, OWN_KEPT)
VARIANT_NOTE = ("text only: each edited item encoded as an item added after training (a zero ID block); ID block kept: "
                "an item the towers were trained on keeps its own ID code, its text part computed as a new item's "
                "(with neighbour features, the share borrowed from its text-nearest items, as bundles built before "
                "stop 59 serve it)")


def edited_records(items, share: float, suffix: str, seed: int = 0) -> list[dict]:
    """The catalogue rows of a seeded `share` of the items (in catalogue order), each with `suffix` appended to its
    text."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(items.height, size=round(share * items.height), replace=False))
    return [{**row, "text": row["text"] + suffix} for row in items[chosen].iter_rows(named=True)]


def encoder_of(variant: str, tower) -> Callable[[list[dict]], np.ndarray]:
    """How `variant` encodes upserted records: the texts alone, or each item's text with its own ID block."""
    from recsys.data.item_text import item_texts

    if variant == TEXT_ONLY:
        return lambda records: tower.encode_texts(item_texts(records, tower.template))
    return tower.encode_items


def keeps_own_neighbours(recommender) -> bool:
    """Whether the recommender's trained towers keep their items' own neighbour shares (towers with neighbour
    features, built from stop 59 on)."""
    from encoders.loading import trained_towers

    return any(t.model.keeps_own_neighbours for t in trained_towers(recommender.user_tower))


def forget_own_neighbours(recommender) -> None:
    """Serve as stop 58 did (and bundles built before stop 59 do): trained items' new texts take a new item's text
    part."""
    from encoders.loading import trained_towers

    for tower in trained_towers(recommender.user_tower):
        if tower.model.own_neighbours is not None:
            tower.model.own_neighbours.clear()


def run(bundle: str | Path, data: str | Path, out: str | Path, share: float = 1.0, suffix: str = " (2026 edition)",
        seed: int = 0, command: str = "", log=print) -> dict[str, Path]:
    """Test N@10 / R@10 / N@50 / R@50 of the bundle as built and after the edit, for each way of encoding it."""
    from encoders.loading import load_recommender
    from jobs.workflows import built_on_other_dataset, load_dataset
    from recsys.artifacts import read_manifest, resolve_bundle
    from recsys.config import EvalConfig
    from recsys.errors import DataError
    from recsys.evaluation import evaluate
    from recsys.splits import split_dataset

    path = resolve_bundle(bundle)
    dataset = load_dataset(data)
    if built_on_other_dataset(read_manifest(path), dataset):
        raise DataError(f"the bundle {path} was built on another dataset (fingerprint differs)", source=str(data))
    split = split_dataset(dataset)
    split.require_examples(("test",), "the edited-texts benchmark")
    config = EvalConfig(ks=(10, 50), splits=("test",))
    rows: list[dict] = []
    variants, own = list(VARIANTS[:-1]), False  # the own-neighbours row joins when the bundle keeps them
    for variant in variants:
        recommender = load_recommender(path)  # afresh: an upsert changes the catalogue it serves
        if recommender.reranker is not None:
            recommender.reranker.stats.config.check_unseen("test")
        if variant == AS_BUILT and keeps_own_neighbours(recommender):
            own = True
            variants.append(OWN_KEPT)
        if variant == ID_KEPT:
            forget_own_neighbours(recommender)
        edited, seconds = [], 0.0
        if variant != AS_BUILT:
            edited = edited_records(recommender.items, share, suffix, seed)
            log(f"{variant}: encoding {len(edited):,} edited item texts …")
            start = time.perf_counter()
            vectors = encoder_of(variant, recommender.item_tower())(edited)
            seconds = time.perf_counter() - start
            recommender.catalogue.upsert(edited, vectors)
        metrics = evaluate(recommender, split.test, config, progress=True, desc=variant)
        base = rows[0]["ndcg@10"] if rows else metrics["ndcg@10"]
        rows.append({"variant": variant, "edited": len(edited), **metrics, "encode_seconds": seconds,
                     "ndcg_change": metrics["ndcg@10"] / base - 1 if base else 0.0})
        log(f"{variant:44s} N@10 {metrics['ndcg@10']:.4f} R@10 {metrics['recall@10']:.4f}")
    manifest = read_manifest(path, verify=False)
    ranked = manifest.get("ranker") is not None
    notes = [f"command: `{command}`" if command else "command: (library call)",
             f"bundle `{path}` ({manifest.get('name', path.parent.name)}; re-ranker: {'yes' if ranked else 'no'}), "
             f"dataset `{data}`, test step, full ranking over the whole catalogue, history not masked, the lists as "
             "served",
             f"edited: {share:.0%} of the catalogue (seed {seed}), each text with {suffix!r} appended, upserted as the "
             "API upserts (the statistics, keyed by item id, are kept)",
             VARIANT_NOTE + ("; ID block and own neighbours kept: its text part mixed with its own neighbours' "
                             "means at its own share, as in training" if own else
                             "; this bundle keeps no own neighbour shares (towers without neighbour features, or "
                             "built before stop 59), so there is no own-neighbours row")]
    meta = {"environment": environment(("numpy", "polars", "torch", "lightgbm", "faiss-cpu")), "bundle": str(path),
            "data": str(data), "command": command, "share": share, "suffix": suffix, "seed": seed,
            "own_neighbours": own}
    return write_report(out, "edited_texts", rows, COLUMNS, title="Edited item texts: what the served engine keeps",
                        meta=meta, notes=notes, chart=_chart)


def _chart(rows, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = [r["variant"] for r in rows]
    ax.barh(names, [r["ndcg@10"] for r in rows], color=["#888888", "#d95f02", "#7570b3", "#1b9e77"][:len(rows)])
    for n, r in enumerate(rows):
        ax.annotate(f"{r['ndcg@10']:.4f}", (r["ndcg@10"], n), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("test NDCG@10 (lists as served)")
    ax.set_title("Edited item texts")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
